"""The stage contract, free of Prefect: one `Stage` declaration per stage, and `run_stage`.

A stage module (tasks/stages/<name>.py) declares `STAGE = Stage(...)`: its name, version, parameter model,
tags, optional requirements and a plain `build(ctx, **inputs) -> StageOutput` over datasets of the store.
Its inputs are `build`'s parameters after `ctx`: each names the dataset it reads (another stage's `output`);
one with a default of None is optional; a `**name` parameter takes every dataset of a fan-out stage whose
output is `name` (e.g. the ingest merge takes every `source`). Which stages a flow runs, in which order, is
its recipe (flows/recipes.py): an input reads the nearest earlier producer of its dataset. Everything else is
derived from the declaration: the Prefect task (flows/stage.py), the wiring and `--from` order (flows/plan.py),
the config schema (flows/config.py) and `sftflow stage NAME` (flows/cli/stage.py).

`run_stage` owns one run of a stage: key → store check → build in a scratch folder → atomic publish →
scratch removed; it returns whether the stage ran or came from the store. A long stage (one that declares
`part_rows`) builds in row-range parts of its `shard_input`, each published under its own key as it finishes,
then gathers them: a crash or `kill -9` loses only the part in flight, and the same command again finds the
finished parts in the store.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from storage.home import work_root
from storage.keys import stage_key
from storage.memory import PeakRSS
from storage.params import key_params
from storage.store import DatasetRef, Store

log = logging.getLogger("sftflow")
# Called with (stage, ctx) before every build; empty in production. Tests register fault injection here
# (tests/fault_injection.py, loaded as a plugin in the processes they start).
BUILD_HOOKS: list[Callable[[Stage, StageContext], None]] = []


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
    filled while it is consumed. Companions are published as datasets of their own (e.g. quarantine).
    PNG files are also shown as figures in the stage's report."""

    table: pa.Table | Iterable[pa.Table] | None = None
    files: dict[str, bytes | str | Path] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    companions: dict[str, pa.Table] = field(default_factory=dict)
    report: str | None = None  # markdown, shown as a Prefect artifact and stored as files/report.md


@dataclass
class StageContext:
    store: Store
    key: str
    params: Any
    progress: Progress = terminal_progress
    log: logging.Logger = log
    work: Path = field(default_factory=work_root)
    shard: tuple[int, int] | None = None  # (i, n): this run builds the i-th of n row ranges of `shard_input`
    # what the key holds beyond the parameters, as the plan read it: the build computes what the key says (the
    # precision a setting resolved to where the plan was made, not where this runs)
    fingerprint: Mapping[str, Any] | None = None
    memory_gb: float | None = None  # resources.memory_gb: the budget to size batches to (None: the process's limit)

    @cached_property
    def scratch(self) -> Path:
        """This run's scratch folder: the same for every attempt at this key (a retry finds its checkpoints),
        removed once the output is published."""
        folder = self.work / self.key
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@dataclass(frozen=True)
class Input:
    name: str
    optional: bool = False
    many: bool = False  # a `**name` parameter: every dataset a fan-out stage named `name` produces


@dataclass(frozen=True)
class Requirement:
    """An optional package a stage needs, and how to install it."""

    module: str
    install: str

    def missing(self) -> bool:
        return importlib.util.find_spec(self.module) is None


@dataclass(frozen=True)
class Call:
    """One run of a stage that a pipeline configuration asks for (see `Stage.calls`)."""

    params: Any
    label: str | None = None  # the run table's name for it; the stage name when None
    inputs: Mapping[str, str] = field(default_factory=dict)  # inputs the configuration gives: store keys
    # inputs read from one producer of the recipe, by its label, where several make the dataset (an evaluation
    # of the held-out rows reads `eval.holdout`, not the last `eval.set`)
    reads: Mapping[str, str] = field(default_factory=dict)
    shards: int = 1  # > 1: the stage runs as this many row-range parts side by side, then one gather step


