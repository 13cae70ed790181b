"""Runs a flow's stage tasks in order and keeps the run table (ran / cached / failed / skipped).

A stage whose upstream failed is skipped, not attempted; the flow still ends Failed, so Prefect's
"retry flow run" re-runs it, and the persisted results of the stages that finished come back as Cached.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact

from storage.store import DatasetRef, Store
from tasks.errors import BadInputError


@dataclass
class StageRow:
    stage: str
    status: str  # ran, cached, failed, skipped
    rows_in: int | None
    rows_out: int | None
    seconds: float
    key: str | None
    error: str | None = None


class PipelineFailed(RuntimeError):
    def __init__(self, report: dict[str, Any]):
        failed = [row["stage"] for row in report["stages"] if row["status"] == "failed"]
        errors = "; ".join(row["error"] or "" for row in report["stages"] if row["status"] == "failed")
        super().__init__(f"stage(s) failed: {', '.join(failed)}: {errors}")
        self.report = report


def check_from_stage(from_stage: str | None, order: tuple[str, ...]) -> None:
    if from_stage is not None and from_stage not in order:
        raise BadInputError(f"not a stage of this flow ({', '.join(order)})", field=f"--from {from_stage}")


class StageTracker:
    def __init__(self, store: str, order: tuple[str, ...], from_stage: str | None = None):
        check_from_stage(from_stage, order)
        self.store, self.order, self.from_stage = store, order, from_stage
        self.rows: list[StageRow] = []
        self.started = datetime.now().astimezone()
        self.failed = False

    def forced(self, stage: str) -> bool:
        return self.from_stage is not None and self.order.index(stage) >= self.order.index(self.from_stage)

    def run(self, stage: str, task: Any, params: Any, inputs: Mapping[str, DatasetRef | None]) -> DatasetRef | None:
        """Run one stage task (submitted to the flow's task runner) and record how it went."""
        return self.run_many(stage, task, [(params, inputs)], label_items=False)[0]

    def run_many(self, stage: str, task: Any, calls: list[tuple[Any, Mapping[str, DatasetRef | None]]],
                 label_items: bool = True) -> list[DatasetRef | None]:
        """Submit several calls of one stage at once (e.g. one per source or shard), then wait for all."""
        force = self.forced(stage)
        runnable = task.with_options(refresh_cache=True) if force else task
        pending = []
        for i, (params, inputs) in enumerate(calls):
            label = f"{stage}[{i}]" if label_items else stage
            rows_in = sum(ref.rows for ref in inputs.values() if ref is not None) if inputs else None
            if self.failed or any(ref is None for ref in inputs.values()):
                pending.append((label, rows_in, None, 0.0))
                continue
            future = runnable.submit(params=params, store=self.store, inputs=dict(inputs), force=force)
            pending.append((label, rows_in, future, time.perf_counter()))
        refs = []
        for label, rows_in, future, began in pending:
            if future is None:
                self.rows.append(StageRow(label, "skipped", rows_in, None, 0.0, None))
                refs.append(None)
                continue
            future.wait()
            state = future.state
            seconds = round(time.perf_counter() - began, 2)
            if not state.is_completed():
                self.failed = True
                error = state.result(raise_on_failure=False)
                self.rows.append(StageRow(label, "failed", rows_in, None, seconds, None,
                                          f"{type(error).__name__}: {error}"))
                refs.append(None)
                continue
            ref: DatasetRef = state.result()
            self.rows.append(StageRow(label, self._status(state, ref), rows_in, ref.rows, seconds, ref.key))
            refs.append(ref)
        return refs

    def _status(self, state: Any, ref: DatasetRef) -> str:
        if state.name == "Cached":
            return "cached"
        created = datetime.fromisoformat(Store(ref.store).manifest(ref.key)["created"])
        # a Completed task may still have found the dataset in the store (published by an earlier run)
        return "ran" if created >= self.started.replace(microsecond=0) else "cached"

    def report(self) -> dict[str, Any]:
        return {"store": self.store, "ok": not self.failed, "stages": [asdict(row) for row in self.rows]}

    def finish(self, title: str) -> dict[str, Any]:
        """Publish the run table as a markdown artifact; raise if a stage failed (so the flow run fails)."""
        report = self.report()
        create_markdown_artifact(markdown_table(report, title), key="sft-pipeline-run",
                                 description="stage table of this run")
        if self.failed:
            raise PipelineFailed(report)
        return report


def markdown_table(report: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"store: `{report['store']}`", "",
             "| stage | status | rows in | rows out | seconds | key |", "|---|---|---:|---:|---:|---|"]
    for row in report["stages"]:
        lines.append(f"| {row['stage']} | {row['status']} | {_n(row['rows_in'])} | {_n(row['rows_out'])} | "
                     f"{row['seconds']:.1f} | `{row['key'] or ''}` |")
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
