"""`select`: CaR's rule (top n1 by score + the top n2 of every cluster), a reason on every row (tasks/select.py)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.artifacts import Removed, ScoresMade
from tasks.explorer import EXPLORER_FILE, explorer_html
from tasks.select import SUMMARY_FILE, plots, report_markdown, select


class SelectConfig(Section):
    n1: int = Field(1000, ge=0, description="take the n1 rows with the highest IQS score")
    n2: int = Field(1, ge=0, description="then the n2 best of every cluster that are not already taken")
    budget: int | None = Field(None, ge=1, description="total rows: n1 becomes the largest value whose selection "
                                                       "(with the cluster rows) fits")

    @classmethod
    def exactly(cls, budget: int, rule: str, n2: int = 1) -> SelectConfig:
        """Parameters that select exactly `budget` rows: by CaR's rule (`car`: n1 the largest that fits with the
        best `n2` of every cluster), or the first `budget` of the order (`top`: by score, or round-robin over the
        clusters without scores)."""
        return cls(n1=budget, n2=n2, budget=budget) if rule == "car" else cls(n1=budget, n2=0)


def build(ctx: StageContext, conversations: DatasetRef, clusters: DatasetRef,
          scored: DatasetRef | None = None) -> StageOutput:
    params = ctx.params
    conv = ctx.store.read_table(conversations.key)
    clus = ctx.store.read_table(clusters.key, columns=["id", "cluster", "distance", "pc1", "pc2"])
    scores = ctx.store.read_table(scored.key) if scored is not None else None
    selection, summary = select(conv, clus, scores, params.n1, params.n2, params.budget)
    removed = Removed.read(ctx.store, conversations.key).by_reason
    if removed:  # the counts of the rows that never reached the selection
        summary["dedup_removed"] = removed
    if scored is not None:  # which scorer and model made the scores
        made = ScoresMade.read(ctx.store, scored.key)
        summary["scorer"], summary["scorer_model"] = made.scorer, made.model
    files = plots(clus, scores, selection)
    files[SUMMARY_FILE] = json.dumps(summary, indent=1)
    files[EXPLORER_FILE] = explorer_html(clus, selection, conv, scores, title=ctx.key)
    stats = {"rule": STAGE.description, **{k: v for k, v in summary.items() if k != "cluster_table"}}
    ctx.log.info("select: %d of %d rows (%d by score, %d added by the cluster step; top n1 covers %d of %d clusters)",
                 summary["selected"], summary["rows"], summary["top_score_rows"], summary["cluster_top_rows"],
                 summary["clusters_covered_by_top"], summary["clusters"])
    explorer = ctx.store.path(ctx.key, "files", EXPLORER_FILE)
    report = report_markdown(summary, ctx.key, Path(explorer).as_uri() if ctx.store.is_local else explorer)
    return StageOutput(table=selection, files=files, stats=stats, report=report)


STAGE = Stage("select", "1", build, params=SelectConfig, section="select", output="selection",
              description="CaR: the top n1 by score plus the top n2 of every cluster")