@dataclass(frozen=True)
class Stage:
    name: str
    version: str
    build: Callable[..., StageOutput]
    params: Any  # the parameter model: a pydantic class, or a type pydantic validates (a discriminated union)
    section: str | None = None  # the pipeline config section its parameters come from
    output: str | None = None  # the dataset name other stages' inputs use; the stage name when None
    tags: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()
    retries: int = 2
    description: str = ""
    # Extra key material derived from the parameters, e.g. a checksum of the source files an ingest reads (None
    # from it: nothing beyond the parameters for these).
    fingerprint: Callable[[Any], Mapping[str, Any] | None] | None = None
    # How a config runs this stage where a recipe lists it: its calls, for a fan-out (one per source) or none
    # (nothing to do with this config: no scorer, no destination). Default: one call with the config's
    # `section`, or the parameter model's defaults without one (its `shards` field, if any, splits it).
    plan: Callable[[Any], list[Call]] | None = None
    # The optional inputs a configuration reads (None: every one a recipe offers), e.g. the scorer's needs.
    reads: Callable[[Any], Iterable[str]] | None = None
    # A plugin stage's place in the recipes: after this stage (the end of the sft recipe when None).
    after: str | None = None
    # A stage that can run in row-range parts names the input it splits (it reads only `ctx.shard`'s rows of
    # it); `gather(ctx, **part)` merges the parts into the stage's output (default: their rows in order).
    shard_input: str | None = None
    gather: Callable[..., StageOutput] | None = None
    # Rows of `shard_input` per part when the stage runs in one process (a function of the parameters where the
    # pace depends on them, e.g. the scorer); None: one piece. Sized so that a part is about a minute of work.
    part_rows: int | Callable[[Any], int | None] | None = None
    # A stage whose work also lands outside the store (export's files): `(store, key, params) -> bool`, whether
    # that work is still there; a stored output is reused only when it is (see `reusable`).
    present_outside: Callable[[Store, str, Any], bool] | None = None

    @property
    def dataset(self) -> str:
        return self.output or self.name

    @cached_property
    def inputs(self) -> tuple[Input, ...]:
        found = []
        for i, p in enumerate(inspect.signature(self.build).parameters.values()):
            if i == 0:
                continue  # ctx
            if p.kind is p.VAR_KEYWORD:
                found.append(Input(p.name, many=True))
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                found.append(Input(p.name, optional=p.default is not p.empty))
        return tuple(found)

    def input(self, name: str) -> Input | None:
        """The declared input `name` takes (an element `source_003` of a `**source` input included)."""
        for item in self.inputs:
            if item.name == name or (item.many and name.startswith(f"{item.name}_")):
                return item
        return None

    def calls(self, config: Any) -> list[Call]:
        if self.plan is not None:
            return self.plan(config)
        params = getattr(config, self.section) if self.section is not None else self.parse_params({})
        return [Call(params, shards=getattr(params, "shards", 1) if self.shard_input else 1)]

    def wants(self, name: str, params: Any) -> bool:
        """Whether this configuration reads the input `name` (a required input always)."""
        item = self.input(name)
        return item is not None and (not item.optional or self.reads is None or item.name in set(self.reads(params)))

    def rows_per_part(self, params: Any) -> int | None:
        return self.part_rows(params) if callable(self.part_rows) else self.part_rows

    def gathered(self) -> Stage:
        """The step that merges this stage's parts: the same name, version and output, reading every part."""
        return replace(self, build=self.gather or concat_parts, plan=None, shard_input=None, gather=None,
                       fingerprint=None, requires=(), part_rows=None, reads=None)

    @cached_property
    def _adapter(self) -> TypeAdapter:
        return TypeAdapter(self.params)

    def parse_params(self, data: Any) -> Any:
        """Parameters from plain data (YAML, --set); raises pydantic's ValidationError."""
        return self._adapter.validate_python(data)

    def dump_params(self, params: Any) -> dict[str, Any]:
        return self._adapter.dump_python(params, mode="json") if params is not None else {}

    def fingerprint_of(self, params: Any) -> dict[str, Any] | None:
        """What the key holds beyond the parameters (a source's checksum), read now; None without one."""
        found = self.fingerprint(params) if self.fingerprint is not None else None
        return dict(found) if found is not None else None

    def key(self, params: Any, input_keys: Mapping[str, str | None], shard: tuple[int, int] | None = None,
            fingerprint: Mapping[str, Any] | None = None) -> str:
        """The store key; `fingerprint`: the one read already (fingerprint_of), else it is read here."""
        plain: Any = key_params(params, self.name)
        if fingerprint is None and self.fingerprint is not None:
            fingerprint = self.fingerprint_of(params)
        if fingerprint is not None:
            plain = {"params": plain, "fingerprint": dict(fingerprint)}
        if shard is not None:
            plain = {"params": plain, "shard": list(shard)}
        return stage_key(self.name, self.version, plain, {n: k for n, k in input_keys.items() if k is not None})


