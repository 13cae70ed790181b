"""Dedup on Alpaca-52k against the loops a user would write, measured in the same run at the same decisions.

(1) Near-duplicates: our vectorized MinHash-LSH (tasks.dedup.near + greedy removal) against a plain loop over
    the rows in priority order: datasketch `MinHash(num_perm=128)` per row (`update_batch` over its shingle
    strings), `MinHashLSH.query`, the exact Jaccard of the candidates, `insert` when the row stays. Same
    normalization, shingles, LSH bands, threshold and priority, so both must remove the same rows. Run on real
    Alpaca and on Alpaca with planted one-word-changed copies (so there are duplicates to find).
(2) Answer groups: the same comparison over the answers' word sets.
(3) Semantic duplicates on the cached MiniLM embeddings of the first `--semantic-rows` rows: faiss (IVF or
    flat, tasks.dedup.semantic) against brute-force cosine, one row at a time (`X @ x`), on a sample of rows,
    extrapolated; recall = pairs of the sampled rows that faiss also found.
(4) Contamination against Alpaca's 175 self-instruct seed tasks: 13-gram hashes (tasks.dedup.contamination)
    against a loop over Python sets of n-gram strings.
"""
from __future__ import annotations

import argparse
import os
import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks._dedup_data import ROOT, alpaca_table, cached_embeddings
from benchmarks.common import timed

SEEDS = ROOT.parent / "shared" / "data" / "alpaca" / "seed_tasks.jsonl"
CJK = re.compile(r"([\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf])")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=None, help="Alpaca rows (default: all 51,953)")
    parser.add_argument("--planted", type=int, default=2000, help="one-word-changed copies planted (default 2000)")
    parser.add_argument("--semantic-rows", type=int, default=8192,
                        help="the first rows, whose MiniLM embeddings are used (cached under benchmarks/results/ in "
                             "pieces of 4096; about 5 minutes a piece on 2 busy cores; default 8192)")
    parser.add_argument("--sample", type=int, default=500, help="rows the brute-force cosine baseline scans")
    parser.add_argument("--skip", choices=["near", "answers", "semantic", "contamination"], action="append",
                        default=[])


# -- the baseline's own text handling: plain Python per row ------------------------------------------------
def plain_words(text: str) -> list[str]:
    """What tasks.dedup.text.normalize does, written per row with `re`."""
    text = re.sub(r"['’`]", "", unicodedata.normalize("NFKC", text).lower())
    return CJK.sub(r" \1 ", re.sub(r"[\W_]+", " ", text)).split()


def plain_shingles(words: list[str], size: int) -> set[str]:
    if not words:
        return set()
    return {" ".join(words[i:i + size]) for i in range(max(len(words) - size + 1, 1))}


def jaccard(a: set, b: set) -> float:
    both = len(a & b)
    return both / (len(a) + len(b) - both) if (a or b) else 1.0


def priority_order(ids: list[str], answers: list[str]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: (-len(answers[i]), ids[i]))


