"""One source (file, sheet or dataset split) → canonical conversation tables, a quarantine and counts.

`read_source` picks the reader, detects the format from the first readable record (unless one is given),
parses every row, drops exact duplicates (same record id) and streams tables of `batch_rows` records, so
memory stays flat however large a JSONL file is (only the set of ids seen grows, 16 bytes a row: dedupe.py).
The stats count what the repair policy did (`repairs`), the messages left out (`skipped_messages`) and end
with `warnings` for quarantine reasons that take a large share of the source (hints.py).
"""
from __future__ import annotations

import gc
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from storage.stage import Progress
from tasks.errors import BadInputError
from tasks.ingest import hf, xlsx
from tasks.ingest.arrow import mask
from tasks.ingest.columnar import CHUNK_PARSERS
from tasks.ingest.columns import RecordColumns
from tasks.ingest.dedupe import IdSet
from tasks.ingest.formats import (
    FORMATS,
    MEDICATIONQA_MAPPING,
    MEDICATIONQA_SHEET,
    FormatOptions,
    check_columns,
    detect_format,
    options_for,
    undetected,
)
from tasks.ingest.hints import quarantine_warnings
from tasks.ingest.parse import add_parsed, conversations, parse_chunk
from tasks.ingest.quarantine import QuarantineLog
from tasks.ingest.readers import READERS, file_kind
from tasks.ingest.revision import source_revision

BATCH_ROWS = 20_000
FORMAT_ALIASES = {"xlsx": None, "auto": None, "self_instruct": "self-instruct", "selfinstruct": "self-instruct",
                  "guanaco-text": "guanaco", "messages": "openai", "oasst": "oasst1", "oasst_trees": "oasst-trees"}


def resolve_format(name: str | None) -> str | None:
    if name is None:
        return None
    key = name.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key is not None and key not in FORMATS:
        raise BadInputError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}", field="format")
    return key


@dataclass
class SourceRead:
    """`tables` streams the records; `stats` and `quarantine` are complete once it is exhausted."""

    tables: Iterator[pa.Table]
    stats: dict[str, Any]
    quarantine: QuarantineLog = field(default_factory=QuarantineLog)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while rows are read and parsed: a chunk is tens of thousands of dicts and
    lists, alive until it is written, and every collection would walk them all again (10-20% of the ingest time).
    They hold no reference cycles, so nothing is left for the collector to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _peek(items: Iterator[tuple[int, Any]]) -> tuple[Iterator[tuple[int, Any]], dict[str, Any] | None]:
    """The first readable record, without losing anything before it."""
    seen = []
    for item in items:
        seen.append(item)
        if isinstance(item[1], dict):
            return itertools.chain(seen, items), item[1]
    return iter(seen), None


class Chunk(NamedTuple):
    table: pa.Table  # records in source row order
    read: int  # conversations read
    repairs: Counter[str]
    skipped: Counter[str]


def parsed_chunks(items: Iterator[tuple[int, Any]], uri: str, fmt: str, split: str | None, opts: FormatOptions,
                  quarantine: QuarantineLog, batch_rows: int) -> Iterator[Chunk]:
    """Successive chunks of the source; rejections go to `quarantine`. The flat formats' chunk parsers read
    plain rows a column at a time, unless a language filter needs every row's meta."""
    if fmt in CHUNK_PARSERS and not opts.lang:
        while True:
            with paused_gc():
                chunk = list(itertools.islice(items, batch_rows))
                if not chunk:
                    return
                records = RecordColumns(uri, fmt, split)
                read = parse_chunk(chunk, fmt, opts, records, quarantine, uri)
                table = records.table()
            yield Chunk(table, read, records.repairs, records.skipped)
    records, read = RecordColumns(uri, fmt, split), 0
    for row, result, raw in conversations(items, fmt, opts):
        add_parsed(row, result, raw, records, quarantine, uri)
        read += 1
        if len(records) >= batch_rows:
            yield Chunk(records.table(), read, records.repairs, records.skipped)
            records, read = RecordColumns(uri, fmt, split), 0
    if read:
        yield Chunk(records.table(), read, records.repairs, records.skipped)