@dataclass
class StageResult:
    ref: DatasetRef
    status: str  # "ran" or "cached"
    seconds: float
    rows_in: int | None = None  # the rows of its main input (`main_input`), not a sum over unrelated inputs
    stats: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    figures: dict[str, bytes] = field(default_factory=dict)  # the PNG files of a run, for the report


def reusable(stage: Stage, params: Any, store: Store, key: str) -> bool:
    """A complete copy of the output in the store and, for a stage that also writes outside it, that work still
    where it wrote it: a cache hit is never trusted blindly."""
    return store.verify(key) and (stage.present_outside is None or stage.present_outside(store, key, params))


def main_input_rows(stage: Stage, inputs: Mapping[str, DatasetRef | None]) -> int | None:
    """The rows of a stage's main input, its first declared one that is given (every dataset of a `**name`
    input summed: the sources of ingest, the parts of a gather); None for a stage without inputs."""
    for item in stage.inputs:
        given = [ref for name, ref in inputs.items() if ref is not None and stage.input(name) is item]
        if given:
            return sum(ref.rows for ref in given)
    return None


def companion_key(key: str, name: str) -> str:
    return f"{key}-{name}"


def input_keys(inputs: Mapping[str, DatasetRef | None]) -> dict[str, str | None]:
    return {name: ref.key if ref is not None else None for name, ref in inputs.items()}


