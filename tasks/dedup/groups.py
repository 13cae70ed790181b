"""Which row of a duplicate group stays, and answer groups as connected components.

Removal is greedy in priority order (best first): a row is removed when one of its verified duplicates ranks
better and stays; it points to the best-matching such row. So every removed row duplicates a row that is kept
(at the rule's threshold, never through a chain of pairs), and no two kept rows are a verified pair.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Pairs:
    """Verified pairs of row indices (i < j) and their similarity, plus what the search looked at."""

    pairs: np.ndarray
    similarity: np.ndarray
    candidates: int
    candidate_similarity: np.ndarray  # every candidate's exact similarity (for the histogram)

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros((0, 2), dtype=np.int64), np.zeros(0), 0, np.zeros(0))

    def where(self, keep: np.ndarray) -> Pairs:
        return Pairs(self.pairs[keep], self.similarity[keep], self.candidates, self.candidate_similarity)


def priority_rank(ids: Sequence[str], answer_lengths: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """rank[i]: 0 for the row that stays first. With scores: highest score first; else the longest answer
    (in characters) first; ties by id."""
    ids = np.asarray(ids, dtype=object)
    key = -scores if scores is not None else -np.asarray(answer_lengths, dtype=np.float64)
    order = np.lexsort((ids, key))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def greedy_removal(pairs: np.ndarray, similarity: np.ndarray, rank: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(removed rows, the kept row each duplicates, their similarity), removed rows in priority order.

    `pairs` are verified duplicate pairs of row indices; rows in no pair stay."""
    if not len(pairs):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    better_first = rank[pairs[:, 0]] < rank[pairs[:, 1]]
    better = np.where(better_first, pairs[:, 0], pairs[:, 1])
    worse = np.where(better_first, pairs[:, 1], pairs[:, 0])
    # the worse rows in priority order, each with its better partners most similar first
    order = np.lexsort((rank[better], -similarity, rank[worse]))
    removed: dict[int, tuple[int, float]] = {}
    current, settled = -1, False
    for w, b, s in zip(worse[order].tolist(), better[order].tolist(), similarity[order].tolist()):
        if w != current:
            current, settled = w, False
        if settled or b in removed:
            continue
        removed[w] = (b, s)  # the first partner that stays is the most similar one
        settled = True
    rows = np.fromiter(removed, dtype=np.int64, count=len(removed))
    kept = np.fromiter((k for k, _ in removed.values()), dtype=np.int64, count=len(removed))
    sims = np.fromiter((s for _, s in removed.values()), dtype=np.float64, count=len(removed))
    return rows, kept, sims


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of every row (rows in no pair are their own component)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]
