"""The `cluster` stage: PCA, then faiss k-means, as CaR's Clustering/cluster.py but fast.

PCA is sklearn's, the same call CaR makes: for n >> d sklearn solves the d × d covariance eigenproblem, which
took 0.4 s against 6.5 s for `faiss.PCAMatrix` on 52,000 × 384 here, with the same components. k-means is
faiss (GPU when faiss sees one), seeded with sklearn's greedy k-means++ on a sample of 50 points per cluster:
faiss's own random seeding ended 1.6-10% above sklearn's inertia on synthetic clustered data, this seeding
within 1.5% (see benchmarks/cluster.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.errors import BadInputError

INIT_POINTS_PER_CENTROID = 50
CLUSTERS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("cluster", pa.int32()),
    pa.field("distance", pa.float32()),  # Euclidean, to its centroid, in PCA space
    pa.field("pc1", pa.float32()),  # the first two principal components: the 2-D map
    pa.field("pc2", pa.float32()),
])


def default_k(n: int) -> int:
    """CaR's rule: int(sqrt(n / 2)), 161 for Alpaca's 52,002 rows."""
    return max(1, int(math.sqrt(n / 2)))


def check_matrix(x: np.ndarray, ids: list[str] | None = None) -> None:
    if x.shape[0] < 2:
        raise BadInputError(f"clustering needs at least 2 embeddings, got {x.shape[0]}", field="embedding")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        where = f" (id {ids[bad]})" if ids else ""
        raise BadInputError(f"{int((~finite).sum())} embedding(s) contain NaN or infinity, the first{where}",
                            row=bad, field="embedding")


@dataclass
class Reduced:
    x: np.ndarray  # (n, dims) float32
    dims: int
    explained_variance: float  # share of the total variance the kept components explain
    ratios: np.ndarray  # explained variance ratio of every component


def reduce(x: np.ndarray, variance: float = 0.95, components: int | None = None, seed: int = 42) -> Reduced:
    """PCA keeping the fewest components whose explained variance reaches `variance` (sklearn's rule for a
    float n_components), or exactly `components`."""
    from sklearn.decomposition import PCA

    n, d = x.shape
    if components is not None and components > min(n, d):
        raise BadInputError(f"pca_components={components} is more than min(rows, dims) = {min(n, d)}",
                            field="cluster.pca_components")
    if float(np.var(x, axis=0).sum()) == 0.0:
        raise BadInputError("all embeddings are identical: nothing to cluster", field="embedding")
    pca = PCA(n_components=None, random_state=seed)
    full = pca.fit_transform(x)
    ratios = pca.explained_variance_ratio_
    if components is None:
        components = min(len(ratios), int(np.searchsorted(np.cumsum(ratios), variance, side="right")) + 1)
    return Reduced(np.ascontiguousarray(full[:, :components], dtype=np.float32), components,
                   float(ratios[:components].sum()), ratios)


@dataclass
class KMeansResult:
    labels: np.ndarray  # (n,) int
    distances: np.ndarray  # (n,) Euclidean distance to the assigned centroid
    centroids: np.ndarray
    inertia: float  # sum of squared distances, as sklearn's inertia_
    device: str


def use_gpu(device: str, field: str = "cluster.device") -> bool:
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "gpu" and gpus == 0:
        raise BadInputError(f"{field} is gpu but faiss sees no GPU (install faiss-gpu: EXTRAS=dev,gpu)",
                            field=field)
    return device != "cpu" and gpus > 0


def kmeans(x: np.ndarray, k: int, *, seed: int = 42, niter: int = 10, init: str = "kmeans++",
           max_points_per_centroid: int | None = 128, device: str = "auto") -> KMeansResult:
    """faiss k-means; `max_points_per_centroid=None` trains on every point. Every row is assigned at the end."""
    import faiss

    n, d = x.shape
    if k > n:
        raise BadInputError(f"k={k} clusters is more than the {n} rows to cluster", field="cluster.k")
    x = np.ascontiguousarray(x, dtype=np.float32)
    gpu = use_gpu(device)
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, gpu=gpu, verbose=False, min_points_per_centroid=1,
                      max_points_per_centroid=max_points_per_centroid or n)
    init_centroids = None
    if init == "kmeans++":
        from sklearn.cluster import kmeans_plusplus

        sample = np.random.default_rng(seed).choice(n, size=min(n, INIT_POINTS_PER_CENTROID * k), replace=False)
        init_centroids, _ = kmeans_plusplus(x[np.sort(sample)], k, random_state=seed)
    km.train(x, init_centroids=None if init_centroids is None else init_centroids.astype(np.float32))
    squared, labels = km.assign(x)
    squared = np.maximum(squared, 0.0)  # the BLAS expansion can round a zero distance below zero
    return KMeansResult(labels.astype(np.int64), np.sqrt(squared), km.centroids, float(squared.sum(dtype=np.float64)),
                        "gpu" if gpu else "cpu")


def cluster_embeddings(ids: list[str], x: np.ndarray, params: Any) -> tuple[pa.Table, dict[str, Any]]:
    """PCA + k-means over an (n, d) matrix: the clusters table and its statistics."""
    check_matrix(x, ids)
    k = params.k or default_k(len(ids))
    began = time.perf_counter()
    reduced = reduce(x, params.pca_variance, params.pca_components, params.seed)
    pca_s = time.perf_counter() - began
    result = kmeans(reduced.x, k, seed=params.seed, niter=params.niter, init=params.init,
                    max_points_per_centroid=params.max_points_per_centroid, device=params.device)
    kmeans_s = time.perf_counter() - began - pca_s
    coords = reduced.x[:, :2] if reduced.dims >= 2 else np.column_stack([reduced.x[:, 0], np.zeros(len(ids))])
    table = pa.Table.from_arrays([
        pa.array(ids, pa.string()), pa.array(result.labels.astype(np.int32)),
        pa.array(result.distances.astype(np.float32)), pa.array(coords[:, 0].astype(np.float32)),
        pa.array(coords[:, 1].astype(np.float32))], schema=CLUSTERS_SCHEMA)
    sizes = np.bincount(result.labels, minlength=k)
    stats = {"rows": len(ids), "input_dims": int(x.shape[1]), "pca_dims": reduced.dims,
             "explained_variance": round(reduced.explained_variance, 4), "k": k, "inertia": round(result.inertia, 4),
             "niter": params.niter, "init": params.init, "device": result.device,
             "empty_clusters": int((sizes == 0).sum()),
             "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
             "cluster_size_max": int(sizes.max()), "pca_seconds": round(pca_s, 2), "kmeans_seconds": round(kmeans_s, 2)}
    return table, stats


def report(stats: dict[str, Any]) -> str:
    lines = ["# cluster", "", "| | |", "|---|---:|"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in stats.items()]
    return "\n".join(lines) + "\n"
