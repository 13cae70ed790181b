"""Everything the dedup stage publishes, from its input tables: what `tasks/stages/dedup.py`'s build calls
after reading the tables from the store."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tasks.dedup.config import DedupConfig
from tasks.dedup.contamination import read_eval_sources
from tasks.dedup.decide import deduplicate
from tasks.dedup.report import report_markdown, similarity_png

REMOVED_COMPANION = "removed"
HISTOGRAM_FILE = "similarity.png"


@dataclass
class DedupOutputs:
    table: pa.Table
    companions: dict[str, pa.Table]
    stats: dict[str, Any]
    report: str
    files: dict[str, bytes] = field(default_factory=dict)


def run_dedup(conversations: pa.Table, config: DedupConfig, embeddings: pa.Table | None = None,
              scores: pa.Table | None = None) -> DedupOutputs:
    """The kept (or flagged) table, the `removed` companion, stats, the report with its histogram. The
    evaluation files are read (and a missing or unreadable one reported) before any other work."""
    evals, eval_stats = read_eval_sources(config.decontaminate)
    result = deduplicate(conversations, config, embeddings, scores, evals)
    png = similarity_png(result, config)
    stats = {**result.stats, "eval_sources": eval_stats}
    return DedupOutputs(result.table, {REMOVED_COMPANION: result.removed}, stats,
                        report_markdown(result, config.examples), {HISTOGRAM_FILE: png})