def datasketch_near(prompts: list[str], answers: list[str], ids: list[str], threshold: float, shingle: int,
                    num_perm: int, params: tuple[int, int] | None) -> dict[int, int]:
    """{removed row: kept row}: the loop in priority order; a row stays when no kept row verifies."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
    kept_sets: dict[int, tuple[set[str], set[str]]] = {}
    rank = {i: r for r, i in enumerate(priority_order(ids, answers))}
    removed = {}
    for i in sorted(rank, key=rank.get):
        prompt = plain_shingles(plain_words(prompts[i]), shingle)
        full = prompt | plain_shingles(plain_words(answers[i]), shingle)
        if not full:
            continue
        m = MinHash(num_perm=num_perm)
        m.update_batch([s.encode() for s in full])
        best = None
        for j in lsh.query(m):
            sim = jaccard(full, kept_sets[j][0])
            if sim >= threshold and jaccard(prompt, kept_sets[j][1]) >= threshold:
                if best is None or (sim, -rank[j]) > (best[1], -rank[best[0]]):
                    best = (j, sim)
        if best is not None:
            removed[i] = best[0]
            continue
        lsh.insert(i, m)
        kept_sets[i] = (full, prompt)
    return removed


def ours_near(table: pa.Table, threshold: float, shingle: int, num_perm: int) -> dict[int, int]:
    from tasks.dedup.config import NearConfig
    from tasks.dedup.features import RowFeatures
    from tasks.dedup.groups import greedy_removal, priority_rank
    from tasks.dedup.near import near_duplicate_pairs

    features = RowFeatures(table, shingle)
    config = NearConfig(threshold=threshold, shingle=shingle, num_perm=num_perm)
    pairs, _ = near_duplicate_pairs(features, config, np.ones(features.rows, dtype=bool))
    rows, kept, _ = greedy_removal(pairs.pairs, pairs.similarity, priority_rank(features.ids,
                                                                               features.answer_lengths, None))
    return dict(zip(rows.tolist(), kept.tolist()))


def planted_copies(table: pa.Table, n: int, seed: int = 0) -> pa.Table:
    """Alpaca plus `n` copies of random rows with one word of the answer replaced (answers of 30+ words)."""
    from storage.schema import make_record, records_to_table

    rng = np.random.default_rng(seed)
    rows = table.select(["messages"]).to_pylist()
    long = [i for i, r in enumerate(rows) if len(r["messages"][-1]["content"].split()) >= 30]
    records = []
    for k, i in enumerate(rng.choice(long, size=min(n, len(long)), replace=False).tolist()):
        prompt, answer = rows[i]["messages"][0]["content"], rows[i]["messages"][-1]["content"].split()
        answer[int(rng.integers(len(answer)))] = "PLANTED"
        records.append(make_record(messages=[{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": " ".join(answer)}],
                                   system=None, uri="planted", fmt="alpaca", row=k))
    return pa.concat_tables([table.select(records_to_table([]).schema.names), records_to_table(records)])


def compare_near(name: str, table: pa.Table, default_bands: bool) -> tuple[list[dict], list[dict]]:
    from tasks.dedup.minhash import band_rows
    from tasks.dedup.text import prompts_and_answers

    threshold, shingle, num_perm = 0.8, 3, 128
    params = band_rows(threshold, num_perm)
    prompts, answers = prompts_and_answers(table)
    ids = table.column("id").to_pylist()
    ours_s, ours = timed(ours_near, table, threshold, shingle, num_perm)
    base_s, base = timed(datasketch_near, prompts, answers, ids, threshold, shingle, num_perm, params)
    row = {"name": f"near-duplicates: {name} ({table.num_rows:,} rows), Jaccard >= {threshold}, {shingle}-word "
                   f"shingles, {params[0]} bands x {params[1]}",
           "ours_s": round(ours_s, 2), "baseline_s": round(base_s, 2), "ours_removed": len(ours),
           "baseline_removed": len(base), "same_decisions": ours == base,
           "differing_rows": len(set(ours.items()) ^ set(base.items()))}
    options = []
    if default_bands:  # what a user's MinHashLSH(threshold=0.8) finds: datasketch's own (bands, rows)
        default_s, default = timed(datasketch_near, prompts, answers, ids, threshold, shingle, num_perm, None)
        options.append({"name": f"datasketch MinHashLSH(threshold={threshold}) default bands: {name}",
                        "seconds": round(default_s, 2), "removed": len(default),
                        "missed_vs_ours": len(set(ours) - set(default))})
    for t, k in ((0.7, 3), (0.9, 3), (0.8, 5)):
        options.append({"name": f"ours at Jaccard >= {t}, {k}-word shingles: {name}",
                        "removed": len(ours_near(table, t, k, num_perm))})
    return [row], options


# -- answer groups -----------------------------------------------------------------------------------------
def datasketch_answer_groups(answers: list[str], threshold: float, min_words: int, num_perm: int,
                             params: tuple[int, int]) -> set[frozenset[int]]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    sets = {}
    for i, answer in enumerate(answers):
        words = plain_words(answer)
        if len(words) < min_words:
            continue
        sets[i] = set(words)
        m = MinHash(num_perm=num_perm)
        m.update_batch([w.encode() for w in sets[i]])
        for j in lsh.query(m):
            if jaccard(sets[i], sets[j]) >= threshold:
                parent[root(i)] = root(j)
        lsh.insert(i, m)
    groups: dict[int, set[int]] = {}
    for i in list(parent):
        groups.setdefault(root(i), set()).add(i)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def ours_answer_groups(table: pa.Table, min_words: int) -> set[frozenset[int]]:
    from tasks.dedup.answers import answer_groups
    from tasks.dedup.config import AnswerGroupConfig
    from tasks.dedup.features import RowFeatures
    from tasks.dedup.groups import priority_rank

    features = RowFeatures(table, 3)
    rank = priority_rank(features.ids, features.answer_lengths, None)
    labels, _, _ = answer_groups(features, AnswerGroupConfig(min_words=min_words), np.ones(features.rows, bool),
                                 rank)
    groups: dict[str, set[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def compare_answer_groups(table: pa.Table) -> tuple[list[dict], list[dict]]:
    from tasks.dedup.config import AnswerGroupConfig
    from tasks.dedup.minhash import band_rows
    from tasks.dedup.text import prompts_and_answers

    config = AnswerGroupConfig()
    _, answers = prompts_and_answers(table)
    ours_s, ours = timed(ours_answer_groups, table, config.min_words)
    base_s, base = timed(datasketch_answer_groups, answers, config.threshold, config.min_words, config.num_perm,
                         band_rows(config.threshold, config.num_perm))
    row = {"name": f"answer groups: Alpaca ({table.num_rows:,} rows), word-set Jaccard >= {config.threshold}, "
                   f"answers of {config.min_words}+ words",
           "ours_s": round(ours_s, 2), "baseline_s": round(base_s, 2), "ours_groups": len(ours),
           "ours_rows_in_groups": sum(map(len, ours)), "baseline_groups": len(base), "same_decisions": ours == base}
    options = []
    for min_words in (5, 10, 20):
        groups = ours_answer_groups(table, min_words)
        options.append({"name": f"answer groups with answers of {min_words}+ words", "groups": len(groups),
                        "rows_in_groups": sum(map(len, groups))})
    return [row], options


# -- semantic duplicates -----------------------------------------------------------------------------------
def brute_force_pairs(x: np.ndarray, rows: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """The user's loop: one matrix-vector product per row."""
    found = set()
    for i in rows.tolist():
        for j in np.flatnonzero(x @ x[i] >= threshold).tolist():
            if j != i:
                found.add((min(i, j), max(i, j)))
    return found


