"""Embedding and k-means against CaR's way of doing them, measured in the same run.

(1) Embedding N texts (CaR's expert-revision texts) with the bundled MiniLM: the embed stage's default path
    (`embed.precision: auto`, its default batch size, batches grouped by token length) against CaR's loop of
    `model.encode(text)` one text at a time on the same fp32 model, in `comparisons`; every other precision and
    batch size in `options`. The quality of each is its min and mean cosine to CaR's vectors and how its
    clusters agree with theirs (adjusted Rand index): with CaR's vectors' centroids (the cluster stage's PCA and
    k-means fitted on CaR's vectors, each variant's vectors assigned to them: do the vectors move across cluster
    boundaries?), and re-fitted on each (PCA and k-means run again, reported beside the agreement of two k-means
    seeds on the same exact vectors, which is k-means' own noise on these texts). The gate for bf16: min cosine
    >= 0.9999 and ARI >= 0.95 with the same centroids.
(2) k-means on 52,000 × 384 synthetic clustered, L2-normalized vectors after PCA (0.95): our faiss k-means
    (`tasks.cluster.kmeans`, default settings) against sklearn `KMeans(n_clusters, random_state=42)`, CaR's call;
    time and inertia (sum of squared distances) on two synthetic data sets.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import timed

ROOT = Path(__file__).resolve().parents[1]
TEXTS_CSV = ROOT.parent / "shared" / "data" / "car" / "APE_score_train.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", type=int, default=2000, help="texts to embed (default 2000)")
    parser.add_argument("--rows", type=int, default=52000, help="synthetic vectors to cluster (default 52000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch, BLAS and faiss (default: the libraries' own choice)")
    parser.add_argument("--skip", choices=["embed", "kmeans"], action="append", default=[])


def synthetic(kind: str, n: int, d: int = 384, seed: int = 0) -> np.ndarray:
    """Unit vectors with cluster structure. `topics`: 40 topics × 8 subtopics of Zipf-distributed sizes with
    anisotropic (power-law spectrum) noise, closer to sentence embeddings; `blobs`: 200 well separated
    Gaussian blobs of Dirichlet sizes, where k-means seeding matters most."""
    rng = np.random.default_rng(seed)
    if kind == "blobs":
        centers = rng.normal(size=(200, d)) / math.sqrt(d)
        sizes = rng.dirichlet(np.ones(200) * 2)
        x = centers[rng.choice(200, size=n, p=sizes)] + rng.normal(scale=0.7 / math.sqrt(d), size=(n, d))
    else:
        spectrum = np.arange(1, d + 1) ** -0.6
        spectrum /= np.sqrt((spectrum ** 2).sum())
        basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
        topics = rng.normal(size=(40, d)) * spectrum
        subtopics = np.repeat(topics, 8, axis=0) + rng.normal(size=(320, d)) * spectrum * 0.6
        p = np.minimum(rng.zipf(1.6, size=320).astype(float), 50)
        x = (subtopics[rng.choice(320, size=n, p=p / p.sum())] + rng.normal(size=(n, d)) * spectrum * 0.8) @ basis
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def car_texts(n: int) -> list[str]:
    if not TEXTS_CSV.exists():
        raise SystemExit(f"the embedding benchmark reads CaR's texts from {TEXTS_CSV} (../shared/data)")
    with open(TEXTS_CSV, newline="") as fh:
        texts = [row["src"] for row in csv.DictReader(fh)]
    return (texts * (n // len(texts) + 1))[:n]


EMBED_OPTIONS = (("fp32", 16), ("fp32", 64), ("bf16", 16), ("bf16", 32), ("bf16", 64), ("int8", 16))
GATE_COSINE, GATE_ARI = 0.9999, 0.95


def cluster_agreement(a: np.ndarray, b: np.ndarray, seed: int = 42) -> dict[str, float]:
    """Adjusted Rand index (1.0: the same clusters up to their numbering) between the cluster stage's defaults
    (PCA 0.95, faiss k-means) on `a` and `b`, two embeddings of the same texts: `same_centroids` assigns `b`,
    projected by `a`'s PCA, to `a`'s centroids; `refit` runs PCA and k-means on each."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from tasks.cluster import default_k, kmeans, reduce

    k = default_k(len(a))
    fitted = reduce(a, 0.95, None, seed)
    reference = kmeans(fitted.x, k, seed=seed)
    pca = PCA(n_components=None, random_state=seed).fit(a)  # reduce's projection, applied to b
    moved = pca.transform(b)[:, :fitted.dims].astype(np.float32)
    nearest = ((moved[:, None, :] - reference.centroids[None]) ** 2).sum(-1).argmin(1)
    refit = kmeans(reduce(b, 0.95, None, seed).x, k, seed=seed).labels
    return {"same_centroids": float(adjusted_rand_score(reference.labels, nearest)),
            "refit": float(adjusted_rand_score(reference.labels, refit))}


