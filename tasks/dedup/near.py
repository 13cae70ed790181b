"""Near-duplicates: MinHash-LSH candidates over the word shingles of the whole text (prompt and answer), kept
when the exact Jaccard of the shingle sets reaches the threshold both for the whole text and for the prompt
alone. A pair whose answers match but whose prompts differ (one long answer shared by several questions) is
not a duplicate: it is left to the answer groups (answers.py)."""
from __future__ import annotations

import numpy as np

from tasks.dedup.config import NearConfig
from tasks.dedup.features import RowFeatures
from tasks.dedup.groups import Pairs
from tasks.dedup.minhash import band_rows, lsh_pairs, signatures
from tasks.dedup.text import pair_jaccard


def near_duplicate_pairs(features: RowFeatures, config: NearConfig, eligible: np.ndarray) -> tuple[Pairs, dict]:
    """Pairs of eligible rows whose whole-text and prompt shingle sets both have a Jaccard >= threshold."""
    shingles = features.full_shingles
    bands, rows = band_rows(config.threshold, config.num_perm, config.bands)
    signature = signatures(shingles, config.num_perm, config.seed)
    candidates = lsh_pairs(signature, bands, rows, eligible & (shingles.lengths > 0))
    similarity = pair_jaccard(shingles, candidates)
    found = Pairs(candidates, similarity, len(candidates), similarity).where(similarity >= config.threshold)
    same_prompt = pair_jaccard(features.prompt_shingles, found.pairs) >= config.threshold
    stats = {"bands": bands, "rows_per_band": rows, "candidates": len(candidates),
             "prompts_differ": int((~same_prompt).sum())}
    return found.where(same_prompt), stats
