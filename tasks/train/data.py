"""Training rows from the format stage's tokenized table: checks, truncation, a seeded eval split.

Everything here runs before a model is loaded, so bad input fails in seconds, not after a long load.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tasks.errors import BadInputError

IGNORE_INDEX = -100
PROBE_CONVERSATION = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]


@dataclass
class Rows:
    ids: list[str]
    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


@dataclass
class Prepared:
    train: Rows
    eval: Rows
    quarantine: pa.Table
    stats: dict[str, Any] = field(default_factory=dict)


class TokenDataset:
    """A map-style dataset of {"input_ids", "labels"} lists, what the collator takes."""

    def __init__(self, rows: Rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.rows.input_ids[i], "labels": self.rows.labels[i]}


def check_template(template: Any, tokenizer: Any, name: str) -> None:
    """The tokenizer must reproduce the template's text exactly (no unknown pieces, no lost markers)."""
    if tokenizer.eos_token is None:
        raise BadInputError("the tokenizer has no EOS token, so a trained model could not learn where an answer "
                            "ends", field="eos_token")
    text = template.render(None, PROBE_CONVERSATION, bos_token=tokenizer.bos_token or "",
                           eos_token=tokenizer.eos_token)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    unk = tokenizer.unk_token_id
    if back != text or (unk is not None and unk in ids):
        raise BadInputError(f"template {name!r} cannot be expressed by this tokenizer: {text!r} comes back as "
                            f"{back!r}", field="format.template")


def effective_limit(configured: int | None, model_limit: int | None, virtual_tokens: int) -> int | None:
    """The longest row we may train on; a configured length beyond the model's limit is an error."""
    usable = model_limit - virtual_tokens if model_limit is not None else None
    if configured is not None and usable is not None and configured > usable:
        raise BadInputError(f"max_length {configured} is beyond the model's limit of {model_limit} positions"
                            + (f" ({virtual_tokens} of them taken by virtual tokens)" if virtual_tokens else ""),
                            field="train.max_length")
    return configured if configured is not None else usable


def split_key(row_id: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).hexdigest()


def require_tokenized(table: pa.Table, source: str, empty: str) -> None:
    """The format stage's columns are there, and some rows (else `empty` is the error)."""
    for column in ("id", "input_ids", "labels"):
        if column not in table.column_names:
            raise BadInputError("the tokenized table has no such column", file=source, field=column)
    if table.num_rows == 0:
        raise BadInputError(empty, file=source)


def prepare(table: pa.Table, *, source: str, vocab_size: int, limit: int | None, truncate: bool,
            eval_share: float, eval_max_rows: int, seed: int) -> Prepared:
    """Check and split the tokenized rows. `limit` truncates when `truncate`, else a longer row is an error."""
    require_tokenized(table, source, "the training set is empty: nothing was selected or formatted")
    ids = [str(x) for x in table.column("id").to_pylist()]
    inputs = table.column("input_ids").to_pylist()
    labels = table.column("labels").to_pylist()
    kept = Rows([], [], [])
    dropped: list[dict[str, str]] = []
    truncated = 0
    for row, (rid, x, y) in enumerate(zip(ids, inputs, labels)):
        if len(x) != len(y):
            raise BadInputError(f"input_ids has {len(x)} tokens but labels {len(y)}", file=source, row=row,
                                field="labels")
        if x and max(x) >= vocab_size:
            raise BadInputError(f"token id {max(x)} is beyond the model's vocabulary of {vocab_size}: the rows were "
                                "tokenized with another tokenizer", file=source, row=row, field="input_ids")
        if limit is not None and len(x) > limit:
            if not truncate:
                raise BadInputError(f"{len(x)} tokens, beyond the model's limit of {limit}; set format.max_length "
                                    "or train.max_length", file=source, row=row, field="input_ids")
            x, y = x[:limit], y[:limit]
            truncated += 1
        if all(t == IGNORE_INDEX for t in y):
            dropped.append({"id": rid, "reason": "no supervised (assistant) tokens left"
                            + (f" within {limit} tokens" if limit is not None else "")})
            continue
        kept.ids.append(rid)
        kept.input_ids.append(x)
        kept.labels.append(y)
    if not kept.ids:
        raise BadInputError(f"the training set is empty: all {len(ids)} rows have no supervised tokens",
                            file=source, field="labels")
    train, held = split(kept, eval_share, eval_max_rows, seed)
    stats = {"rows_in": len(ids), "train_rows": len(train), "eval_rows": len(held), "quarantined": len(dropped),
             "truncated": truncated, "train_tokens": train.tokens(),
             "supervised_tokens": sum(sum(t != IGNORE_INDEX for t in y) for y in train.labels)}
    quarantine = pa.Table.from_pylist(dropped, schema=pa.schema([("id", pa.string()), ("reason", pa.string())]))
    return Prepared(train, held, quarantine, stats)


def split(rows: Rows, share: float, max_rows: int, seed: int) -> tuple[Rows, Rows]:
    """A seeded, order-independent split: the eval rows are those whose hashed id sorts first."""
    n_eval = min(max_rows, round(len(rows) * share)) if share > 0 and len(rows) >= 2 else 0
    n_eval = min(max(n_eval, 1 if share > 0 and len(rows) >= 2 else 0), len(rows) - 1)
    order = sorted(range(len(rows)), key=lambda i: split_key(rows.ids[i], seed))
    held = set(order[:n_eval])

    def pick(inside: bool) -> Rows:
        chosen = [i for i in range(len(rows)) if (i in held) == inside]
        return Rows([rows.ids[i] for i in chosen], [rows.input_ids[i] for i in chosen],
                    [rows.labels[i] for i in chosen])

    return pick(False), pick(True)
