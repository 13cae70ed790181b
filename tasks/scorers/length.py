"""`length`: the longer the answer, the better — the "long is more" baseline (arXiv:2402.04833).

The cheapest honest baseline: any scorer worth its cost must beat it. The score is the number of words of the
assistant turns (whitespace-separated), or of characters.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring


class LengthConfig(ScorerConfig):
    scorer: Literal["length"] = "length"
    unit: Literal["words", "chars"] = Field("words", description="count the answers' words or characters")


def answer_lengths(rows: Any, unit: str) -> np.ndarray:
    measure = (lambda text: len(text.split())) if unit == "words" else len
    return np.array([sum(measure(m["content"]) for m in messages if m["role"] == "assistant")
                     for messages in rows.column("messages").to_pylist()], np.float64)


def open_length(inputs: ScorerInputs) -> Scoring:
    unit = inputs.params.unit
    return Scoring(lambda rows: Scores(answer_lengths(rows, unit)), model=f"answer length in {unit}")


SCORER = Scorer("length", LengthConfig, open_length, description="answer length (long is more), the baseline")
