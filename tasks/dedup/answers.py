"""Answer groups: rows whose answers are near-identical (word-set Jaccard of the normalized answers) while their
prompts differ, e.g. MedicationQA, where one section of a drug page answers several questions. They stay in
the data, flagged with one group id, and select takes at most one row of a group.

The same test exempts a pair from semantic removal: a pair whose answers match but whose prompts do not is an
answer pair, never a semantic duplicate (nor a near-duplicate, whose prompts must match), so the rules never
disagree about a pair.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tasks.dedup.config import AnswerGroupConfig
from tasks.dedup.features import RowFeatures
from tasks.dedup.groups import Pairs, components
from tasks.dedup.minhash import band_rows, lsh_pairs, signatures
from tasks.dedup.text import pair_jaccard


def long_answers(features: RowFeatures, config: AnswerGroupConfig) -> np.ndarray:
    return features.answer_words.lengths >= config.min_words


def answer_pairs(features: RowFeatures, pairs: np.ndarray, config: AnswerGroupConfig,
                 prompt_threshold: float) -> np.ndarray:
    """Which pairs are answer pairs: both answers long enough, their word sets >= the threshold, and their
    prompts' shingle sets below `prompt_threshold` (the near-duplicate threshold)."""
    mask = np.zeros(len(pairs), dtype=bool)
    if not config.enabled or not len(pairs):
        return mask
    long = long_answers(features, config)
    maybe = np.flatnonzero(long[pairs[:, 0]] & long[pairs[:, 1]])
    if len(maybe):
        same_answer = pair_jaccard(features.answer_words, pairs[maybe]) >= config.threshold
        maybe = maybe[same_answer]
    if len(maybe):
        mask[maybe[pair_jaccard(features.prompt_shingles, pairs[maybe]) < prompt_threshold]] = True
    return mask


def answer_groups(features: RowFeatures, config: AnswerGroupConfig, eligible: np.ndarray, rank: np.ndarray
                  ) -> tuple[list[str | None], Pairs, dict[str, Any]]:
    """(group id per row: the id of the group's first row by priority, None outside a group; the verified
    pairs; stats). Groups are connected components of the verified pairs."""
    eligible = eligible & long_answers(features, config)
    bands, rows = band_rows(config.threshold, config.num_perm)
    signature = signatures(features.answer_words, config.num_perm)
    candidates = lsh_pairs(signature, bands, rows, eligible)
    similarity = pair_jaccard(features.answer_words, candidates)
    found = Pairs(candidates, similarity, len(candidates), similarity).where(similarity >= config.threshold)
    labels: list[str | None] = [None] * features.rows
    sizes: list[int] = []
    if len(found.pairs):
        component = components(features.rows, found.pairs)
        members = np.unique(found.pairs)
        by_group = members[np.lexsort((rank[members], component[members]))]
        starts = np.r_[0, np.flatnonzero(np.diff(component[by_group])) + 1]
        for group in np.split(by_group, starts[1:]):
            head = features.ids[group[0]]
            sizes.append(len(group))
            for row in group.tolist():
                labels[row] = head
    stats = {"candidates": len(candidates), "pairs": len(found.pairs), "groups": len(sizes),
             "rows_in_groups": int(sum(sizes)), "largest_group": max(sizes, default=0),
             "bands": bands, "rows_per_band": rows}
    return labels, found, stats
