"""`ingest.source`: one source (a file, a URL, an hf: dataset) → canonical conversations + quarantine.

One call per entry of `ingest.sources`, run side by side; each is keyed on the source's content, so an
unchanged file is a cache hit and a changed one is read again.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.stage import Call, Stage, StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.ingest.config import SourceConfig
from tasks.ingest.report import source_report, summary
from tasks.ingest.revision import source_revision
from tasks.ingest.source import read_source


def fingerprint(params: SourceConfig) -> Mapping[str, Any]:
    """The source's content: a missing source is bad input here, before any stage runs."""
    try:
        return {"content": source_revision(params.path)}
    except FileNotFoundError:
        raise BadInputError("source not found", file=params.path, field="ingest.sources") from None


def plan(config: Any) -> list[Call]:
    return [Call(source, label=f"ingest[{i}]") for i, source in enumerate(config.ingest.sources)]


def build(ctx: StageContext) -> StageOutput:
    params = ctx.params
    name = Path(params.path).name if not params.path.startswith("hf:") else params.path
    reading = read_source(params, progress=ctx.progress)
    companions: dict[str, pa.Table] = {}
    output = StageOutput(stats=reading.stats, companions=companions)

    def tables() -> Iterator[pa.Table]:
        yield from reading.tables
        # run_stage publishes companions after the table is consumed, so the quarantine is complete here
        companions["quarantine"] = reading.quarantine.table()
        output.report = source_report([reading.stats])
        ctx.log.info("ingest %s: %s", name, summary(reading.stats))

    output.table = tables()
    return output


STAGE = Stage("ingest.source", "1", build, params=SourceConfig, output="source", fingerprint=fingerprint, plan=plan,
              description="read one source into canonical conversations (+ quarantine)")
