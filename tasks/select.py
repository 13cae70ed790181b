"""The `select` stage: CaR's selection rule with a reason on every row, plus its report.

The rule: the n1 rows with the highest IQS score, then the n2 best rows of every cluster that are not already
taken (on Alpaca: top 1,000 cover 148 of 161 clusters, the cluster step adds 13). Ties are broken by id, so the
same inputs always give the same selection. A `budget` fixes the total instead: n1 becomes the largest value
whose selection, cluster rows included, fits; a token budget (`tokens`) does the same with each row's training
tokens, so that two rules can be compared at equal tokens (tasks/token_budget.py). Without scores the selection
is a cluster-only diversity sample: rows are taken round-robin across clusters, nearest to the centroid first.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.schema import CONVERSATION_SCHEMA
from tasks.errors import BadInputError
from tasks.explorer import EXPLORER_FILE
from tasks.figures import colormap, png, subplots
from tasks.token_budget import reachable_tokens

TOP_SCORE, CLUSTER_TOP, LISTED = "top_score", "cluster_top", "listed"  # LISTED: read from a file (tasks/listed.py)
EVERY_ROW = "every_row"  # the whole pool: the "train on everything" arm
ANSWER_GROUP = "answer_group"  # dedup's column: rows whose answers are near-identical share a group
SUMMARY_FILE = "selection_summary.json"
SELECTION_SCHEMA = pa.schema(list(CONVERSATION_SCHEMA) + [
    pa.field("selection_reason", pa.string()),
    pa.field("iqs_score", pa.float64()),
    pa.field("iqs_rank", pa.int64()),
    pa.field("cluster", pa.int32()),
])
UNSCORED_NOTE = ("No IQS scores (iqs.scorer is none): this is a cluster-only diversity sample. Rows are taken "
                 "round-robin across clusters, nearest to the centroid first; every row's reason is cluster_top.")


@dataclass
class Selection:
    rows: np.ndarray  # row indices, in selection order (best first)
    reasons: list[str]
    n1: int  # the n1 actually used (differs from the configured one under a budget)


def first_of_each_group(order: np.ndarray, groups: Sequence[str | None]) -> np.ndarray:
    """The priority order `order` (row indices, best first) without the rows that come after another row of
    their group; rows without a group (None) are all kept. This is how `select` takes at most one row of an
    answer group: the best of the group by its own priority."""
    order = np.asarray(order, dtype=np.int64)
    labels = np.asarray([g if g is not None else "" for g in groups], dtype=object)[order]
    grouped = labels != ""
    _, first = np.unique(labels[grouped], return_index=True)
    keep = ~grouped
    keep[np.flatnonzero(grouped)[first]] = True
    return order[keep]


def priority(ids: np.ndarray, clusters: np.ndarray, scores: np.ndarray | None,
             distances: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(order, cluster_rank): row indices best first, and each row's 0-based rank inside its cluster.

    With scores: by score, highest first, ties by id. Without: round-robin over clusters, each cluster's rows
    nearest to its centroid first (ties by id), so the first k rows cover every cluster once."""
    n = len(ids)
    if scores is not None:
        order = np.lexsort((ids, -scores))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        return order, _rank_within(clusters, position)
    if distances is None:
        raise ValueError("a selection without scores needs the distances to the centroids")
    within = np.lexsort((ids, distances))
    position = np.empty(n, dtype=np.int64)
    position[within] = np.arange(n)
    rank = _rank_within(clusters, position)
    return np.lexsort((ids, distances, rank)), rank


