"""The dedup stage's parts: contamination, near-duplicates, semantic duplicates and answer groups.

config (DedupConfig) → text (normalized words, shingles, exact Jaccard) and features (per-row views) →
the rules: contamination, near (MinHash-LSH, minhash.py), semantic (faiss), answers (answer groups) →
groups (which row stays) → decide (`deduplicate`: the decisions and the output tables) → report →
run (`run_dedup`: what the stage publishes).
"""
from tasks.dedup.config import DedupConfig
from tasks.dedup.contamination import EvalRows, eval_fingerprint, read_eval_sources
from tasks.dedup.decide import KEPT_SCHEMA, REMOVED_SCHEMA, DedupResult, deduplicate
from tasks.dedup.report import report_markdown, similarity_png
from tasks.dedup.run import DedupOutputs, run_dedup

__all__ = ["KEPT_SCHEMA", "REMOVED_SCHEMA", "DedupConfig", "DedupOutputs", "DedupResult", "EvalRows",
           "deduplicate", "eval_fingerprint", "read_eval_sources", "report_markdown",
           "run_dedup", "similarity_png"]