def compare_semantic(table: pa.Table, rows: int, sample: int) -> tuple[list[dict], list[dict]]:
    from tasks.dedup.config import SemanticConfig
    from tasks.dedup.semantic import semantic_pairs

    x = cached_embeddings(table, rows)
    n, ivf = len(x), int(4 * np.sqrt(len(x)))
    picked = np.sort(np.random.default_rng(0).choice(n, size=min(sample, n), replace=False))
    sampled = set(picked.tolist())
    semantic_pairs(x[:100], SemanticConfig(), np.ones(100, dtype=bool))  # faiss import and first call
    truth = {t: timed(brute_force_pairs, x, picked, t) for t in (0.95, 0.9)}
    results, options = [], []
    variants = [("default", SemanticConfig()), ("IVF nprobe 16", SemanticConfig(nlist=ivf)),
                ("IVF nprobe 4", SemanticConfig(nlist=ivf, nprobe=4)),
                ("IVF nprobe 64", SemanticConfig(nlist=ivf, nprobe=64)),
                ("default at cosine 0.9", SemanticConfig(threshold=0.9)),
                ("IVF nprobe 16 at cosine 0.9", SemanticConfig(nlist=ivf, threshold=0.9))]
    for label, config in variants:
        ours_s, (pairs, stats, _) = timed(semantic_pairs, x, config, np.ones(n, dtype=bool), "auto")
        base_s, expected = truth[config.threshold]
        found = {p for p in map(tuple, pairs.pairs.tolist()) if p[0] in sampled or p[1] in sampled}
        row = {"name": f"semantic pairs, cosine >= {config.threshold}: first {n:,} Alpaca rows, MiniLM ({label}: "
                       f"{stats['index']}, {stats['device']})",
               "ours_s": round(ours_s, 3), "baseline_s": round(base_s * n / len(picked), 2),
               "baseline_note": f"brute force on {len(picked)} rows, extrapolated to {n:,}",
               "ours_pairs": len(pairs.pairs), "sample_pairs": len(expected),
               "recall_on_sample": round(len(expected & found) / len(expected), 4) if expected else None}
        (results if label == "default" else options).append(row)
    options.append(scaled_semantic(x, 6, sample))
    return results, options


