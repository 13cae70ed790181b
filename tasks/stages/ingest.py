"""`ingest`: the sources' conversations in one table, duplicates across sources dropped, counts summed."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput, companion_key
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.ingest.config import SourceConfig, sources_from_paths
from tasks.ingest.dedupe import IdSet
from tasks.ingest.quarantine import QUARANTINE_SCHEMA
from tasks.ingest.report import merged_counts, source_report

MERGE_BATCH = 50_000


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list)

    _paths_as_sources = field_validator("sources", mode="before")(sources_from_paths)


def build(ctx: StageContext, **source: DatasetRef) -> StageOutput:
    refs = [source[name] for name in sorted(source)]
    if not refs:
        raise BadInputError("no sources to ingest: list them under ingest.sources", field="ingest.sources")
    store = ctx.store
    per_source = [store.manifest(ref.key).get("stats", {}) for ref in refs]
    quarantine_tables = [store.read_table(companion_key(ref.key, "quarantine")).cast(QUARANTINE_SCHEMA)
                         for ref in refs]
    stats: dict[str, Any] = {
        "read": sum(s.get("read", 0) for s in per_source),
        "kept": 0,
        "quarantined": merged_counts(per_source, "quarantined"),
        "duplicates": sum(s.get("duplicates", 0) for s in per_source),
        "duplicates_across_sources": 0,
        "repairs": merged_counts(per_source, "repairs"),
        "skipped_messages": merged_counts(per_source, "skipped_messages"),
        "warnings": [f"{Path(s.get('uri', '')).name}: {w}" for s in per_source for w in s.get("warnings") or []],
        "sources": [{"key": ref.key, **{k: s.get(k) for k in ("uri", "format", "split", "read", "kept",
                                                              "quarantined", "duplicates", "revision", "repairs",
                                                              "warnings")}}
                    for ref, s in zip(refs, per_source)],
    }
    advance = ctx.progress(sum(ref.rows for ref in refs), "ingest: merge sources")

    def tables() -> Iterator[pa.Table]:
        seen = IdSet()
        for ref in refs:
            for batch in store.iter_batches(ref.key, MERGE_BATCH):
                first_time = seen.add_new(batch.column("id"))
                dropped = batch.num_rows - int(first_time.sum())
                stats["duplicates_across_sources"] += dropped
                stats["duplicates"] += dropped
                stats["kept"] += batch.num_rows - dropped
                advance(batch.num_rows)
                table = pa.Table.from_batches([batch])
                yield table.filter(first_time) if dropped else table

    return StageOutput(table=tables(), stats=stats, companions={"quarantine": pa.concat_tables(quarantine_tables)},
                       report=source_report(stats["sources"]))


# `**source`: every dataset the ingest.source calls of this pipeline publish
STAGE = Stage("ingest", "1", build, params=IngestConfig, section="ingest", output="conversations",
              description="merge the sources, drop duplicates across them")
