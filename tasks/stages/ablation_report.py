"""`ablation.report`: every evaluation of a selection ablation → the table selector x seed → loss per set, the
mean over seeds with its interval, the paired difference to the baseline selector, a bar chart and the plain
sentence (tasks/evaluate/report.py). Which evaluation is which (model, seed, set) is in its parameters, so the
key changes when a selector or seed is added. Not a pipeline stage: the selection-ablation flow plans it."""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pyarrow as pa
from pydantic import Field

from storage.params import WHEN_SET, Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.artifacts import Adapter, Built, Evaluation
from tasks.errors import BadInputError
from tasks.evaluate.loss import RowLosses
from tasks.evaluate.report import EvalRun, bar_chart_png, markdown_table, summarize_runs, verdict_sentence
from tasks.evaluate.stats import CONFIDENCE, RESAMPLES

REPORT_JSON, CHART, JUDGED_CHART = "ablation.json", "ablation.png", "judged.png"


class RunLabel(Section):
    input: str = Field(description="the `evaluation_…` input holding this run's evaluation")
    model: str = Field(description="the selector, or the base model's name")
    seed: int | None = Field(None, description="the training seed; empty for the base model")
    eval_set: str


class JudgedLabel(Section):
    input: str = Field(description="the `evaluation_…` input holding a judge step's verdicts")
    model: str = Field(description="the arm whose answers were judged against the baseline arm's")
    seed: int
    prompt_set: str
    baseline: str | None = Field(None, json_schema_extra=WHEN_SET,
                                 description="the arm it was judged against (empty: the report's baseline)")


class AblationReportParams(Section):
    runs: list[RunLabel] = Field(default_factory=list)
    baseline: str = Field("random", description="the selector every other one is compared with")
    resamples: int = Field(RESAMPLES, ge=100)
    confidence: float = Field(CONFIDENCE, gt=0, lt=1)
    judged: list[JudgedLabel] | None = Field(None, json_schema_extra=WHEN_SET,
                                            description="judge steps: each arm's answers against the baseline's")


SCORING_STAGES = ("iqs.train", "iqs")  # a selector's scoring cost: its scorer's training and scoring


def training_facts(ctx: StageContext, evaluation: DatasetRef) -> dict[str, Any]:
    """What the evaluated adapter was trained on (rows, steps, tokens, learning rate) and what its chain cost:
    minutes of training, and of scoring (its scorer's training and scoring, from the manifests up the lineage;
    what every selector shares, the embeddings and the pool, is not counted). None for the base model."""
    key = Evaluation.read(ctx.store, evaluation.key).adapter
    if key is None:
        return dict.fromkeys(("adapter", "train_rows", "train_steps", "train_tokens", "learning_rate",
                              "train_minutes", "counted_from_step", "scoring_minutes", "selection_minutes",
                              "train_peak_mb"))
    adapter = Adapter.read(ctx.store, key)
    stats = adapter.stats
    scoring, selection = lineage_seconds(ctx, adapter.tokenized.key)
    return {"adapter": key, "train_rows": stats.get("train_rows"), "train_steps": stats.get("steps"),
            "train_tokens": stats.get("tokens_seen"), "learning_rate": adapter.params.get("learning_rate"),
            # the training loop's seconds, a resumed run's whole; a checkpoint written before counts were kept
            # (manifests without counted_from_step) gives the time and tokens since its step only
            "train_minutes": minutes(stats.get("train_seconds", adapter.build_seconds)),
            "counted_from_step": stats.get("counted_from_step", stats.get("resumed_from_step")),
            "scoring_minutes": minutes(scoring), "selection_minutes": minutes(selection),
            "train_peak_mb": stats.get("peak_rss_mb")}  # None for a training made before peaks were recorded


def lineage_seconds(ctx: StageContext, tokenized: str) -> tuple[float | None, float | None]:
    """The build seconds up a training set's lineage (format → select → iqs → iqs.train) of its scoring steps (0
    for a selector that reads no scores) and of its selection; None where a manifest predates the record."""
    total, selection, frontier, seen = 0.0, None, [tokenized], set()
    while frontier:
        key = frontier.pop()
        if key in seen or not ctx.store.verify(key):
            continue
        seen.add(key)
        built = Built.read(ctx.store, key)
        if built.stage == "select":
            selection = built.build_seconds
        if built.stage in SCORING_STAGES and total is not None:
            total = None if built.build_seconds is None else total + built.build_seconds
        if built.stage in ("format", "select", *SCORING_STAGES):
            frontier += list(built.inputs.values())
    return total, selection


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 2)


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
                        "| model | seed | rows | steps | tokens seen | learning rate | training min | scoring min "
                        "| selection min | training peak MB | adapter |",
                        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
                        *dict.fromkeys(f"| {r['model']} | {r['seed']} | {r['train_rows']} | {r['train_steps']} | "
                                       f"{r['train_tokens']}{since(r)} | {r['learning_rate']} | "
                                       f"{r['train_minutes']}{since(r)} | {r['scoring_minutes']} | "
                                       f"{r['selection_minutes']} | "
                                       f"{peak_mb(r)} | `{r['adapter']}` |"
                                       for r in trained),
                        "", "Scoring minutes: the selector's scorer, trained and run once, shared by its seeds "
                        "(and by selectors on the same scorer); the embeddings and the pool every selector shares "
                        "are not counted. Training minutes: the training loop, a resumed run's before and after "
                        "its resume."])
    files = {CHART: bar_chart_png(summary)}
    judged = judged_section(ctx, params, evaluation, summary) if params.judged else None
    if judged is not None:
        report += "\n\n" + judged["markdown"]
        files[JUDGED_CHART] = judged.pop("chart")
    files[REPORT_JSON] = json.dumps({"sentence": sentence, "summary": summary, "runs": rows,
                                     **({"judged": {k: v for k, v in judged.items() if k != "markdown"}}
                                        if judged else {})}, indent=1)
    return StageOutput(table=pa.Table.from_pylist(rows), files=files, report=report,
                       stats={"sentence": sentence, "runs": len(rows),
                              **({"judged": judged["table"], "judged_sentence": judged["sentence"]}
                                 if judged else {})})


