"""The `probe` scorer's model: logistic regression on a frozen feature of the embed stage (raw 0 / revised 1).

The feature is one of the embed stage's vector columns: `layer_mean` (every MiniLM layer's hidden states,
averaged and mean-pooled: 94.1% on CaR's validation pairs) or `embedding` (the sentence vector, 90.6%). Both
come from the forward pass the embed stage runs for clustering anyway, so scoring costs almost nothing more.
The probe doubles as the cheap baseline of `iqs eval`, and is stored as plain JSON (weights, bias, encoder,
feature), not a pickle; the feature standardization it is fitted with is folded into the weights.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Feature = Literal["layer_mean", "embedding"]
DEFAULT_FEATURE: Feature = "layer_mean"


@functools.lru_cache(maxsize=2)
def _embedder(model_name: str | None) -> Any:
    from tasks import embed

    return embed.load_model(model_name)


def encode(texts: Sequence[str], feature: Feature = DEFAULT_FEATURE, model_name: str | None = None,
           batch_size: int = 64) -> np.ndarray:
    """The embed stage's `feature` column for `texts` (same model, same forward pass): the bundled MiniLM by
    default."""
    from tasks import embed

    return getattr(embed.encode_features(_embedder(model_name), list(texts), batch_size), feature)


@dataclass
class Probe:
    weights: list[float]
    bias: float
    encoder: str  # "minilm" (bundled) or the model path used
    feature: Feature = "embedding"  # probes stored before the feature was recorded read the sentence vector

    def scores(self, features: np.ndarray) -> np.ndarray:
        """P(revised) for each row of `features` (this probe's feature)."""
        logits = np.asarray(features, np.float64) @ np.asarray(self.weights) + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Probe:
        return cls(**json.loads(text))


def fit_probe(features: np.ndarray, labels: Sequence[float], feature: Feature, c: float = 1.0,
              encoder: str = "minilm") -> Probe:
    """Logistic regression on standardized features (the layer means' scales differ per dimension), the
    standardization folded into the weights so the probe scores raw features."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels) >= 0.5
    if labels.all() or not labels.any():
        raise ValueError("the probe needs both raw (0) and revised (1) rows")
    x = np.asarray(features, np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, labels)
    weights = clf.coef_[0] / scale
    return Probe(weights.tolist(), float(clf.intercept_[0] - weights @ mean), encoder, feature)
