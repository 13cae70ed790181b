"""Runs a plan's steps as Prefect tasks and keeps the run table (ran / cached / failed / skipped).

A step is submitted as soon as every step it reads has finished, so independent steps (the sources, the base
model beside the embeddings, the selectors of an ablation) run side by side on the flow's task runner. A step
whose upstream failed is skipped, not attempted; the flow still ends Failed, so Prefect's "retry flow run"
re-runs it, and the persisted results of the steps that finished come back as Cached.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed

from flows.plan import Plan, Step
from flows.stage import stage_task
from storage.stage import StageResult
from storage.store import DatasetRef


@dataclass
class StageRow:
    stage: str
    status: str  # ran, cached, failed, skipped
    rows_in: int | None
    rows_out: int | None
    seconds: float
    key: str | None
    error: str | None = None
    peak_rss_mb: float | None = None  # the process's peak while the step built (the build's, for a cached step)


class PipelineFailed(RuntimeError):
    def __init__(self, report: dict[str, Any]):
        failed = [row["stage"] for row in report["stages"] if row["status"] == "failed"]
        errors = "; ".join(row["error"] or "" for row in report["stages"] if row["status"] == "failed")
        super().__init__(f"stage(s) failed: {', '.join(failed)}: {errors}")
        self.report = report


@dataclass
class Run:
    """The outcome of running a plan: the table, and each finished step's result (by label)."""

    store: str
    rows: list[StageRow]
    results: dict[str, StageResult]

    @property
    def ok(self) -> bool:
        return all(row.status in ("ran", "cached") for row in self.rows)

    def ref(self, label: str) -> DatasetRef:
        return self.results[label].ref

    def report(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "stages": [asdict(row) for row in self.rows]}


def run_plan(plan: Plan, from_stage: str | None = None) -> Run:
    """Run every step (the steps of `from_stage` and all their readers forced to build again)."""
    forced = plan.descendants(from_stage) if from_stage else set()
    store = plan.store.url
    results: dict[Step, StageResult] = {}
    rows: dict[Step, StageRow] = {}
    running: dict[Any, tuple[Step, float]] = {}
    waiting = list(plan.steps)
    while waiting or running:
        for step in list(waiting):
            upstream = step.upstream
            if any(up in rows and rows[up].status in ("failed", "skipped") for up in upstream):
                rows[step] = StageRow(step.label, "skipped", None, None, 0.0, None)
                waiting.remove(step)
            elif all(up in results for up in upstream):
                future = _submit(step, results, store, force=step in forced, memory_gb=plan.memory_gb)
                running[future] = (step, time.perf_counter())
                waiting.remove(step)
        if not running:
            continue
        future = next(as_completed(list(running)))
        step, began = running.pop(future)
        rows[step], result = _outcome(step, future, time.perf_counter() - began)
        if result is not None:
            results[step] = result
    return Run(store, [rows[step] for step in plan.steps], {step.label: r for step, r in results.items()})


def _submit(step: Step, results: dict[Step, StageResult], store: str, force: bool, memory_gb: float | None) -> Any:
    inputs = {name: results[v].ref if isinstance(v, Step) else _stored(store, v) for name, v in step.inputs.items()}
    task = stage_task(step.stage)
    if force:
        task = task.with_options(refresh_cache=True)
    return task.submit(params=step.params, store=store, inputs=inputs, key=step.key, force=force, shard=step.shard,
                       fingerprint=step.fingerprint, memory_gb=memory_gb)


def _stored(store: str, key: str) -> DatasetRef:
    from storage.store import Store

    return Store(store).ref(key)


def _outcome(step: Step, future: Any, seconds: float) -> tuple[StageRow, StageResult | None]:
    future.wait()  # done: this sets its final state (as_completed only saw the worker finish)
    state = future.state
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        return StageRow(step.label, "failed", None, None, round(seconds, 2), None,
                        f"{type(error).__name__}: {error}"), None
    result: StageResult = state.result()
    # a result Prefect's cache returned was persisted when the step ran, so its own status says "ran"
    status = "cached" if state.name == "Cached" else result.status
    return StageRow(step.label, status, result.rows_in, result.ref.rows, round(seconds, 2), result.ref.key,
                    peak_rss_mb=result.stats.get("peak_rss_mb")), result


def publish_table(run: Run, title: str, artifact: str) -> dict[str, Any]:
    """The run table as a markdown artifact; raises PipelineFailed (so the flow run fails) when a step failed."""
    report = run.report()
    create_markdown_artifact(markdown_table(report, title), key=artifact, description="stage table of this run")
    if not run.ok:
        raise PipelineFailed(report)
    return report


def markdown_table(report: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"store: `{report['store']}`", "",
             "| stage | status | rows in | rows out | seconds | peak MB | key |", "|---|---|---:|---:|---:|---:|---|"]
    for row in report["stages"]:
        peak = round(row["peak_rss_mb"]) if row["peak_rss_mb"] else None
        lines.append(f"| {row['stage']} | {row['status']} | {_n(row['rows_in'])} | {_n(row['rows_out'])} | "
                     f"{row['seconds']:.1f} | {_n(peak)} | `{row['key'] or ''}` |")
    counts = Counter(row["status"] for row in report["stages"])
    lines += ["", ", ".join(f"{counts[s]} {s}" for s in ("ran", "cached", "failed", "skipped") if counts[s])]
    last = next((row for row in reversed(report["stages"]) if row["key"]), None)
    if last is not None:
        lines += ["", f"Output: `{report['store'].rstrip('/')}/{last['key']}` ({_n(last['rows_out'])} rows); "
                      f"inspect any dataset with `sftflow store show KEY`."]
    failed = [row for row in report["stages"] if row["error"]]
    lines += [""] + [f"**{row['stage']} failed:** {row['error']}" for row in failed]
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
