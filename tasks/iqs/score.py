"""Batched COMET IQS scoring: texts sorted by token length (less padding), on the GPU when there is one.

Precision follows tasks/device.py's rule (the comet scorer resolves it): `bf16` runs the forward pass under
bfloat16 autocast (GPUs, CPUs with AVX512-BF16 or AMX), `int8` quantizes the encoder's Linear layers
dynamically (`ready_for`, CPU only), `fp32` is exact. bf16 and int8 move scores slightly and may
swap close pairs (`python -m benchmarks iqs` measures both against fp32).

Texts longer than the encoder's limit are truncated by the encoder's tokenizer exactly as in training
(`Encoder.prepare_sample`, max_length = max_positions - 2); how many were truncated is counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.calibrate import measured
from tasks.collate import length_batches
from tasks.device import Precision
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


PRECISIONS = ("auto", "fp32", "bf16", "int8")
TOKENS_PER_ROW = 256  # a batch holds at most batch_size x this many positions: long texts come fewer at a time


def scoring_precision(setting: str, auto_bf16: bool) -> Precision:
    """The device and precision comet scores in (tasks/device.py's rule; `auto_bf16`: bf16 held the gate)."""
    from tasks.device import pick_device, resolve_precision

    return resolve_precision(setting, pick_device("auto"), field="iqs.precision", auto_bf16=auto_bf16,
                             measure=measured("encoder-inference"))


def ready_for(model, precision: Precision):
    """The model ready for `score_texts(..., precision=precision)`, in place: for int8 its encoder quantized, for
    bf16 on the CPU its Linear weights cast once (autocast would cast them at every batch)."""
    from tasks.device import cast_frozen_matmuls
    from tasks.embed import quantize_int8

    if precision.name == "int8":
        quantize_int8(model.encoder)
    cast_frozen_matmuls(model, precision)
    return model


def score_texts(model, texts: Sequence[str], *, normalize: bool = True, batch_size: int = 32,
                advance: Callable[[int], None] | None = None, precision: Precision | None = None) -> Scores:
    """The model's score of every text (exact fp32 on the model's device when no precision is given)."""
    import torch

    texts = [normalize_whitespace(t) if normalize else t for t in texts]
    if not texts:
        return Scores(np.zeros(0, np.float32), 0)
    lengths = token_lengths(model, texts)
    batches = length_batches(np.minimum(lengths, max_tokens(model) + 2).tolist(), batch_size,
                             batch_size * TOKENS_PER_ROW)
    gpu = torch.cuda.is_available()
    precision = precision or Precision("fp32", "cuda" if gpu else "cpu", "exact")
    device = torch.device(precision.device)
    model.to(device).eval()
    out = np.empty(len(texts), np.float32)
    with torch.inference_mode(), precision.autocast():
        for idx in batches:
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
