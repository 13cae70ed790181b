"""The `probe` scorer: logistic regression on frozen MiniLM sentence embeddings (raw 0 / revised 1).

It doubles as the strongest cheap baseline of `iqs eval`. At scoring time it reads the embeddings the
embed stage (tasks/embed.py) computes for clustering anyway, so scoring costs almost nothing more; the
probe is stored as plain JSON (weights, bias, encoder), not a pickle.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=2)
def _embedder(model_name: str | None) -> Any:
    from tasks import embed

    return embed.load_model(model_name)


def encode(texts: Sequence[str], model_name: str | None = None, batch_size: int = 64) -> np.ndarray:
    """The embed stage's vectors for `texts` (same model, L2-normalized float32): the bundled MiniLM by default."""
    from tasks import embed

    return embed.encode(_embedder(model_name), list(texts), batch_size)


@dataclass
class Probe:
    weights: list[float]
    bias: float
    encoder: str  # "minilm" (bundled) or the model path used

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """P(revised) for each row of `embeddings`."""
        logits = np.asarray(embeddings, np.float64) @ np.asarray(self.weights) + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Probe:
        return cls(**json.loads(text))


def fit_probe(embeddings: np.ndarray, labels: Sequence[float], c: float = 1.0, encoder: str = "minilm") -> Probe:
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels) >= 0.5
    if labels.all() or not labels.any():
        raise ValueError("the probe needs both raw (0) and revised (1) rows")
    clf = LogisticRegression(C=c, max_iter=2000).fit(embeddings, labels)
    return Probe(clf.coef_[0].astype(float).tolist(), float(clf.intercept_[0]), encoder)