def _rank_within(clusters: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Rank of each row inside its cluster, ordered by `position` (smaller first)."""
    grouped = np.lexsort((position, clusters))
    sorted_clusters = clusters[grouped]
    starts = np.r_[0, np.flatnonzero(sorted_clusters[1:] != sorted_clusters[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(clusters)]))
    rank = np.empty(len(clusters), dtype=np.int64)
    rank[grouped] = np.arange(len(clusters)) - first
    return rank


def car_select(order: np.ndarray, cluster_rank: np.ndarray, n1: int, n2: int, budget: float | None = None,
               scored: bool = True, weights: np.ndarray | None = None) -> Selection:
    """CaR's rule over a priority order: the first n1 rows, then every row ranked < n2 inside its cluster. Under a
    `budget` of rows (or of `weights`, each row's training tokens: a token budget), n1 is the largest that fits."""
    n = len(order)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    tops = np.sort(position[cluster_rank < n2])  # positions of the cluster tops, in priority order
    if budget is None:
        n1 = min(n1, n)
    else:
        # held(m): the first m rows and the cluster tops beyond them: non-decreasing in m, so the largest m that fits
        weight = np.ones(n) if weights is None else np.asarray(weights, np.float64)[order]  # by position
        top_weight = weight[tops]
        beyond = np.r_[np.cumsum(top_weight[::-1])[::-1], 0.0]  # beyond[j]: what tops[j:] hold
        m = np.arange(n + 1)
        held = np.r_[0.0, np.cumsum(weight)] + beyond[np.searchsorted(tops, m, side="left")]
        fits = np.flatnonzero(held <= budget)
        n1 = int(fits[-1]) if len(fits) else 0
        if not len(fits):  # fewer rows than clusters to cover: the best cluster tops
            tops = tops[:np.searchsorted(np.cumsum(top_weight), budget, side="right")]
    chosen = np.union1d(np.arange(n1), tops)  # positions, sorted
    reasons = [TOP_SCORE if scored and p < n1 else CLUSTER_TOP for p in chosen]
    return Selection(order[chosen], reasons, n1)


def join_inputs(conversations: pa.Table, clusters: pa.Table, scored: pa.Table | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per conversation row: cluster, distance, score and rank (None without scores). Missing rows are errors."""
    ids = conversations.column("id")
    where = pc.index_in(ids, value_set=clusters.column("id"))
    if where.null_count:
        bad = int(np.flatnonzero(where.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInputError(f"{where.null_count} conversation(s) have no cluster; the first is id {ids[bad]} "
                            "(were the clusters computed on another dataset?)", row=bad, field="cluster")
    at = where.to_numpy(zero_copy_only=False)
    cluster = clusters.column("cluster").to_numpy(zero_copy_only=False)[at].astype(np.int64)
    distance = clusters.column("distance").to_numpy(zero_copy_only=False)[at].astype(np.float64)
    if scored is None:
        return cluster, distance, None, None
    where = pc.index_in(ids, value_set=scored.column("id"))
    at = where.to_numpy(zero_copy_only=False)
    score = np.full(len(ids), np.nan)
    present = ~where.is_null().to_numpy(zero_copy_only=False)
    score[present] = pc.cast(scored.column("iqs_score"), pa.float64()).to_numpy(zero_copy_only=False)[
        at[present].astype(np.int64)]
    missing = ~np.isfinite(score)
    if missing.any():
        bad = int(np.flatnonzero(missing)[0])
        raise BadInputError(f"{int(missing.sum())} row(s) have no usable iqs_score; the first is id {ids[bad]}. "
                            "Select with scores needs every row scored (or set iqs.scorer=none for a "
                            "cluster-only sample)", row=bad, field="iqs_score")
    rank = None
    if "iqs_rank" in scored.column_names:
        rank = pc.cast(scored.column("iqs_rank"), pa.int64()).to_numpy(zero_copy_only=False)[at.astype(np.int64)]
    return cluster, distance, score, rank


def select(conversations: pa.Table, clusters: pa.Table, scored: pa.Table | None, n1: int = 1000, n2: int = 1,
           budget: int | None = None, listed: np.ndarray | None = None, tokens: int | None = None,
           count_tokens: Callable[[pa.Table], np.ndarray] | None = None,
           every_row: bool = False) -> tuple[pa.Table, dict[str, Any]]:
    """The selected rows (all canonical columns + reason, score, rank, cluster) and the report summary.
    `listed`: the rows a file lists (tasks/listed.py), taken as they are instead of by CaR's rule. `tokens`: a
    token budget instead of `budget` (rows by the rule until they hold this many training tokens, as
    `count_tokens` counts them: tasks/token_budget.py). `every_row`: all of them (one of each answer group)."""
    if conversations.num_rows == 0:
        raise BadInputError("no conversations to select from", field="conversations")
    cluster, distance, score, rank = join_inputs(conversations, clusters, scored)
    ids = np.asarray(conversations.column("id").to_pylist())
    order, cluster_rank = priority(ids, cluster, score, distance)
    if listed is None and ANSWER_GROUP in conversations.column_names:  # dedup's answer groups: one row of each
        groups = conversations.column(ANSWER_GROUP).to_pylist()
        allowed = np.sort(first_of_each_group(order, groups))
        table, summary = select(conversations.drop_columns([ANSWER_GROUP]).take(pa.array(allowed)), clusters,
                                scored, n1, n2, budget, tokens=tokens, count_tokens=count_tokens,
                                every_row=every_row)
        summary["answer_group_rows_left_out"] = len(ids) - len(allowed)
        return table, summary
    if score is not None and rank is None:  # rank 1 = best, as the IQS stage writes it
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(1, len(ids) + 1)
    weights = None
    if listed is None and tokens is not None:
        weights = reachable_tokens(order, np.flatnonzero(cluster_rank < n2), tokens,
                                   lambda rows: count_tokens(conversations.take(pa.array(rows))))
        budget = tokens
    if listed is not None:
        chosen = Selection(listed, [LISTED] * len(listed), 0)
    elif every_row:
        chosen = Selection(order, [EVERY_ROW] * len(order), 0)
    else:
        chosen = car_select(order, cluster_rank, n1, n2, budget, scored=score is not None, weights=weights)
    take = pa.array(chosen.rows)
    table = conversations.select(CONVERSATION_SCHEMA.names).take(take)
    table = table.append_column(SELECTION_SCHEMA.field("selection_reason"), pa.array(chosen.reasons, pa.string()))
    table = table.append_column(SELECTION_SCHEMA.field("iqs_score"),
                                pa.nulls(len(chosen.rows), pa.float64()) if score is None
                                else pa.array(score[chosen.rows], pa.float64()))
    table = table.append_column(SELECTION_SCHEMA.field("iqs_rank"),
                                pa.nulls(len(chosen.rows), pa.int64()) if rank is None
                                else pa.array(rank[chosen.rows], pa.int64()))
    table = table.append_column(SELECTION_SCHEMA.field("cluster"), pa.array(cluster[chosen.rows], pa.int32()))
    summary = summarize(cluster, score, chosen, n1=n1, n2=n2, budget=None if tokens is not None else budget)
    if weights is not None:
        summary.update(token_budget=tokens, tokens=int(weights[chosen.rows].sum()))
    return table.cast(SELECTION_SCHEMA), summary


def summarize(cluster: np.ndarray, score: np.ndarray | None, chosen: Selection, *, n1: int, n2: int,
              budget: int | None) -> dict[str, Any]:
    reasons = np.asarray(chosen.reasons)
    top_rows, added_rows = chosen.rows[reasons == TOP_SCORE], chosen.rows[reasons == CLUSTER_TOP]
    ids, inverse, sizes = np.unique(cluster, return_inverse=True, return_counts=True)
    k = len(ids)
    selected = np.bincount(inverse[chosen.rows], minlength=k)
    by_score, added = np.bincount(inverse[top_rows], minlength=k), np.bincount(inverse[added_rows], minlength=k)
    if score is not None:
        best = np.full(k, -np.inf)
        np.maximum.at(best, inverse, score)
        mean = np.bincount(inverse, weights=score, minlength=k) / sizes
    per_cluster = []
    for i, c in enumerate(ids.tolist()):
        row = {"cluster": c, "size": int(sizes[i]), "selected": int(selected[i]), TOP_SCORE: int(by_score[i]),
               CLUSTER_TOP: int(added[i])}
        if score is not None:
            row["best_score"], row["mean_score"] = round(float(best[i]), 4), round(float(mean[i]), 4)
        per_cluster.append(row)
    return {
        "rows": len(cluster), "scored": score is not None, "clusters": k, "n1": n1, "n1_used": chosen.n1,
        "listed_rows": int((reasons == LISTED).sum()), "every_row": int((reasons == EVERY_ROW).sum()),
        "n2": n2, "budget": budget, "selected": len(chosen.rows), "top_score_rows": len(top_rows),
        "cluster_top_rows": len(added_rows), "clusters_covered_by_top": len(np.unique(cluster[top_rows])),
        "clusters_covered": len(np.unique(cluster[chosen.rows])),
        "score_threshold": round(float(score[top_rows].min()), 6) if score is not None and len(top_rows) else None,
        # only CaR's rule without scores is the round-robin; a file's list and every row are what they say
        "note": UNSCORED_NOTE if score is None and not np.isin(reasons, [LISTED, EVERY_ROW]).any() else None,
        "cluster_table": per_cluster,
    }


# -- report ------------------------------------------------------------------------------------------------
SUMMARY_ROWS = [("rows", "rows in"), ("clusters", "clusters"), ("n1_used", "n1 (top by score)"), ("n2", "n2"),
                ("budget", "budget"), ("selected", "selected"), ("listed_rows", "rows a file lists"),
                ("top_score_rows", "top_score rows"),
                ("cluster_top_rows", "rows added by the cluster step"),
                ("clusters_covered_by_top", "clusters covered by the top n1"),
                ("clusters_covered", "clusters covered in the end"), ("score_threshold", "lowest top-n1 score"),
                ("answer_group_rows_left_out", "rows left out as a second answer of an answer group")]
OPTIONAL_ROWS = [("token_budget", "token budget"), ("tokens_of", "the token budget of (a selection)"),
                 ("tokens", "training tokens selected"),
                 ("listed", "rows the file lists"), ("matched", "matched to a pool row"),
               ("matched_loosely", "of them matched loosely (Alpaca's prompt unwrapped, placeholder inputs)"),
               ("unmatched", "matched to no pool row (in the quarantine, with the reason)"),
               ("unreadable", "unreadable rows of the file")]


def report_markdown(summary: dict[str, Any], key: str | None = None, explorer: str | None = None) -> str:
    """The report of selection `key`; `explorer`: the URL the explorer page will have in the store."""
    lines = ["# select", ""]
    if summary["note"]:
        lines += [f"> **{summary['note']}**", ""]
    if summary.get("scorer"):
        lines += [f"Scores: the `{summary['scorer']}` scorer" +
                  (f" (model `{summary['scorer_model']}`)" if summary.get("scorer_model") else "") + ".", ""]
    lines += ["| | |", "|---|---:|"]
    lines += [f"| {label} | {'-' if summary.get(key) is None else summary[key]} |" for key, label in SUMMARY_ROWS]
    lines += [f"| {label} | {summary[key]} |" for key, label in OPTIONAL_ROWS if key in summary]
    if summary.get("dedup_removed"):
        lines += ["", "Before selection, dedup removed: " + ", ".join(f"{reason} {n}" for reason, n in
                                                                      summary["dedup_removed"].items()) + "."]
    columns = [c for c in ("cluster", "size", "selected", TOP_SCORE, CLUSTER_TOP, "best_score", "mean_score")
               if c in summary["cluster_table"][0]]
    lines += ["", "## Clusters (largest first)", "", "| " + " | ".join(columns) + " |",
              "|" + "---:|" * len(columns)]
    for row in sorted(summary["cluster_table"], key=lambda r: (-r["size"], r["cluster"])):
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    lines += ["", "Every number above is also in `selection_summary.json`; the figures follow."]
    if key and explorer:
        lines += ["", f"**Explore the selection** (the map, filters, each row's source): `sftflow select --explore "
                      f"{key}` opens [{EXPLORER_FILE}]({explorer})."]
    return "\n".join(lines) + "\n"


def plots(clusters: pa.Table, scored: pa.Table | None, selection: pa.Table) -> dict[str, bytes]:
    """The score histogram (distance to centroid without scores) with the selected rows marked, and the 2-D
    cluster map with the selected rows highlighted. One point per row of `clusters`."""

    ids = clusters.column("id")
    in_selection = pc.index_in(ids, value_set=selection.column("id"))
    chosen = np.flatnonzero(~in_selection.is_null().to_numpy(zero_copy_only=False))
    reasons = np.asarray(selection.column("selection_reason").to_pylist(), dtype=object)[
        in_selection.to_numpy(zero_copy_only=False)[chosen].astype(np.int64)]
    if scored is not None:
        at = pc.index_in(ids, value_set=scored.column("id")).to_numpy(zero_copy_only=False)
        values, value_name = pc.cast(scored.column("iqs_score"), pa.float64()).to_numpy()[at], "IQS score"
    else:
        values, value_name = clusters.column("distance").to_numpy().astype(np.float64), "distance to centroid"
    values = values[np.isfinite(values)] if len(values) else values
    fig, ax = subplots(figsize=(8, 4.5))
    bins = np.histogram_bin_edges(values, bins=60)
    ax.hist(values, bins=bins, color="#c8c8c8", label=f"all rows ({len(values):,})")
    parts = [(values[chosen[reasons == r]], r, c) for r, c in ((TOP_SCORE, "#d62728"), (CLUSTER_TOP, "#1f77b4"),
                                                                (LISTED, "#2ca02c"), (EVERY_ROW, "#9467bd"))
             if (reasons == r).any()]
    if parts:
        ax.hist([p for p, _, _ in parts], bins=bins, stacked=True, color=[c for _, _, c in parts],
                label=[f"selected: {r} ({len(p):,})" for p, r, _ in parts])
    ax.set_yscale("log")
    ax.set(xlabel=value_name, ylabel="rows (log)", title=f"{value_name}: all rows and the selection")
    ax.legend()
    histogram = png(fig, dpi=110)

    pc1, pc2 = clusters.column("pc1").to_numpy(), clusters.column("pc2").to_numpy()
    cluster = clusters.column("cluster").to_numpy()
    colors = colormap("tab20")(cluster % 20)
    fig, ax = subplots(figsize=(8, 7))
    dot = float(np.clip(8000 / max(len(pc1), 1), 2, 16))  # visible on small sets, not a blot on large ones
    ax.scatter(pc1, pc2, c=colors, s=dot, alpha=0.5, linewidths=0, rasterized=True)
    for reason, marker, size in ((TOP_SCORE, "o", 14), (CLUSTER_TOP, "*", 60), (LISTED, "o", 14), (EVERY_ROW, "o", 6)):
        rows = chosen[reasons == reason]
        if len(rows):
            ax.scatter(pc1[rows], pc2[rows], c=colors[rows], s=size, marker=marker, edgecolors="black",
                       linewidths=0.5, label=f"selected: {reason} ({len(rows):,})")
    ax.set(xlabel="PC1", ylabel="PC2", title=f"{len(np.unique(cluster))} clusters on the first two principal "
                                              "components (colours repeat every 20 clusters)")
    ax.legend(loc="best")
    cluster_map = png(fig, dpi=110)
    return {"score_histogram.png": histogram, "cluster_map.png": cluster_map}
