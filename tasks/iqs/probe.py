"""The `probe` scorer: logistic regression on frozen MiniLM sentence embeddings (raw 0 / revised 1).

It doubles as the strongest cheap baseline of `iqs eval`. At scoring time it reads the embeddings the
embed stage (tasks/embed.py) computes for clustering anyway, so scoring costs almost nothing more; the
probe is stored as plain JSON (weights, bias, encoder), not a pickle.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def encode(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalized sentence embeddings (float32) with sentence-transformers; the bundled MiniLM by default.

    Same model and normalization as the embed stage; kept here for training the probe on revision texts.
    """
    from sentence_transformers import SentenceTransformer

    from tasks.iqs.train import bundled_minilm

    model = SentenceTransformer(model_path or bundled_minilm(), device=None)
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32)


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
