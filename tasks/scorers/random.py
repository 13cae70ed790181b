"""`random`: a seeded random score, so "a random sample of the same size" is just another scorer.

A row's score is a hash of (seed, id): it does not depend on which other rows are scored with it, so a random
selection from a pool stays the same when rows are added, and a new seed gives a new sample.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field

from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring


class RandomConfig(ScorerConfig):
    scorer: Literal["random"] = "random"
    seed: int = Field(0, description="another seed, another random sample")


def random_scores(ids: list[str], seed: int) -> np.ndarray:
    """Uniform in [0, 1), one per id, from the first 8 bytes of blake2b(seed, id)."""
    prefix = f"{seed}\0".encode()
    return np.array([int.from_bytes(hashlib.blake2b(prefix + i.encode(), digest_size=8).digest(), "big") / 2**64
                     for i in ids], np.float64)


def open_random(inputs: ScorerInputs) -> Scoring:
    seed = inputs.params.seed

    def score(rows: Any) -> Scores:
        return Scores(random_scores(rows.column("id").to_pylist(), seed))

    return Scoring(score, model=f"random (seed {seed})")


SCORER = Scorer("random", RandomConfig, open_random, description="a seeded random score: random selection")
