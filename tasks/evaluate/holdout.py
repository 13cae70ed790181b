"""Held-out evaluation rows: split off a pool before any selector runs, and kept apart from it.

The held-out rows are those whose seeded hash of the id sorts first. A row's place in that order depends on
its own id alone, so adding rows to a pool changes the held-out set only at its edge (the k-th place moves),
and the same pool gives the same rows on every machine. An id that occurs more than once is one row here:
all its copies are held out or none.

An evaluation set must not overlap the pool a selector picks from, by id or by the text of its user turns
(normalized as ids are: `storage.schema.normalize_text`): the same prompt with another answer is still a
prompt the model was trained on. `remove_overlap` takes such rows out of a pool, into a quarantine that says
which evaluation row each one matches; `check_disjoint` is the error when something is left.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.schema import normalize_text
from tasks.errors import BadInputError

DEFAULT_MAX_ROWS = 500
DEFAULT_SHARE = 0.1
SHOWN_IDS = 5
QUARANTINE_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
IN_EVAL_SET, SAME_USER_TURNS = "in_eval_set", "same_user_turns_as_eval_row"


def holdout_size(pool_rows: int, rows: int | None = None) -> int:
    """`rows`, or min(500, 10% of the pool) and at least one; something must be left to select from."""
    if pool_rows < 2:
        raise BadInputError(f"a pool of {pool_rows} distinct row(s) cannot be split into held-out and training "
                            "rows", field="eval.holdout_rows")
    if rows is None:
        return max(1, min(DEFAULT_MAX_ROWS, int(pool_rows * DEFAULT_SHARE)))
    if not 1 <= rows < pool_rows:
        raise BadInputError(f"{rows} held-out rows from a pool of {pool_rows} distinct rows: must be between 1 "
                            f"and {pool_rows - 1}", field="eval.holdout_rows")
    return rows


def holdout_key(row_id: str, seed: int) -> bytes:
    # salted apart from the train stage's eval split (tasks.train.data.split_key), which hashes "seed:id"
    return hashlib.blake2b(f"holdout:{seed}:{row_id}".encode(), digest_size=8).digest()


def holdout_ids(ids: Sequence[str], rows: int | None = None, seed: int = 0) -> list[str]:
    """The held-out ids of a pool, in hash order."""
    distinct = set(ids)
    k = holdout_size(len(distinct), rows)
    return sorted(distinct, key=lambda i: holdout_key(i, seed))[:k]


def split_holdout(pool: pa.Table, rows: int | None = None, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(the pool without its held-out rows, the held-out rows), each in pool order."""
    held = pc.is_in(pool.column("id"), value_set=pa.array(holdout_ids(pool.column("id").to_pylist(), rows, seed)))
    return pool.filter(pc.invert(held)), pool.filter(held)


def user_turns_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """The normalized user turns of a conversation, joined: what two rows share when they ask the same."""
    return "\x1f".join(normalize_text(m["content"] or "") for m in messages or [] if m["role"] == "user")


def _rows(table: pa.Table) -> list[tuple[str, str]]:
    return [(str(r["id"]), user_turns_key(r["messages"])) for r in table.select(["id", "messages"]).to_pylist()]


def _shown(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


def check_no_shared_ids(eval_set: pa.Table, pool: pa.Table, *, eval_name: str, pool_name: str) -> None:
    """A BadInputError naming the evaluation rows that are rows of the pool (the same id)."""
    pool_ids = set(pool.column("id").to_pylist())
    ids = eval_set.column("id").to_pylist()
    same_id = [(n, i) for n, i in enumerate(ids) if i in pool_ids]
    if same_id:
        raise BadInputError(f"{len(same_id)} of its {len(ids)} rows are also in the pool {pool_name} (ids "
                            f"{_shown([i for _, i in same_id])}): an evaluation set must never be selected from",
                            file=eval_name, row=same_id[0][0], field="id")


def check_disjoint(eval_set: pa.Table, pool: pa.Table, *, eval_name: str, pool_name: str) -> None:
    """A BadInputError naming the evaluation rows found in the pool, by id or by their user turns."""
    check_no_shared_ids(eval_set, pool, eval_name=eval_name, pool_name=pool_name)
    pool_rows = _rows(pool)
    pool_texts = {text: i for i, text in reversed(pool_rows)}  # the first pool row with each text
    rows = _rows(eval_set)
    same_text = [(n, i, pool_texts[text]) for n, (i, text) in enumerate(rows) if text and text in pool_texts]
    if same_text:
        pairs = [f"{i} = pool {p}" for _, i, p in same_text]
        raise BadInputError(f"{len(same_text)} of its {len(rows)} rows have the same user turns as rows of the "
                            f"pool {pool_name} ({_shown(pairs)}): remove them from the pool first",
                            file=eval_name, row=same_text[0][0], field="messages")


def remove_overlap(pool: pa.Table, eval_sets: Mapping[str, pa.Table]) -> tuple[pa.Table, pa.Table]:
    """(the pool without rows that share an id or the user turns with an evaluation row, their quarantine)."""
    ids: dict[str, str] = {}
    texts: dict[str, str] = {}
    for name, table in eval_sets.items():
        for row_id, text in _rows(table):
            ids.setdefault(row_id, name)
            if text:  # a row without user turns asks nothing another row could repeat
                texts.setdefault(text, f"{name} row {row_id}")
    keep, quarantined = [], []
    for row_id, text in _rows(pool):
        if row_id in ids:
            quarantined.append({"id": row_id, "reason": IN_EVAL_SET, "detail": f"also in {ids[row_id]}"})
        elif text in texts:
            quarantined.append({"id": row_id, "reason": SAME_USER_TURNS, "detail": f"asks what {texts[text]} asks"})
        keep.append(row_id not in ids and text not in texts)
    return pool.filter(pa.array(keep)), pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA)