def kmeans_noise(x: np.ndarray, seed: int = 42) -> float:
    """ARI between two k-means seeds on the same vectors: how much re-clustering alone moves the clusters."""
    from sklearn.metrics import adjusted_rand_score

    from tasks.cluster import default_k, kmeans, reduce

    z = reduce(x, 0.95, None, seed).x
    return float(adjusted_rand_score(kmeans(z, default_k(len(x)), seed=seed).labels,
                                     kmeans(z, default_k(len(x)), seed=seed + 1).labels))


def bench_embedding(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the default path against CaR's loop, every other variant): each the better of two passes."""
    from tasks.calibrate import measured
    from tasks.device import pick_device, resolve_precision
    from tasks.embed import batch_size_for, encode, load_model

    texts = car_texts(n)
    device = pick_device("auto")
    default = resolve_precision("auto", device, field="embed.precision", measure=measured("encoder-inference"))
    variants = list(dict.fromkeys([(default.name, batch_size_for(device, default.name)), *EMBED_OPTIONS]))
    models = {precision: load_model(None, "cpu" if precision == "int8" else device, precision)
              for precision in {p for p, _ in variants}}
    model = models["fp32"]
    for precision, m in models.items():  # warm-up, the baseline shares the fp32 one
        encode(m, texts[:64], 16, None, precision)
    baseline_s, singles = timed(lambda: np.stack([model.encode(t) for t in texts]))  # CaR's loop
    singles = singles / np.linalg.norm(singles, axis=1, keepdims=True)
    rows = []
    for precision, batch_size in variants:
        m = models[precision]
        ours_s, batched = min((timed(encode, m, texts, batch_size, None, precision) for _ in range(2)),
                              key=lambda r: r[0])
        cosine = (batched * singles).sum(axis=1)
        ari = cluster_agreement(singles, batched)
        rows.append({"name": f"embed {n} texts (MiniLM, {m.device}, {precision}, batch {batch_size})"
                             + (f": embed.precision auto ({default.reason})" if rows == [] else ""),
                     "ours_s": round(ours_s, 2), "baseline": "CaR's loop, model.encode(text) one at a time (fp32)",
                     "baseline_s": round(baseline_s, 2), "ours_rows_per_s": round(n / ours_s, 1),
                     "baseline_rows_per_s": round(n / baseline_s, 1),
                     "min_cosine_to_baseline": round(float(cosine.min()), 6),
                     "mean_cosine_to_baseline": round(float(cosine.mean()), 6),
                     "cluster_ari_same_centroids": round(ari["same_centroids"], 4),
                     "cluster_ari_refit": round(ari["refit"], 4),
                     "gate": "held" if cosine.min() >= GATE_COSINE and ari["same_centroids"] >= GATE_ARI
                     else "MISSED"})
    rows[0]["kmeans_seed_ari_on_the_baseline"] = round(kmeans_noise(singles), 4)
    return rows[:1], rows[1:]


KMEANS_VARIANTS = [  # the first is the cluster stage's default (flows/config.py ClusterConfig)
    ("faiss default: kmeans++ seeding, 128 points per centroid, 10 iterations",
     {"niter": 10, "max_points_per_centroid": 128}),
    ("faiss kmeans++, every point, 20 iterations", {"niter": 20, "max_points_per_centroid": None}),
    ("faiss random seeding, 128 points per centroid, 10 iterations",
     {"niter": 10, "max_points_per_centroid": 128, "init": "random"}),
]


def bench_kmeans(kind: str, n: int) -> list[dict[str, Any]]:
    from sklearn.cluster import KMeans

    from tasks.cluster import default_k, kmeans, reduce

    x = synthetic(kind, n)
    pca_s, reduced = timed(reduce, x, 0.95, None, 42)
    z, k = reduced.x, default_k(n)
    baseline_s, sk = timed(lambda: KMeans(n_clusters=k, random_state=42).fit(z))
    rows = []
    for label, options in KMEANS_VARIANTS:
        ours_s, ours = timed(kmeans, z, k, seed=42, **options)
        rows.append({"name": f"k-means {kind} {n}x{x.shape[1]} -> {reduced.dims} dims, k={k}: {label} ({ours.device})",
                     "ours_s": round(ours_s, 2), "baseline_s": round(baseline_s, 2),
                     "ours_inertia": round(ours.inertia, 2), "baseline_inertia": round(float(sk.inertia_), 2),
                     "inertia_ratio": round(ours.inertia / float(sk.inertia_), 4), "baseline_iterations": sk.n_iter_,
                     "pca_s": round(pca_s, 2)})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    comparisons: list[dict[str, Any]] = []
    options: list[dict[str, Any]] = []
    with threadpool_limits(limits=args.threads):
        if args.threads:
            import faiss
            import torch

            faiss.omp_set_num_threads(args.threads)
            torch.set_num_threads(args.threads)
        if "embed" not in args.skip:
            default, others = bench_embedding(args.texts)
            comparisons += default
            options += others
        if "kmeans" not in args.skip:
            for kind in ("topics", "blobs"):
                comparisons += bench_kmeans(kind, args.rows)
    import faiss

    return {"benchmark": "cluster", "comparisons": comparisons, "options": options,
            "threads": args.threads or "library default",
            "cpus": os.cpu_count(), "faiss_gpus": faiss.get_num_gpus(), "load_average": os.getloadavg()[0],
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}
