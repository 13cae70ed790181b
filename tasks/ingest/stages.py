"""The two ingest stages: `ingest.source` (one per source, cached on the source's content) and `ingest`
(concatenate the sources, drop duplicates across them, sum the counts and quarantines)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.stage import StageContext, StageDef, StageOutput, companion_key
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.ingest.dedupe import IdSet
from tasks.ingest.quarantine import QUARANTINE_SCHEMA
from tasks.ingest.revision import source_revision
from tasks.ingest.source import read_source

MERGE_BATCH = 50_000


def source_fingerprint(params: Any) -> Mapping[str, Any]:
    return {"content": source_revision(params.path)}


def build_source(ctx: StageContext) -> StageOutput:
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


def summary(stats: Mapping[str, Any]) -> str:
    quarantined = sum(stats["quarantined"].values())
    reasons = ", ".join(f"{r} {n}" for r, n in stats["quarantined"].items())
    repaired = stats.get("repairs", {}).get("conversations")
    return (f"read {stats['read']}, kept {stats['kept']}, quarantined {quarantined}"
            f"{f' ({reasons})' if reasons else ''}, duplicates {stats['duplicates']}"
            f"{f', repaired {repaired}' if repaired else ''}")


def source_report(sources: list[Mapping[str, Any]]) -> str:
    lines = ["| source | format | split | read | kept | quarantined | duplicates | repaired |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sources:
        quarantined = ", ".join(f"{r}: {n}" for r, n in s["quarantined"].items()) or "0"
        repairs = s.get("repairs") or {}
        repaired = ", ".join(f"{r}: {n}" for r, n in repairs.items() if r != "conversations")
        repaired = f"{repairs['conversations']} ({repaired})" if repaired else "0"
        lines.append(f"| {s['uri']} | {s['format']} | {s.get('split') or ''} | {s['read']} | {s['kept']} | "
                     f"{quarantined} | {s['duplicates']} | {repaired} |")
    warnings = [f"{Path(s['uri']).name}: {w}" for s in sources for w in s.get("warnings") or []]
    return "\n".join(lines + ([""] + [f"**Warning:** {w}" for w in warnings] if warnings else []))


def merged_counts(per_source: list[Mapping[str, Any]], name: str) -> dict[str, int]:
    """A per-source count dict (quarantined, repairs, skipped_messages) summed over the sources."""
    total: Counter[str] = Counter()
    for s in per_source:
        total.update(s.get(name) or {})
    return dict(sorted(total.items()))


def build_merge(ctx: StageContext, **inputs: DatasetRef) -> StageOutput:
    refs = [inputs[name] for name in sorted(inputs)]
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


SOURCE_STAGE = StageDef("ingest.source", "1", build_source, fingerprint=source_fingerprint)
MERGE_STAGE = StageDef("ingest", "1", build_merge)
