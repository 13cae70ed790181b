"""How many rows of a batch train at once (the rest of the batch follows as micro-batches of the same step).

A step keeps every layer's activations for the backward pass: on SmolLM2-135M (30 layers, hidden 576, MLP 1536,
49k vocabulary) about 3.2 MB a position in fp32, so 8 rows of ~470 tokens held 12.3 GB at once and the ablation's
process reached 16.4 GB. Micro-batches hold only their own rows' activations and give the same step (their
losses are summed over the batch's scored tokens before one optimizer step); on 2 CPU cores one row at a time
was as fast as all eight (18.3 against 21.7 s a step: smaller working sets, less padding). The default keeps
about a gigabyte of activations alive; a memory budget (resources.memory_gb, or the container's or Dask
worker's limit) lowers that, and a budget that cannot hold one row is bad input saying what to lower.
"""
from __future__ import annotations

import math
from typing import Any

from storage.memory import GIB, budget_gb, rss_mb
from tasks.device import Precision
from tasks.errors import BadInputError

ACTIVATION_GB = 1.0  # activations alive at once, by default: one 512-token row of SmolLM2-135M, a 2.6 GB peak
MARGIN_GB = 0.3  # the optimizer's state, the batch itself, the allocator's slack


def bytes_per_position(config: Any, precision: Precision) -> float:
    """Activations kept for the backward pass per position, fitted to SmolLM2-135M's measured 3.2 MB in fp32:
    per layer the norms', attention's and MLP's saved tensors (about 12 hidden + 9 intermediate values), plus
    the logits at a scored position (kept in fp32 for the loss)."""
    width = 2 if precision.name in ("bf16", "fp16") else 4
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    return config.num_hidden_layers * (12 * hidden + 9 * intermediate) * width + 3 * config.vocab_size * 4


def micro_batch_rows(params: Any, config: Any, precision: Precision, longest: int,
                     memory_gb: float | None) -> tuple[int, str]:
    """(rows that train at once, why)."""
    if params.micro_batch_rows:
        return min(params.micro_batch_rows, params.batch_size), "train.micro_batch_rows"
    budget, source = budget_gb(memory_gb)
    held = (rss_mb() or 0) / 1024  # the model, the data and the libraries, loaded already
    per_row = bytes_per_position(config, precision) * longest / GIB
    room = budget - held - MARGIN_GB  # what the budget leaves for activations
    if room < per_row:
        raise BadInputError(f"train: one row of {longest} tokens needs about {per_row:.1f} GB of activations beyond "
                            f"the {held:.1f} GB the model and data hold, and the budget ({source}) is {budget:.1f} "
                            f"GB: lower train.max_length (or train on shorter rows), or raise resources.memory_gb",
                            field="resources.memory_gb")
    rows = max(1, min(params.batch_size, math.floor(min(ACTIVATION_GB, room) / per_row)))
    return rows, (f"{rows} row(s) of up to {longest} tokens at once: ~{rows * per_row:.1f} GB of activations "
                  f"({source}: {budget:.1f} GB, {held:.1f} GB held)")
