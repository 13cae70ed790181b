"""`ablation.report`: every evaluation of a selection ablation → the table selector x seed → loss per set, the
mean over seeds with its interval, the paired difference to the baseline selector, a bar chart and the plain
sentence (tasks/evaluate/report.py). Which evaluation is which (model, seed, set) is in its parameters, so the
key changes when a selector or seed is added. Not a pipeline stage: the selection-ablation flow plans it."""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from pydantic import Field

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.evaluate.loss import RowLosses
from tasks.evaluate.report import EvalRun, bar_chart_png, markdown_table, summarize_runs, verdict_sentence
from tasks.evaluate.stats import CONFIDENCE, RESAMPLES
from tasks.stages.eval_holdout import not_in_pipeline

REPORT_JSON, CHART = "ablation.json", "ablation.png"


class RunLabel(Section):
    input: str = Field(description="the `evaluation_…` input holding this run's evaluation")
    model: str = Field(description="the selector, or the base model's name")
    seed: int | None = Field(None, description="the training seed; empty for the base model")
    eval_set: str


class AblationReportParams(Section):
    runs: list[RunLabel] = Field(default_factory=list)
    baseline: str = Field("random", description="the selector every other one is compared with")
    resamples: int = Field(RESAMPLES, ge=100)
    confidence: float = Field(CONFIDENCE, gt=0, lt=1)


def training_facts(ctx: StageContext, evaluation: DatasetRef) -> dict[str, Any]:
    """What the evaluated adapter was trained on: the rows, steps and tokens it saw (none for the base model)."""
    adapter = ctx.store.manifest(evaluation.key).get("stats", {}).get("adapter")
    if adapter is None:
        return {"adapter": None, "train_rows": None, "train_steps": None, "train_tokens": None}
    stats = ctx.store.manifest(adapter).get("stats", {})
    return {"adapter": adapter, "train_rows": stats.get("train_rows"), "train_steps": stats.get("steps"),
            "train_tokens": stats.get("tokens_seen")}


def build(ctx: StageContext, **evaluation: DatasetRef) -> StageOutput:
    params: AblationReportParams = ctx.params
    runs, rows = [], []
    for run in params.runs:
        if run.input not in evaluation:
            raise BadInputError(f"run {run.model}/{run.seed} on {run.eval_set} names the input {run.input!r}, which "
                                "is not given", field="runs")
        ref = evaluation[run.input]
        losses = RowLosses.from_table(ctx.store.read_table(ref.key))
        runs.append(EvalRun(run.model, run.seed, run.eval_set, losses))
        rows.append({"model": run.model, "seed": run.seed, "eval_set": run.eval_set, "evaluation": ref.key,
                     "loss": losses.mean_loss, "rows": len(losses), "tokens": int(losses.tokens.sum()),
                     **training_facts(ctx, ref)})
    summary = summarize_runs(runs, baseline=params.baseline, resamples=params.resamples,
                             confidence=params.confidence)
    sentence = verdict_sentence(summary)
    trained = [r for r in rows if r["adapter"]]
    report = "\n".join(["# Selection ablation: did the selection help?", "", f"**{sentence}**", "",
                        markdown_table(summary), "", "## Training runs", "",
                        "| model | seed | rows | steps | tokens seen | adapter |", "|---|---:|---:|---:|---:|---|",
                        *dict.fromkeys(f"| {r['model']} | {r['seed']} | {r['train_rows']} | {r['train_steps']} | "
                                       f"{r['train_tokens']} | `{r['adapter']}` |" for r in trained)])
    files = {REPORT_JSON: json.dumps({"sentence": sentence, "summary": summary, "runs": rows}, indent=1),
             CHART: bar_chart_png(summary)}
    return StageOutput(table=pa.Table.from_pylist(rows), files=files, report=report,
                       stats={"sentence": sentence, "runs": len(rows)})


STAGE = Stage("ablation.report", "1", build, params=AblationReportParams, output="ablation", plan=not_in_pipeline,
              description="the selection ablation's table, paired differences to random, chart and verdict")
