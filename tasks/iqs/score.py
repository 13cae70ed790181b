"""Batched COMET IQS scoring: texts sorted by token length (less padding), GPU (fp16) when there is one.

Texts longer than the encoder's limit are truncated by the encoder's tokenizer exactly as in training
(`Encoder.prepare_sample`, max_length = max_positions - 2); how many were truncated is counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from tasks.iqs.revisions import normalize_whitespace


@dataclass
class Scores:
    scores: np.ndarray  # float32, in the order of the texts
    truncated: int  # texts longer than the encoder's limit


def token_lengths(model, texts: Sequence[str]) -> np.ndarray:
    tokenizer = model.encoder.tokenizer
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))


def max_tokens(model) -> int:
    return model.encoder.max_positions - 2  # what Encoder.prepare_sample truncates to


def score_texts(model, texts: Sequence[str], *, normalize: bool = True, batch_size: int = 32,
                advance: Callable[[int], None] | None = None) -> Scores:
    import torch

    texts = [normalize_whitespace(t) if normalize else t for t in texts]
    if not texts:
        return Scores(np.zeros(0, np.float32), 0)
    lengths = token_lengths(model, texts)
    order = np.argsort(lengths, kind="stable")
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    model.to(device).eval()
    out = np.empty(len(texts), np.float32)
    autocast = torch.autocast("cuda", dtype=torch.float16) if gpu else nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            inputs = model.prepare_sample([{"src": texts[i]} for i in idx], stage="predict")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out[idx] = model(**inputs).score.float().cpu().numpy()
            if advance is not None:
                advance(len(idx))
    return Scores(out, int((lengths > max_tokens(model)).sum()))


def rank(ids: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """1 = best; ties broken by id, so the ranking is the same on every run and machine."""
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))
    ranks = np.empty(len(ids), np.int64)
    ranks[order] = np.arange(1, len(ids) + 1)
    return ranks