def concat_parts(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    """The default gather of a sharded stage: the parts' rows in part order, their stats merged."""
    refs = [part[name] for name in sorted(part)]

    def tables() -> Iterable[pa.Table]:
        for ref in refs:
            for batch in ctx.store.iter_batches(ref.key):
                yield pa.Table.from_batches([batch])

    return StageOutput(table=tables(), stats=merged_stats([ctx.store.manifest(ref.key).get("stats", {})
                                                           for ref in refs]))


def merged_stats(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One stats record for parts of one stage: what every part says alike, counts summed, each part listed."""
    merged: dict[str, Any] = {}
    for name in dict.fromkeys(k for stats in parts for k in stats):
        values = [stats.get(name) for stats in parts]
        if name in SUMMED_STATS and all(isinstance(v, int | float) for v in values):
            merged[name] = round(sum(values), 2) if isinstance(sum(values), float) else sum(values)
        elif all(v == values[0] for v in values):
            merged[name] = values[0]
    if isinstance(merged.get("rows"), int) and merged.get("seconds"):
        merged["rows_per_s"] = round(merged["rows"] / merged["seconds"], 1)
    return {**merged, "parts": list(parts)}


def padding_share(tokens: int, padded_tokens: int) -> float:
    """The share of computed positions that were padding (0 when nothing was counted)."""
    return round(1 - tokens / padded_tokens, 4) if padded_tokens else 0.0


SUMMED_STATS = frozenset({"rows", "seconds", "truncated", "tokens", "padded_tokens"})


def figures_markdown(figures: Mapping[str, bytes], inline: bool) -> str:
    """The figures of a report: data URIs (`inline`, which the Prefect UI renders) or links to the files."""
    import base64

    parts = []
    for name, png in figures.items():
        target = f"data:image/png;base64,{base64.b64encode(png).decode()}" if inline else name
        parts.append(f"![{name.removesuffix('.png')}]({target})")
    return "\n\n".join(parts)


def validation_message(exc: ValidationError, hidden: frozenset[str] = frozenset()) -> tuple[str, str | None]:
    """(message, field) of a pydantic error, the field named when there is one problem; `hidden` location parts
    (a discriminated union's tags) are left out of the field."""
    problems = [(".".join(str(p) for p in e["loc"] if p not in hidden), f"{e['msg']} (got {repr(e.get('input'))[:60]})")
                for e in exc.errors()]
    if len(problems) == 1:
        return problems[0][1], problems[0][0] or None
    return "; ".join(f"{loc}: {what}" for loc, what in problems), None


def run_stage(
    stage: Stage,
    params: Any,
    inputs: Mapping[str, DatasetRef | None],
    store: Store,
    *,
    key: str | None = None,
    force: bool = False,
    progress: Progress = terminal_progress,
    shard: tuple[int, int] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    memory_gb: float | None = None,
) -> StageResult:
    """Run `stage` once (or its part `shard` of a row range): its dataset from the store if a complete copy is
    there (unless `force`), else built and published. `key` is the one the caller already computed, from
    `fingerprint` (recorded in the manifest; read here when not given). `memory_gb`: the memory budget the build
    sizes its batches to (storage/memory.py); its peak resident memory goes in the stats."""
    started = time.perf_counter()
    if key is None:
        fingerprint = fingerprint if fingerprint is not None else stage.fingerprint_of(params)
        key = stage.key(params, input_keys(inputs), shard, fingerprint)
    rows_in = main_input_rows(stage, inputs)
    if not force and reusable(stage, params, store, key):
        log.info("%s: %s already in the store", stage.name, key)
        return StageResult(store.ref(key), "cached", time.perf_counter() - started, rows_in,
                           store.manifest(key).get("stats", {}))
    fingerprint = fingerprint if fingerprint is not None else stage.fingerprint_of(params)
    ctx = StageContext(store=store, key=key, params=params, progress=progress, shard=shard, fingerprint=fingerprint,
                       memory_gb=memory_gb)
    peak = PeakRSS().__enter__()  # until the stats are written: a streamed table builds while it is written
    parts_seconds, parts_peak_mb = 0.0, 0.0  # the parts' own cost, whichever run built them
    own_start = started
    try:
        parts = _parts(stage, params, inputs, shard)
        if parts > 1:
            made = _run_parts(stage, params, inputs, store, parts, force, progress, fingerprint, memory_gb)
            parts_seconds, parts_peak_mb = parts_cost([store.manifest(ref.key) for ref in made.values()])
            own_start = time.perf_counter()
            output = (stage.gather or concat_parts)(ctx, **made)
        else:
            for hook in BUILD_HOOKS:
                hook(stage, ctx)
            output = stage.build(ctx, **{k: v for k, v in inputs.items()})
        figures = {name: data for name, data in output.files.items()
                   if name.endswith(".png") and isinstance(data, bytes)}
        manifest_fields = {"stage_version": stage.version, "params": stage.dump_params(params),
                           "inputs": {n: k for n, k in input_keys(inputs).items() if k is not None},
                           **({"shard": list(shard)} if shard else {}),
                           **({"fingerprint": fingerprint} if fingerprint is not None else {})}
        # a stage that also writes outside the store replaces its record: it must describe the files just written
        overwrite = force or stage.present_outside is not None
        with store.writer(key, stage.name, replace=overwrite, **manifest_fields) as writer:
            if output.table is not None:
                for part in [output.table] if isinstance(output.table, pa.Table) else output.table:
                    writer.write(part)
            # companions after the table: a streamed table may fill them (e.g. the quarantine) while it is written
            for name, table in output.companions.items():
                ckey = companion_key(key, name)
                store.publish_table(ckey, f"{stage.name}.{name}", table, replace=overwrite, of=key,
                                    **manifest_fields)
            for name, data in output.files.items():
                writer.add_file(name, data)
            if output.report:
                stored = output.report + ("\n\n" + figures_markdown(figures, inline=False) if figures else "")
                writer.add_file("report.md", stored)
            # stats last: a streamed table fills them while it is written
            peak.__exit__()
            output.stats.update(peak.stats())
            if parts_peak_mb:  # a part built by an earlier run may have peaked higher
                output.stats["peak_rss_mb"] = max(output.stats.get("peak_rss_mb") or 0.0, parts_peak_mb)
            writer.fields["stats"] = output.stats
            writer.fields["companions"] = {name: companion_key(key, name) for name in output.companions}
            # what the output cost to make: a gathered output's parts included, also those of a run cut short
            writer.fields["build_seconds"] = round(parts_seconds + time.perf_counter() - own_start, 2)
    finally:
        peak.__exit__()  # read already when the stats were written; on a failure, the sampler stops here
    if "scratch" in ctx.__dict__:  # published: the scratch folder has served its purpose
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    if parts > 1:  # gathered into the output: the parts have served theirs
        for ref in made.values():
            store.delete(ref.key)
    seconds = time.perf_counter() - started
    log.info("%s: published %s (%d rows) in %.1fs", stage.name, key, writer.rows, seconds)
    if seconds >= 1.0:  # a build that short leaves no peak worth a collection (~0.1 s with torch loaded)
        release_memory()
    return StageResult(writer.ref, "ran", seconds, rows_in, output.stats, output.report, figures)


def release_memory() -> None:
    """Hand what a build freed back to the OS. A flow runs its stages in worker threads, and glibc keeps each
    thread's freed peak in that thread's malloc arena: measured, four trainings of SmolLM2-135M in four threads
    held 11.5 GB after the last one; with this after each, 0.9 GB (an ablation had reached 17 GB)."""
    import ctypes
    import gc

    gc.collect()  # cycles (a Trainer and its callbacks) still hold tensors until collected
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator returns memory its own way
        pass


def parts_cost(manifests: list[Mapping[str, Any]]) -> tuple[float, float]:
    """The parts' build seconds summed (each part's own, in whichever run built it) and their highest peak MB."""
    peaks = [m.get("stats", {}).get("peak_rss_mb") or 0.0 for m in manifests]
    return sum(m.get("build_seconds") or 0.0 for m in manifests), max(peaks)


def _parts(stage: Stage, params: Any, inputs: Mapping[str, DatasetRef | None], shard: tuple[int, int] | None) -> int:
    """How many row-range parts this run builds in (1: one piece). A part of a sharded plan is one piece."""
    size = stage.rows_per_part(params) if shard is None and stage.shard_input else None
    source = inputs.get(stage.shard_input) if size else None
    return math.ceil(source.rows / size) if source is not None and source.rows > size else 1


def _run_parts(stage: Stage, params: Any, inputs: Mapping[str, DatasetRef | None], store: Store, parts: int,
               force: bool, progress: Progress, fingerprint: Mapping[str, Any] | None,
               memory_gb: float | None) -> dict[str, DatasetRef]:
    """Every part, each published under its own key as it finishes (or found in the store from an earlier run
    that was cut short), one progress bar over all of them."""
    total = inputs[stage.shard_input].rows
    bar: list[Callable[[int], None]] = []

    def shared(_total: int | None, description: str) -> Callable[[int], None]:
        if not bar:
            bar.append(progress(total, description))
        return bar[0]

    refs: dict[str, DatasetRef] = {}
    for i in range(parts):
        result = run_stage(stage, params, inputs, store, force=force, progress=shared, shard=(i, parts),
                           fingerprint=fingerprint, memory_gb=memory_gb)
        if result.status == "cached":
            shared(total, stage.name)(result.ref.rows)
            log.info("%s: part %d/%d found in the store (%s)", stage.name, i + 1, parts, result.ref.key)
        refs[f"part_{i:03d}"] = result.ref
    return refs
