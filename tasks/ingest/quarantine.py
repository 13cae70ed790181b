"""Rows that cannot be used: why, where, and a raw excerpt, collected into the quarantine companion table."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa

EXCERPT_CHARS = 300

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),
        pa.field("row", pa.int64()),  # the same 0-based row / line number as the record's source.row
        pa.field("field", pa.string()),
        pa.field("reason", pa.string()),  # a short code, counted in the stats: empty_user, malformed_json, ...
        pa.field("detail", pa.string()),  # the human explanation
        pa.field("excerpt", pa.string()),  # the start of the raw row
    ]
)


class Rejected(Exception):
    """A row (or one conversation of it) that cannot become a record; it goes to the quarantine."""

    def __init__(self, reason: str, field: str | None = None, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.field, self.detail = reason, field, detail


class Unreadable(Rejected):
    """A row the reader could not even decode (bad JSON, invalid UTF-8); `raw` is what it saw."""

    def __init__(self, reason: str, raw: Any, detail: str = ""):
        super().__init__(reason, None, detail)
        self.raw = raw


class CellError(str):
    """A spreadsheet cell holding an error value such as #DIV/0! (kept as text in meta, rejected as content)."""


def excerpt(raw: Any) -> str:
    if isinstance(raw, bytes):
        text = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    return text[:EXCERPT_CHARS]


class QuarantineLog:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def add(self, uri: str, row: int | None, rejected: Rejected, raw: Any) -> None:
        self.counts[rejected.reason] += 1
        self.rows.append({"uri": uri, "row": row, "field": rejected.field, "reason": rejected.reason,
                          "detail": rejected.detail, "excerpt": excerpt(raw)})

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        if not self.rows:  # from_pylist would import pandas (tasks/ingest/arrow.py) for nothing
            return pa.Table.from_batches([], schema=QUARANTINE_SCHEMA)
        return pa.Table.from_pylist(self.rows, schema=QUARANTINE_SCHEMA)
