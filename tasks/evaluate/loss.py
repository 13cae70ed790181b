"""Per-row supervised cross-entropy of a causal LM on the format stage's tokenized rows.

A row is scored on the tokens the model predicts whose label is not -100. Token t is predicted from the
tokens before it, so a row's first token is never scored: the same count and the same mean as
`model(input_ids, labels=labels).loss`, which shifts the labels by one. Rows are sorted by length (little
padding) and padded on the right: with causal attention and the padding masked, a row's real tokens see
exactly what they see alone.

Precision follows tasks/device.py's rule. In fp32 the logits of every position are computed, as in that loop
(equal to it within 1e-5; projecting only the supervised positions, a matrix product of another shape, moved row
losses by up to 1.1e-5). In bf16 the model runs under autocast and the vocabulary projection is made only at
the positions that are scored (the prompt's positions need no logits): the cross-entropy is taken in fp32 from
the upcast logits and summed in fp64 either way.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.calibrate import measured
from tasks.device import Precision
from tasks.errors import BadInputError
from tasks.tokenize import IGNORE_INDEX
from tasks.train.data import require_tokenized
from tasks.train.model import prompt_learning

LOSS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("tokens", pa.int32()),  # supervised tokens scored
    pa.field("loss_sum", pa.float64()),  # nats over those tokens
    pa.field("loss_mean", pa.float64()),
])
DEFAULT_BATCH_SIZE = 16  # rows per forward pass: 16 measured fastest for SmolLM2-135M in bf16 on 2 CPU cores
SCORED_CHUNK = 2048  # positions projected to the vocabulary at once: 2048 x 49k fp32 logits are 0.4 GB


@dataclass(frozen=True)
class RowLosses:
    """One model's loss on every row of one evaluation set, in the set's order."""

    ids: list[str]
    loss_sum: np.ndarray  # float64
    tokens: np.ndarray  # int64

    @property
    def loss_mean(self) -> np.ndarray:
        return self.loss_sum / self.tokens

    @property
    def mean_loss(self) -> float:
        """Token-weighted: all nats over all scored tokens (see tasks.evaluate.stats)."""
        return float(self.loss_sum.sum() / self.tokens.sum())

    def __len__(self) -> int:
        return len(self.ids)

    def to_table(self) -> pa.Table:
        return pa.table({"id": self.ids, "tokens": self.tokens.astype(np.int32), "loss_sum": self.loss_sum,
                         "loss_mean": self.loss_mean}, schema=LOSS_SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table) -> RowLosses:
        return cls([str(i) for i in table.column("id").to_pylist()],
                   np.asarray(table.column("loss_sum").to_numpy(), np.float64),
                   np.asarray(table.column("tokens").to_numpy(), np.int64))


@dataclass(frozen=True)
class TokenRows:
    """Checked rows: token ids, labels and the number of tokens scored per row."""

    ids: list[str]
    input_ids: list[np.ndarray]
    labels: list[np.ndarray]
    scored: np.ndarray  # int64: supervised tokens after each row's first position

    def __len__(self) -> int:
        return len(self.ids)


def model_limits(base: str | Path, adapter: str | Path | None = None) -> tuple[int, int | None]:
    """(vocabulary size, usable positions) from the config files alone, so rows are checked before a load."""
    from transformers import AutoConfig

    from tasks.train.model import position_limit

    config = AutoConfig.from_pretrained(base)
    limit = position_limit(config)
    if adapter is not None and limit is not None:  # prefix methods take positions for their virtual tokens
        adapter_config = json.loads((Path(adapter) / "adapter_config.json").read_text())
        limit -= int(adapter_config.get("num_virtual_tokens") or 0)
    return int(config.vocab_size), limit


def check_rows(table: pa.Table, *, source: str, vocab_size: int, max_positions: int | None) -> TokenRows:
    """The tokenized table's rows, or a BadInputError naming the first row and field that cannot be scored."""
    require_tokenized(table, source, "the evaluation set is empty")
    ids = [str(i) for i in table.column("id").to_pylist()]
    columns = {name: table.column(name).combine_chunks() for name in ("input_ids", "labels")}
    for name, column in columns.items():
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise BadInputError("no token list", file=source, row=first, field=name)
    lengths = pc.list_value_length(columns["input_ids"]).to_numpy().astype(np.int64)
    label_lengths = pc.list_value_length(columns["labels"]).to_numpy().astype(np.int64)
    if (bad := np.flatnonzero(lengths != label_lengths)).size:
        row = int(bad[0])
        raise BadInputError(f"input_ids has {lengths[row]} tokens but labels {label_lengths[row]}", file=source,
                            row=row, field="labels")
    if max_positions is not None and (bad := np.flatnonzero(lengths > max_positions)).size:
        row = int(bad[0])
        raise BadInputError(f"{lengths[row]} tokens, beyond the model's {max_positions} positions: format the "
                            "evaluation set with a smaller format.max_length", file=source, row=row,
                            field="input_ids")
    tokens = np.asarray(pc.list_flatten(columns["input_ids"]).to_numpy(), np.int64)
    labels = np.asarray(pc.list_flatten(columns["labels"]).to_numpy(), np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    row_of = np.repeat(np.arange(len(ids)), lengths)
    supervised = labels != IGNORE_INDEX
    for name, values, bad_mask in (("input_ids", tokens, (tokens < 0) | (tokens >= vocab_size)),
                                   ("labels", labels, supervised & ((labels < 0) | (labels >= vocab_size)))):
        if (bad := np.flatnonzero(bad_mask)).size:
            raise BadInputError(f"token id {values[bad[0]]} is outside the model's vocabulary of {vocab_size}: "
                                "the rows were tokenized for another model", file=source, row=int(row_of[bad[0]]),
                                field=name)
    supervised[starts[:-1][lengths > 0]] = False  # a row's first token is never predicted
    scored = np.bincount(row_of[supervised], minlength=len(ids)).astype(np.int64)
    if (bad := np.flatnonzero(scored == 0)).size:
        raise BadInputError("no supervised token to score (the format stage quarantines such rows)", file=source,
                            row=int(bad[0]), field="labels")
    cuts = starts[1:-1]
    return TokenRows(ids, np.split(tokens, cuts), np.split(labels, cuts), scored)


def eval_precision(setting: str = "auto", field: str = "evaluate.precision") -> Precision:
    """The device and precision of a loss pass outside a stage (benchmarks; tasks/device.py's rule)."""
    from tasks.device import pick_device, resolve_precision

    return resolve_precision(setting, pick_device(), field=field, measure=measured("lm-inference"))


def load_for_eval(base: str | Path, adapter: str | Path | None = None, precision: Precision | None = None) -> Any:
    """The base model (with the peft adapter on top when given) on the device `precision` names (by default
    the GPU when there is one, else the CPU, exact fp32), in the precision's load dtype (nothing trains here)."""
    from transformers import AutoModelForCausalLM

    precision = precision or eval_precision("fp32")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=precision.load_dtype).to(precision.device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        model.to(precision.load_dtype)  # the adapter's weights too: nothing trains here
    return model.eval()


def row_losses(model: Any, rows: TokenRows, *, batch_size: int = DEFAULT_BATCH_SIZE,
               advance: Callable[[int], None] | None = None, precision: Precision | None = None,
               every_position: bool = False) -> RowLosses:
    """Summed and mean cross-entropy over each row's supervised tokens, batched by length (fp32 when no
    precision is given). The vocabulary logits are computed only at scored positions, `SCORED_CHUNK` at a time
    (the same numbers: each position's projection is its own); `every_position`: the model's whole logits, the
    path before (benchmarks), and the only one for virtual tokens."""
    import torch
    import torch.nn.functional as F

    if batch_size < 1:
        raise BadInputError(f"batch size {batch_size}: must be at least 1", field="eval.batch_size")
    device = next(model.parameters()).device
    precision = precision or Precision("fp32", device.type, "asked for")
    scored_only = not every_position and not prompt_learning(model)
    lengths = np.fromiter((len(x) for x in rows.input_ids), np.int64, len(rows))
    order = np.argsort(-lengths, kind="stable")  # longest first: a batch too large fails at once
    loss_sum = np.zeros(len(rows), np.float64)
    model.eval()
    with torch.inference_mode(), precision.autocast():
        for start in range(0, len(rows), batch_size):
            batch = order[start:start + batch_size]
            width = int(lengths[batch].max())
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            targets = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # position p predicts p+1
            for r, i in enumerate(batch):
                n = int(lengths[i])
                input_ids[r, :n] = torch.from_numpy(rows.input_ids[i])
                attention_mask[r, :n] = 1
                targets[r, :n - 1] = torch.from_numpy(rows.labels[i][1:])
            input_ids, attention_mask, targets = input_ids.to(device), attention_mask.to(device), targets.to(device)
            scored = targets != IGNORE_INDEX
            if scored_only:
                hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                             use_cache=False).last_hidden_state[scored]
                head, wanted = model.get_output_embeddings(), targets[scored]
                token_loss = torch.cat([F.cross_entropy(head(hidden[i:i + SCORED_CHUNK]).float(),
                                                        wanted[i:i + SCORED_CHUNK], reduction="none")
                                        for i in range(0, len(wanted), SCORED_CHUNK)]).double()
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                if logits.shape[1] != width:
                    raise RuntimeError(f"the model returned logits for {logits.shape[1]} positions, not {width} "
                                       "(virtual tokens prepended to the input?)")
                # the fp32 log-softmax of the scored positions; per-token losses summed per row in fp64
                token_loss = F.cross_entropy(logits[scored].float(), targets[scored], reduction="none").double()
            row_of = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(scored)[scored]
            sums = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, row_of, token_loss)
            loss_sum[batch] = sums.cpu().numpy()
            if advance:
                advance(len(batch))
    return RowLosses(list(rows.ids), loss_sum, rows.scored.copy())


def score_table(table: pa.Table, base: str | Path, adapter: str | Path | None = None, *, source: str,
                batch_size: int = DEFAULT_BATCH_SIZE, advance: Callable[[int], None] | None = None,
                precision: str = "auto") -> RowLosses:
    """Check the rows against the model's config, then load the model and score them."""
    vocab_size, max_positions = model_limits(base, adapter)
    rows = check_rows(table, source=source, vocab_size=vocab_size, max_positions=max_positions)
    resolved = eval_precision(precision)
    return row_losses(load_for_eval(base, adapter, resolved), rows, batch_size=batch_size, advance=advance,
                      precision=resolved)
