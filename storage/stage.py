"""The stage contract, free of Prefect: key → store check → build → atomic publish.

A stage module (tasks/<stage>.py) declares a `StageDef` whose `build(ctx, **inputs)` reads its input
datasets, calls the stage's plain functions and returns a `StageOutput`. `run_stage` does the rest, the same
way for the CLI (no Prefect) and for the Prefect task wrapper in flows/stage.py.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from storage.keys import stage_key
from storage.store import DatasetRef, Store

log = logging.getLogger("sftflow")
FAIL_STAGE_ENV = "SFTFLOW_FAIL_STAGE"  # test hook: name of a stage that must fail (comma-separated)
# Marks a config field that does not change a stage's output (batch size, device): left out of the cache key.
NOT_IN_KEY = {"cache_key": False}


def key_params(params: Any) -> dict[str, Any]:
    """The parameters that make up a stage's key: a config section without its NOT_IN_KEY fields."""
    if not hasattr(params, "model_dump"):
        return dict(params or {})
    plain = params.model_dump(mode="json")
    for name, info in type(params).model_fields.items():
        if info.json_schema_extra == NOT_IN_KEY:
            plain.pop(name, None)
    return plain
SLOW_STAGE_ENV = "SFTFLOW_SLOW_STAGE"  # test hook: "stage:seconds,..." sleeps before building (to kill mid-run)


class Progress(Protocol):
    def __call__(self, total: int | None, description: str) -> Callable[[int], None]: ...


def terminal_progress(total: int | None, description: str) -> Callable[[int], None]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal unless SFTFLOW_PROGRESS=1)."""
    from tqdm.auto import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("SFTFLOW_PROGRESS") == "1")
    bar = tqdm(total=total, desc=description, unit="row", file=sys.stderr, disable=disable, leave=False)
    return bar.update


@dataclass
class StageOutput:
    """What a build returns. `table` may be an iterator of tables (streamed into shards); `stats` may be
    filled while it is consumed. Companions are published as datasets of their own (e.g. quarantine)."""

    table: pa.Table | Iterable[pa.Table] | None = None
    files: dict[str, bytes | str | Path] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    companions: dict[str, pa.Table] = field(default_factory=dict)
    report: str | None = None  # markdown shown as a Prefect artifact


@dataclass
class StageContext:
    store: Store
    key: str
    params: Any
    progress: Progress = terminal_progress
    log: logging.Logger = log


@dataclass(frozen=True)
class StageDef:
    name: str
    version: str
    build: Callable[..., StageOutput]
    # Extra key material derived from the parameters, e.g. a checksum of the source files an ingest reads.
    fingerprint: Callable[[Any], Mapping[str, Any]] | None = None

    def key(self, params: Any, inputs: Mapping[str, DatasetRef | None]) -> str:
        plain = key_params(params)
        if self.fingerprint is not None:
            plain = {"params": plain, "fingerprint": dict(self.fingerprint(params))}
        input_keys = {name: ref.key for name, ref in inputs.items() if ref is not None}
        return stage_key(self.name, self.version, plain, input_keys)


@dataclass
class StageResult:
    ref: DatasetRef
    status: str  # "ran" or "cached"
    seconds: float
    report: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def companion_key(key: str, name: str) -> str:
    return f"{key}-{name}"


def run_stage(
    stage: StageDef,
    params: Any,
    inputs: Mapping[str, DatasetRef | None],
    store: Store,
    *,
    force: bool = False,
    progress: Progress = terminal_progress,
) -> StageResult:
    started = time.perf_counter()
    key = stage.key(params, inputs)
    if stage.name in os.environ.get(FAIL_STAGE_ENV, "").split(","):
        raise RuntimeError(f"injected failure in stage {stage.name!r} ({FAIL_STAGE_ENV})")
    delays = dict(item.split(":") for item in os.environ.get(SLOW_STAGE_ENV, "").split(",") if ":" in item)
    if not force and store.verify(key):
        log.info("%s: %s already in the store", stage.name, key)
        manifest = store.manifest(key)
        return StageResult(store.ref(key), "cached", time.perf_counter() - started, stats=manifest.get("stats", {}))
    if stage.name in delays:
        time.sleep(float(delays[stage.name]))
    ctx = StageContext(store=store, key=key, params=params, progress=progress)
    output = stage.build(ctx, **{k: v for k, v in inputs.items()})
    manifest_fields = {
        "stage_version": stage.version,
        "params": params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params or {}),
        "inputs": {name: ref.key for name, ref in inputs.items() if ref is not None},
    }
    with store.writer(key, stage.name, replace=force, **manifest_fields) as writer:
        if output.table is not None:
            for part in [output.table] if isinstance(output.table, pa.Table) else output.table:
                writer.write(part)
        # companions after the table: a streamed table may fill them (e.g. the quarantine) while it is written
        for name, table in output.companions.items():
            ckey = companion_key(key, name)
            store.publish_table(ckey, f"{stage.name}.{name}", table, replace=force, of=key, **manifest_fields)
        for name, data in output.files.items():
            writer.add_file(name, data)
        if output.report:
            writer.add_file("report.md", output.report)
        # stats last: a streamed table fills them while it is written
        writer.fields["stats"] = output.stats
        writer.fields["companions"] = {name: companion_key(key, name) for name in output.companions}
    seconds = time.perf_counter() - started
    log.info("%s: published %s (%d rows) in %.1fs", stage.name, key, writer.rows, seconds)
    return StageResult(writer.ref, "ran", seconds, output.report, output.stats)
