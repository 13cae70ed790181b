"""Helpers shared by the ingest tests: read one source completely, write small files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.schema import CONVERSATION_SCHEMA
from tasks.ingest import read_source
from tasks.stages.ingest_source import SourceConfig


def ingest(path: str | Path, batch_rows: int = 20_000, **config: Any) -> tuple[pa.Table, dict[str, Any], pa.Table]:
    """(records, stats, quarantine) of one source, checking that the counts add up."""
    reading = read_source(SourceConfig(path=str(path), **config), batch_rows=batch_rows)
    table = pa.concat_tables(list(reading.tables))
    stats = reading.stats
    assert table.schema.equals(CONVERSATION_SCHEMA)
    assert stats["read"] == stats["kept"] + sum(stats["quarantined"].values()) + stats["duplicates"]
    assert table.num_rows == stats["kept"]
    return table, stats, reading.quarantine.table()


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, records: Any) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def messages(table: pa.Table, index: int = 0) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in table.column("messages")[index].as_py()]