def scaled_semantic(x: np.ndarray, copies: int, sample: int) -> dict[str, Any]:
    """Timing at Alpaca's size without embedding 52k rows: the real vectors tiled `copies` times, each copy
    moved by noise to a cosine of about 0.8 from its original (so copies are not duplicates of each other)."""
    from tasks.dedup.config import SemanticConfig
    from tasks.dedup.semantic import semantic_pairs

    rng = np.random.default_rng(0)
    tiled = np.concatenate([x] + [x + rng.normal(scale=0.038, size=x.shape).astype(np.float32)
                                  for _ in range(copies - 1)])
    tiled /= np.linalg.norm(tiled, axis=1, keepdims=True)
    n = len(tiled)
    picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    base_s, expected = timed(brute_force_pairs, tiled, picked, 0.95)
    ours_s, (pairs, stats, _) = timed(semantic_pairs, tiled, SemanticConfig(), np.ones(n, dtype=bool), "auto")
    sampled = set(picked.tolist())
    found = {p for p in map(tuple, pairs.pairs.tolist()) if p[0] in sampled or p[1] in sampled}
    return {"name": f"semantic timing at {n:,} rows: the {len(x):,} real vectors tiled {copies}x with noise "
                    f"(default: {stats['index']}, {stats['device']})",
            "ours_s": round(ours_s, 2), "baseline_s": round(base_s * n / len(picked), 2),
            "speedup": round(base_s * n / len(picked) / ours_s, 1), "ours_pairs": len(pairs.pairs),
            "sample_pairs": len(expected),
            "recall_on_sample": round(len(expected & found) / len(expected), 4) if expected else None}


# -- contamination -----------------------------------------------------------------------------------------
def plain_contamination(prompts: list[str], answers: list[str], eval_prompts: list[str], eval_answers: list[str],
                        n: int, min_words: int) -> set[int]:
    grams: set[str] = set()
    short: dict[int, set[str]] = {}
    for prompt, answer in zip(eval_prompts, eval_answers):
        for words in (plain_words(prompt), plain_words(answer)):
            grams.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        words = plain_words(prompt)
        if min_words <= len(words) < n:
            short.setdefault(len(words), set()).add(" ".join(words))
    hit = set()
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        for words in (plain_words(prompt), plain_words(answer)):
            for size, wanted in [(n, grams)] + list(short.items()):
                if any(" ".join(words[i:i + size]) in wanted for i in range(len(words) - size + 1)):
                    hit.add(row)
    return hit


def ours_contamination(table: pa.Table, evals: Any) -> set[int]:
    from tasks.dedup.config import ContaminationConfig
    from tasks.dedup.contamination import contaminated_rows
    from tasks.dedup.features import RowFeatures

    found, _ = contaminated_rows(RowFeatures(table, 3), evals, ContaminationConfig())
    return set(found.rows.tolist())


def compare_contamination(table: pa.Table) -> tuple[list[dict], list[dict]]:
    from tasks.dedup.config import ContaminationConfig
    from tasks.dedup.contamination import read_eval_sources
    from tasks.dedup.text import prompts_and_answers
    from tasks.ingest.config import SourceConfig

    evals, _ = read_eval_sources([SourceConfig(path=str(SEEDS))])
    config = ContaminationConfig()
    prompts, answers = prompts_and_answers(table)
    ours_s, ours = timed(ours_contamination, table, evals)
    base_s, base = timed(plain_contamination, prompts, answers, evals.prompts, evals.answers, config.ngram,
                         config.min_words)
    return [{"name": f"contamination: Alpaca ({table.num_rows:,} rows) vs its {len(evals.ids)} seed tasks, "
                     f"{config.ngram}-grams", "ours_s": round(ours_s, 2), "baseline_s": round(base_s, 2),
             "ours_contaminated": len(ours), "baseline_contaminated": len(base), "same_decisions": ours == base}], []


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = alpaca_table()
    if args.rows:
        table = table.slice(0, args.rows)
    comparisons: list[dict[str, Any]] = []
    options: list[dict[str, Any]] = []
    steps: list[tuple[str, Callable[[], tuple[list, list]]]] = [
        ("near", lambda: compare_near("real Alpaca", table, default_bands=False)),
        ("near", lambda: compare_near(f"Alpaca + {args.planted} planted copies", planted_copies(table, args.planted),
                                      default_bands=True)),
        ("answers", lambda: compare_answer_groups(table)),
        ("contamination", lambda: compare_contamination(table)),
        ("semantic", lambda: compare_semantic(table, args.semantic_rows, args.sample)),
    ]
    ours_near(table.slice(0, 100), 0.8, 3, 128)  # imports and first calls out of the timings
    load_before = os.getloadavg()
    for name, step in steps:
        if name not in args.skip:
            rows, extra = step()
            comparisons += rows
            options += extra
    return {"benchmark": "dedup", "comparisons": comparisons, "options": options, "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()], "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "data": str(Path(ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data_52k.json.gz"))}