def open_source(config: Any) -> tuple[Iterator[tuple[int, Any]], str | None, str | None, list[str] | None,
                                      dict[str, Any]]:
    """(items, format, split or sheet, column names if known, extra stats) for a SourceConfig."""
    uri, fmt = config.path, resolve_format(config.format)
    extra: dict[str, Any] = {}
    if uri.startswith(hf.PREFIX):
        if config.sheet:
            raise BadInputError("--sheet applies to xlsx files, not to hf: datasets (use --split)", file=uri)
        source = hf.parse_uri(uri)
        extra["revision"] = source_revision(uri)
        dataset, split = hf.load(source, config.split, extra["revision"])
        extra["total"] = len(dataset)
        return hf.iter_rows(dataset), fmt, split, list(dataset.column_names), extra
    kind = file_kind(uri)
    if kind == "xlsx":
        mapping = (config.mapping or MEDICATIONQA_MAPPING) if fmt == "medicationqa" else config.mapping
        sheet = xlsx.open_sheet(uri, config.sheet, mapping,
                                default_sheet=MEDICATIONQA_SHEET if fmt in (None, "medicationqa") else None)
        extra.update(header_row=sheet.header_row, blank_rows=sheet.blank_rows, total=sheet.total_rows)
        return sheet.rows, fmt, sheet.name, sheet.headers, extra
    if config.sheet or config.split:
        raise BadInputError(f"--sheet / --split apply to xlsx files and hf: datasets, not to a {kind} file", file=uri)
    return READERS[kind](uri), fmt, None, None, extra


def read_source(config: Any, progress: Progress | None = None, batch_rows: int = BATCH_ROWS) -> SourceRead:
    """Open a source (flows.config.SourceConfig) and stream its canonical tables; raises BadInputError for
    what cannot be read at all (missing sheet or columns, unknown format). `progress(total, description)`
    gives the callable that is advanced by the rows read (total known for sheets and datasets)."""
    uri = config.path
    items, fmt, split, columns, extra = open_source(config)
    total = extra.pop("total", None)
    name = uri if uri.startswith(hf.PREFIX) else uri.rstrip("/").rsplit("/", 1)[-1]
    advance = progress(total, f"ingest {name}") if progress else None
    with paused_gc():  # a JSON array is parsed whole here
        items, sample = _peek(items)
    if fmt is None:
        fmt = detect_format(sample, config.mapping) if sample is not None else ("columns" if config.mapping else None)
    if fmt is None:
        raise undetected(uri, sample)
    opts = options_for(fmt, config.mapping, config.system_prompt, repair=config.repair, lang=config.lang,
                       preference=config.preference)
    if opts.mapping and (columns is not None or sample is not None):
        check_columns(columns if columns is not None else sample, opts, uri)
    blank_rows = extra.pop("blank_rows", None)
    stats: dict[str, Any] = {"uri": uri, "format": fmt, "split": split, "read": 0, "kept": 0, "quarantined": {},
                             "duplicates": 0, **extra, "repairs": {}, "skipped_messages": {}, "warnings": []}
    quarantine = QuarantineLog()

    def tables() -> Iterator[pa.Table]:
        seen = IdSet()
        reported = 0

        def new_rows(table: pa.Table, read: int) -> pa.Table:
            """Count the chunk and drop the records seen before."""
            nonlocal reported
            first = seen.add_new(table.column("id"))
            stats["read"] += read
            stats["duplicates"] += table.num_rows - int(first.sum())
            stats["kept"] += int(first.sum())
            if advance:
                advance(stats["read"] - reported)
                reported = stats["read"]
            return table if first.all() else table.filter(mask(first))

        pending: list[pa.Table] = []  # kept records, joined up to batch_rows a table (the store's shards)
        repairs: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for chunk in parsed_chunks(items, uri, fmt, split, opts, quarantine, batch_rows):
            pending.append(new_rows(chunk.table, chunk.read))
            repairs.update(chunk.repairs)
            skipped.update(chunk.skipped)
            if sum(t.num_rows for t in pending) >= batch_rows:
                yield pa.concat_tables(pending)
                pending = []
        if pending or not stats["kept"]:
            yield pa.concat_tables(pending) if pending else RecordColumns(uri, fmt, split).table()
        stats["quarantined"] = dict(sorted(quarantine.counts.items()))
        stats["repairs"], stats["skipped_messages"] = dict(sorted(repairs.items())), dict(sorted(skipped.items()))
        stats["warnings"] = quarantine_warnings(stats, opts.repair)
        if blank_rows is not None:
            stats["blank_rows"] = len(blank_rows)

    return SourceRead(tables(), stats, quarantine)
