"""Batches of tokenized samples for causal-LM training: dynamic padding, or packing without cross-talk.

Padded (default): rows padded on the right to the longest sample of the batch (optionally to a multiple of
`pad_to_multiple_of`); `labels` padded with -100; `attention_mask` 1 on real tokens.

Packed (`pack=True`): samples are placed first-fit into rows of at most `max_length` tokens (one row holding
the whole batch when `max_length` is None). `position_ids` restart at 0 for every sample and no
`attention_mask` is returned. How attention stays inside each sample:
- sdpa / eager / flex attention (transformers >= 4.53 with torch >= 2.6): when `attention_mask` is None and
  `position_ids` are given, `masking_utils.find_packed_sequence_indices` turns every restart of the positions
  into a new block of a block-diagonal causal mask;
- flash_attention_2: the varlen kernel takes sequence boundaries from `position_ids` (cu_seqlens), for a batch
  of one row: use `max_length=None` (or large enough) so the batch becomes one row.
Both need `attention_mask` None and no KV cache: an all-ones mask, or the DynamicCache a model builds when
`config.use_cache` is on (the default, also in training), silently turns the detection off and lets samples
attend to each other. So packed batches carry no `attention_mask` and carry `use_cache=False`, which
`model(**batch)` and the HF Trainer pass on to the model. Each sample's first label is -100 so that its first
token is never predicted from the previous sample's last token; a row's tail padding is a block of its own.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

IGNORE_INDEX = -100


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Row indices in batches of similar length, longest first: at most `batch_size` rows, and at most
    `token_budget` positions (rows x the batch's longest) so that long rows come in smaller batches. Longest
    first, a batch too large for memory fails at once, and every later (smaller) tensor fits where a freed one
    was: shortest first, the allocator's heap grew with every wider batch (3.5 GB of RSS after 16k comet-scored
    rows, against 1.4 GB)."""
    import numpy as np

    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    for i in order.tolist():
        if batches and len(batches[-1]) < batch_size and (
                token_budget is None or max(lengths[batches[-1][0]], 1) * (len(batches[-1]) + 1) <= token_budget):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class SFTCollator:
    def __init__(self, pad_token_id: int, pack: bool = False, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set the tokenizer's pad token (e.g. to its EOS) first")
        self.pad_token_id, self.pack, self.max_length = int(pad_token_id), pack, max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        samples = [(list(f["input_ids"]), list(f["labels"])) for f in features]
        for input_ids, labels in samples:
            if len(input_ids) != len(labels):
                raise ValueError(f"input_ids and labels differ in length ({len(input_ids)} vs {len(labels)})")
        if self.max_length is not None:
            samples = [(ids[:self.max_length], labels[:self.max_length]) for ids, labels in samples]
        return self._packed(samples) if self.pack else self._padded(samples)

    def _width(self, longest: int) -> int:
        m = self.pad_to_multiple_of
        return -(-longest // m) * m if m else longest

    def _padded(self, samples: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
        import torch

        width = self._width(max((len(ids) for ids, _ in samples), default=0))
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(samples):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[row, :len(lab)] = torch.tensor(lab, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    def pack_rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """First-fit: sample indices per row, in batch order within a row."""
        rows: list[list[int]] = []
        room: list[int] = []
        for index, length in enumerate(lengths):
            for r, free in enumerate(room):
                if self.max_length is None or length <= free:
                    rows[r].append(index)
                    room[r] -= length
                    break
            else:
                rows.append([index])
                room.append((self.max_length or 0) - length)
        return rows

    def _packed(self, samples: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
        import torch

        rows = self.pack_rows([len(ids) for ids, _ in samples])
        width = self._width(max((sum(len(samples[i][0]) for i in row) for row in rows), default=0))
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            pos = 0
            for i in row:
                ids, lab = samples[i]
                n = len(ids)
                input_ids[r, pos:pos + n] = torch.tensor(ids, dtype=torch.long)
                labels[r, pos:pos + n] = torch.tensor(lab, dtype=torch.long)
                if n:
                    labels[r, pos] = IGNORE_INDEX
                position_ids[r, pos:pos + n] = torch.arange(n)
                pos += n
            position_ids[r, pos:] = torch.arange(width - pos)  # padding: a block of its own
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "use_cache": False}
