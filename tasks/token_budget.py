"""Training tokens per row: what a token budget (`select.tokens`) counts, so that two selections can be matched on
the tokens a model trains on rather than on rows (CaR's 1,000 rows carry about 2.3x the tokens of 1,000 random
ones). A row is rendered and tokenized as `format` does it (template, system prompt, train_on, format's
max_length) and cut at train.max_length as training cuts it; a row `format` would quarantine counts 0: it never
trains.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from storage.params import Section
from tasks.templates import get_template
from tasks.tokenize import ConversationEncoder

CHUNK_ROWS = 2048  # rows counted at a time, in the rule's order: a budget never tokenizes the whole pool


class TokenCounting(Section):
    """How a row's training tokens are counted: the format and train settings that decide them."""

    template: str = "chatml"
    system: str | None = None
    train_on: Literal["all_assistant", "last_assistant", "prompt"] = "all_assistant"
    max_length: int = Field(1024, ge=8)
    train_max_length: int | None = Field(None, ge=8)


def counting_of(config: Any) -> TokenCounting:
    """A pipeline config's counting: its `format` section, cut at `train.max_length`."""
    fmt = config.format
    return TokenCounting(template=fmt.template, system=fmt.system, train_on=fmt.train_on, max_length=fmt.max_length,
                         train_max_length=config.train.max_length)


def token_counter(tokenizer: Any, counting: TokenCounting) -> Callable[[pa.Table], np.ndarray]:
    """A function from canonical rows to each row's training tokens."""
    encoder = ConversationEncoder(tokenizer, get_template(counting.template), max_length=counting.max_length,
                                  train_on=counting.train_on, system=counting.system)
    cut = counting.train_max_length or counting.max_length

    def count(rows: pa.Table) -> np.ndarray:
        encoded = encoder.encode(rows).table
        lengths = dict(zip(encoded.column("id").to_pylist(), (len(x) for x in encoded.column("input_ids").to_pylist())))
        return np.array([min(lengths.get(i, 0), cut) for i in rows.column("id").to_pylist()], np.float64)

    return count


def reachable_tokens(order: np.ndarray, also: np.ndarray, tokens: int, count_rows: Callable[[np.ndarray], np.ndarray],
                     chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Each row's training tokens where a budget of `tokens` can reach it: the priority order's prefix until it
    holds `tokens` (one chunk past), and the rows `also` names (the cluster tops, taken wherever they rank); inf
    for every other row (it cannot fit)."""
    weights = np.full(len(order), np.inf)
    if len(also):
        weights[also] = count_rows(also)
    held, start = 0.0, 0
    while start < len(order) and held <= tokens:
        rows = order[start:start + chunk]
        fresh = rows[np.isinf(weights[rows])]
        if len(fresh):
            weights[fresh] = count_rows(fresh)
        held += float(weights[rows].sum())
        start += chunk
    return weights
