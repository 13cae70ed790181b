"""Semantic duplicates (SemDeDup, arXiv:2303.09540): pairs whose embeddings have a cosine >= the threshold.

faiss finds them without comparing all pairs: an IVF index (inner product on L2-normalized vectors = cosine)
is searched for each row's `neighbors` nearest rows in `nprobe` cells; a row whose last neighbour is still
above the threshold has more, and is searched again with a range search (exact on a flat index, within the
probed cells on IVF). On a GPU the nearest-neighbour search runs there (faiss has no GPU range search; the few
saturated rows go to the CPU index, as faiss.contrib.exhaustive_search.range_search_gpu does).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from tasks.cluster import use_gpu
from tasks.dedup.config import SemanticConfig
from tasks.dedup.groups import Pairs

FLAT_BELOW = 20_000  # rows: below this an exact flat index is about as fast as IVF
QUERY_CHUNK = 16_384
MARGIN = 1e-6  # faiss's range search keeps results strictly above the radius


def build_index(x: np.ndarray, config: SemanticConfig) -> tuple[Any, str]:
    import faiss

    n, d = x.shape
    nlist = config.nlist or (0 if n < FLAT_BELOW else int(4 * math.sqrt(n)))
    if not nlist:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index, "flat (exact)"
    nlist = min(nlist, n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    index.nprobe = min(config.nprobe, nlist)
    return index, f"IVF{nlist} nprobe {index.nprobe}"


def semantic_pairs(x: np.ndarray, config: SemanticConfig, eligible: np.ndarray, device: str = "auto"
                   ) -> tuple[Pairs, dict[str, Any], np.ndarray]:
    """(pairs of eligible rows with cosine >= threshold, stats, each eligible row's cosine to its nearest other
    eligible row; NaN for the others)."""
    import faiss

    gpu = use_gpu(device, "dedup.device")
    rows = np.flatnonzero(eligible)
    nearest = np.full(len(x), np.nan)
    if len(rows) < 2:
        return Pairs.empty(), {"index": None, "device": "gpu" if gpu else "cpu", "saturated_rows": 0}, nearest
    xs = np.ascontiguousarray(x[rows], dtype=np.float32)
    index, kind = build_index(xs, config)
    searcher = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index) if gpu else index
    k = min(config.neighbors, len(rows))
    left, right, sims, saturated = [], [], [], []
    for start in range(0, len(rows), QUERY_CHUNK):
        q = np.arange(start, min(start + QUERY_CHUNK, len(rows)))
        cos, idx = searcher.search(xs[q], k)
        other = (idx >= 0) & (idx != q[:, None])
        first = np.argmax(other, axis=1)
        nearest[rows[q]] = np.where(other.any(axis=1), cos[np.arange(len(q)), first], np.nan)
        full = cos[:, -1] >= config.threshold
        saturated.append(q[full])
        hit = other & (cos >= config.threshold) & ~full[:, None]
        left.append(np.repeat(q, hit.sum(axis=1)))
        right.append(idx[hit])
        sims.append(cos[hit])
    again = np.concatenate(saturated)
    if len(again):
        lims, cos, idx = index.range_search(xs[again], config.threshold - MARGIN)
        q = np.repeat(again, np.diff(lims).astype(np.int64))
        hit = (idx != q) & (cos >= config.threshold)
        left.append(q[hit])
        right.append(idx[hit])
        sims.append(cos[hit])
    pairs, similarity = symmetric(rows[np.concatenate(left)], rows[np.concatenate(right).astype(np.int64)],
                                  np.concatenate(sims).astype(np.float64), len(x))
    stats = {"index": kind, "device": "gpu" if gpu else "cpu", "neighbors": k, "saturated_rows": len(again)}
    return Pairs(pairs, similarity, len(pairs), similarity), stats, nearest


def symmetric(a: np.ndarray, b: np.ndarray, similarity: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each unordered pair once (i < j), with the higher similarity of its two directions (an IVF search can
    find a pair from one side only)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    codes = lo.astype(np.int64) * n + hi
    order = np.lexsort((-similarity, codes))
    codes, similarity = codes[order], similarity[order]
    first = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, dtype=bool)
    codes = codes[first]
    return np.stack([codes // n, codes % n], axis=1), similarity[first]