def peak_mb(run: dict[str, Any]) -> str:
    return f"{run['train_peak_mb']:,.0f}" if run.get("train_peak_mb") else "-"


def since(run: dict[str, Any]) -> str:
    """The mark of a run resumed from a checkpoint that kept no counts: its figures start at that step."""
    step = run.get("counted_from_step")
    return f" (since step {step})" if step is not None else ""


def step_cost(ctx: StageContext, key: str) -> tuple[float | None, float | None]:
    """(minutes, peak RSS MB) of one step, a gathered step's parts included (the engine sums them into its
    build seconds, whichever run built them); None where a manifest predates the record."""
    manifest = ctx.store.manifest(key)
    return minutes(manifest.get("build_seconds")), manifest.get("stats", {}).get("peak_rss_mb")


def answering_costs(ctx: StageContext, params: AblationReportParams, evaluation: dict[str, DatasetRef]
                    ) -> list[dict[str, Any]]:
    """Per judged arm run and prompt set: minutes and peak memory of generating its answers (and the baseline's,
    which several arms may share), and minutes of judging them."""
    rows = []
    for label in params.judged:
        judged = Built.read(ctx.store, evaluation[label.input].key)
        answer_min, answer_mb = step_cost(ctx, judged.inputs["answers"])
        baseline_min, baseline_mb = step_cost(ctx, judged.inputs["baseline"])
        rows.append({"model": label.model, "seed": label.seed, "prompt_set": label.prompt_set,
                     "against": label.baseline or params.baseline,
                     "generation_minutes": answer_min, "generation_peak_mb": answer_mb,
                     "baseline_generation_minutes": baseline_min, "judging_minutes": minutes(judged.build_seconds)})
    return rows


def costs_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["## What answering and judging cost", "",
             "| arm | seed | prompt set | generation min | generation peak MB | against | its generation min | "
             "judging min |", "|---|---:|---|---:|---:|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['seed']} | {r['prompt_set']} | {r['generation_minutes']} | "
              f"{peak_mb({'train_peak_mb': r['generation_peak_mb']})} | {r['against']} | "
              f"{r['baseline_generation_minutes']} | {r['judging_minutes']} |" for r in rows]
    return "\n".join(lines)


def judged_section(ctx: StageContext, params: AblationReportParams, evaluation: dict[str, DatasetRef],
                   summary: dict[str, Any]) -> dict[str, Any]:
    """The judged table (win rates with intervals, length-controlled, winning scores, lengths), whether its order
    of arms is the loss order, the judge and its report card, a chart and side-by-side answers."""
    from tasks.evaluate.judged import judged_table
    from tasks.evaluate.judged_report import judged_markdown, side_by_side, side_by_side_markdown, win_rate_chart_png

    judgements, first_stats, tables = defaultdict(list), None, {}
    for label in params.judged:
        ref = evaluation[label.input]
        table = ctx.store.read_table(ref.key)
        against = label.baseline or params.baseline
        tables[(label.model, label.seed, label.prompt_set, against)] = table
        first_stats = first_stats or ctx.store.manifest(ref.key)["stats"]
        judgements[against].append(judgement(label, table))
    rows = [row for against, found in judgements.items()
            for row in judged_table(found, against, params.resamples, params.confidence)]
    losses = {m["model"]: m["summary"]["loss"]["estimate"] for m in summary["eval_sets"][0]["models"]
              if m["trained"]}
    (model, seed, prompt_set, against), table = next(iter(tables.items()))  # the first arm's first judgement
    shown = side_by_side(table, (model, seed, prompt_set), against,
                         {other: found for (m, s, p, other), found in tables.items()
                          if (m, s, p) == (model, seed, prompt_set) and other != against})
    made = judged_markdown(rows, losses, params.baseline, first_stats, summary["eval_sets"][0]["name"])
    costs = answering_costs(ctx, params, evaluation)
    return {"table": rows, "sentence": made["sentence"], "order": made["order"], "costs": costs,
            "judge": {k: first_stats.get(k) for k in ("judge", "judged_by", "card")}, "side_by_side": shown,
            "markdown": made["markdown"] + "\n\n" + costs_markdown(costs) + "\n\n"
                        + side_by_side_markdown(shown),
            "chart": win_rate_chart_png(rows, params.confidence)}


def judgement(label: JudgedLabel, table: pa.Table) -> Any:
    import numpy as np

    from tasks.evaluate.judged import Judgement

    verdict = np.asarray([np.nan if v is None else v for v in table.column("verdict").to_pylist()], np.float64)
    return Judgement(label.model, label.seed, label.prompt_set, table.column("prompt_id").to_pylist(), verdict,
                     table.column("first_chars").to_numpy().astype(np.float64),
                     table.column("second_chars").to_numpy().astype(np.float64))


STAGE = Stage("ablation.report", "7", build, params=AblationReportParams, output="ablation",
              description="the selection ablation's table, paired differences to random, chart and verdict")
