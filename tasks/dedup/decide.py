"""The dedup decisions for a whole table: contamination, then near-duplicates, then semantic duplicates (each
on the rows the rules before it left), then answer groups on the rows that stay.

Output: the kept table (canonical columns + `answer_group`; in `flag` mode every row, with the decision columns
too) and the removed table (canonical columns + `reason`, `kept_id`, `similarity`, `eval_source`). Counts add
up: rows in = kept + removed by reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.schema import CONVERSATION_SCHEMA
from tasks.dedup.answers import answer_groups, answer_pairs
from tasks.dedup.config import DedupConfig
from tasks.dedup.contamination import Contaminated, EvalRows, contaminated_rows
from tasks.dedup.features import RowFeatures
from tasks.dedup.groups import Pairs, greedy_removal, priority_rank
from tasks.dedup.near import near_duplicate_pairs
from tasks.dedup.semantic import semantic_pairs
from tasks.errors import BadInputError

NEAR, SEMANTIC, CONTAMINATED = "near_duplicate", "semantic_duplicate", "contaminated"
REASONS = (NEAR, SEMANTIC, CONTAMINATED)
ANSWER_GROUPS = "answer_groups"
DECISION_FIELDS = [
    pa.field("reason", pa.string()),  # near_duplicate, semantic_duplicate, contaminated; null: the row stays
    pa.field("kept_id", pa.string()),  # the kept row it duplicates, or the evaluation row it overlaps
    pa.field("similarity", pa.float64()),  # Jaccard, cosine, or the share of the evaluation row's n-grams
    pa.field("eval_source", pa.string()),  # uri#row of the evaluation row (contaminated rows only)
]
GROUP_FIELD = pa.field("answer_group", pa.string())  # id of the group's first row by priority; null: no group
KEPT_SCHEMA = pa.schema(list(CONVERSATION_SCHEMA) + [GROUP_FIELD])
FLAGGED_SCHEMA = pa.schema(list(CONVERSATION_SCHEMA) + DECISION_FIELDS + [GROUP_FIELD])
REMOVED_SCHEMA = pa.schema(list(CONVERSATION_SCHEMA) + DECISION_FIELDS)


@dataclass
class Decisions:
    """Per row: why it goes (None: it stays), the row or evaluation row it matches, how closely."""

    reason: np.ndarray
    kept_id: np.ndarray
    similarity: np.ndarray
    eval_source: np.ndarray

    @classmethod
    def none(cls, n: int) -> Decisions:
        return cls(np.full(n, None, dtype=object), np.full(n, None, dtype=object), np.full(n, np.nan),
                   np.full(n, None, dtype=object))

    def set(self, rows: np.ndarray, reason: str, kept_id: Any, similarity: np.ndarray,
            eval_source: Any = None) -> None:
        self.reason[rows] = reason
        self.kept_id[rows] = kept_id
        self.similarity[rows] = similarity
        self.eval_source[rows] = eval_source

    @property
    def alive(self) -> np.ndarray:
        return np.equal(self.reason, None)


@dataclass
class DedupResult:
    table: pa.Table  # kept rows (remove mode) or every row (flag mode)
    removed: pa.Table  # the -removed companion (empty in flag mode)
    stats: dict[str, Any]
    features: RowFeatures
    decisions: Decisions
    answer_group: list[str | None]
    evals: EvalRows
    # similarities for the histogram: near candidates' Jaccard, each row's nearest cosine, answer candidates'
    similarities: dict[str, np.ndarray] = field(default_factory=dict)


def aligned_column(conversations: pa.Table, other: pa.Table, column: str, what: str) -> pa.ChunkedArray:
    """`other[column]` in the conversations' row order; a conversation missing from `other` is bad input."""
    ids = conversations.column("id")
    where = pc.index_in(ids, value_set=other.column("id"))
    if where.null_count:
        bad = int(np.flatnonzero(where.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInputError(f"{where.null_count} conversation(s) have no {what}; the first is id {ids[bad]} "
                            f"(computed on another dataset?)", row=bad, field=column)
    return other.column(column).take(where)


def score_array(conversations: pa.Table, scores: pa.Table) -> np.ndarray:
    values = pc.cast(aligned_column(conversations, scores, "iqs_score", "IQS score"), pa.float64())
    out = values.to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise BadInputError(f"id {conversations.column('id')[bad]} has no usable iqs_score", row=bad,
                            field="iqs_score")
    return out


def check_inputs(conversations: pa.Table, config: DedupConfig, embeddings: pa.Table | None) -> None:
    missing = [c for c in ("id", "messages") if c not in conversations.column_names]
    if missing:
        raise BadInputError(f"the conversation table has no column {missing[0]!r}", field=missing[0])
    if config.semantic.enabled and embeddings is None and conversations.num_rows:
        raise BadInputError("dedup.semantic.enabled needs the embed stage's embeddings (or set it to false)",
                            field="dedup.semantic.enabled")


def deduplicate(conversations: pa.Table, config: DedupConfig, embeddings: pa.Table | None = None,
                scores: pa.Table | None = None, evals: EvalRows | None = None) -> DedupResult:
    check_inputs(conversations, config, embeddings)
    matrix = None
    if config.semantic.enabled and conversations.num_rows:
        from tasks.embed import embedding_matrix

        matrix = embedding_matrix(aligned_column(conversations, embeddings, "embedding", "embedding"),
                                  conversations.column("id").to_pylist())
    score = score_array(conversations, scores) if scores is not None and conversations.num_rows else None
    features = RowFeatures(conversations, config.near.shingle)
    rank = priority_rank(features.ids, features.answer_lengths, score)
    decisions = Decisions.none(features.rows)
    evals = evals or EvalRows([], [], [], [])
    rules: dict[str, dict[str, Any]] = {}  # what each rule looked at and found
    similarities: dict[str, np.ndarray] = {}

    if evals.ids and features.rows:
        found, rules[CONTAMINATED] = contaminated_rows(features, evals, config.contamination)
        apply_contamination(decisions, found, evals)
    if config.near.enabled and features.rows:
        pairs, rules[NEAR] = near_duplicate_pairs(features, config.near, decisions.alive)
        similarities[NEAR] = pairs.candidate_similarity
        rules[NEAR].update(remove_duplicates(decisions, pairs, NEAR, features.ids, rank))
    if config.semantic.enabled and features.rows:
        pairs, rules[SEMANTIC], nearest = semantic_pairs(matrix, config.semantic, decisions.alive, config.device)
        similarities[SEMANTIC] = nearest[np.isfinite(nearest)]
        exempt = answer_pairs(features, pairs.pairs, config.answer_groups, config.near.threshold)
        rules[SEMANTIC]["answer_pairs_left_to_groups"] = int(exempt.sum())
        rules[SEMANTIC].update(remove_duplicates(decisions, pairs.where(~exempt), SEMANTIC, features.ids, rank))
    groups: list[str | None] = [None] * features.rows
    if config.answer_groups.enabled and features.rows:
        groups, pairs, rules[ANSWER_GROUPS] = answer_groups(features, config.answer_groups, decisions.alive, rank)
        similarities[ANSWER_GROUPS] = pairs.candidate_similarity
    table, removed = output_tables(conversations, decisions, groups, config.mode)
    counts = {reason: int(np.sum(decisions.reason == reason)) for reason in REASONS}
    stats = {"rows": features.rows, "kept": features.rows - sum(counts.values()), "removed": counts,
             "answer_groups": rules.get(ANSWER_GROUPS, {}).get("groups", 0),
             "rows_in_answer_groups": rules.get(ANSWER_GROUPS, {}).get("rows_in_groups", 0),
             "rows_out": table.num_rows, "mode": config.mode,
             "priority": "iqs_score" if score is not None else "longest answer", "rules": rules}
    return DedupResult(table, removed, stats, features, decisions, groups, evals, similarities)


def apply_contamination(decisions: Decisions, found: Contaminated, evals: EvalRows) -> None:
    ids, sources = np.asarray(evals.ids, dtype=object), np.asarray(evals.sources, dtype=object)
    decisions.set(found.rows, CONTAMINATED, ids[found.eval_rows], found.similarity, sources[found.eval_rows])


def remove_duplicates(decisions: Decisions, pairs: Pairs, reason: str, ids: list[str], rank: np.ndarray) -> dict:
    rows, kept, similarity = greedy_removal(pairs.pairs, pairs.similarity, rank)
    decisions.set(rows, reason, np.asarray(ids, dtype=object)[kept], similarity)
    return {"pairs": len(pairs.pairs), "removed": len(rows)}


def output_tables(conversations: pa.Table, decisions: Decisions, groups: list[str | None], mode: str
                  ) -> tuple[pa.Table, pa.Table]:
    base = conversations.select(CONVERSATION_SCHEMA.names).cast(CONVERSATION_SCHEMA)
    columns = [pa.array(decisions.reason, pa.string()), pa.array(decisions.kept_id, pa.string()),
               pa.array(np.where(np.isfinite(decisions.similarity), decisions.similarity, np.nan),
                        pa.float64(), mask=~np.isfinite(decisions.similarity)),
               pa.array(decisions.eval_source, pa.string())]
    with_decisions = pa.Table.from_arrays(base.columns + columns, schema=REMOVED_SCHEMA)
    if mode == "flag":
        flagged = with_decisions.append_column(GROUP_FIELD, pa.array(groups, pa.string()))
        return flagged, REMOVED_SCHEMA.empty_table()
    alive = decisions.alive
    kept = base.filter(pa.array(alive)).append_column(
        GROUP_FIELD, pa.array([g for g, a in zip(groups, alive) if a], pa.string()))
    removed = with_decisions.filter(pa.array(~alive))
    return kept.cast(KEPT_SCHEMA), removed
