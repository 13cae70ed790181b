"""Large JSONL files parsed in worker processes: the parent reads blocks of lines (numbered), workers turn each
block into a table of records in row order plus its quarantine rows (parse.py, the same code as in-process),
and the parent drops duplicates in row order, so the output is the same as reading the file in one process.

Worth it only for big, uncompressed local files, on machines that can fork (Linux, macOS).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa

from tasks.ingest import hf
from tasks.ingest.columns import RecordColumns
from tasks.ingest.formats import FormatOptions
from tasks.ingest.parse import parse_chunk
from tasks.ingest.quarantine import QuarantineLog
from tasks.ingest.readers import COMPRESSED, file_kind, jsonl_items, open_binary

WORKERS = min(2, os.cpu_count() or 1) if "fork" in mp.get_all_start_methods() else 1
MIN_BYTES = 48 << 20  # smaller files are done before the workers have started
BLOCK_BYTES = 4 << 20


def worth_it(uri: str) -> bool:
    """A local, uncompressed JSONL file of MIN_BYTES or more, on a machine with 2 cores or more."""
    if WORKERS < 2 or uri.startswith(hf.PREFIX) or uri.lower().endswith(COMPRESSED):
        return False
    fs, path = fsspec.core.url_to_fs(uri)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if not local or not os.path.isfile(path) or os.path.getsize(path) < MIN_BYTES or file_kind(uri) != "jsonl":
        return False
    with open(path, "rb") as fh:  # a .jsonl file holding one JSON array is read whole (readers.read_jsonl)
        return not fh.readline().lstrip().startswith(b"[")


def parse_block(uri: str, fmt: str, split: str | None, opts: FormatOptions, first_row: int, lines: list[bytes]
                ) -> tuple[pa.Table, list[dict[str, Any]], int]:
    """In a worker: one block of lines → (records in row order, quarantine rows, conversations read)."""
    records, quarantine = RecordColumns(uri, fmt, split), QuarantineLog()
    read = parse_chunk(list(jsonl_items(lines, first_row)), fmt, opts, records, quarantine, uri)
    return records.table(), quarantine.rows, read


def _blocks(uri: str) -> Iterator[tuple[int, list[bytes]]]:
    with open_binary(uri) as fh:
        row = 0
        while lines := fh.readlines(BLOCK_BYTES):
            yield row, lines
            row += len(lines)


def parsed_chunks(uri: str, fmt: str, split: str | None, opts: FormatOptions, quarantine: QuarantineLog
                  ) -> Iterator[tuple[pa.Table, int]]:
    """(records, conversations read) per block, in file order; a few blocks in flight, so memory stays flat."""
    # fork: a spawned worker would import the caller's main module again (and re-run an unguarded script); the
    # workers only parse and build Arrow arrays, which are fork-safe (Arrow re-creates its thread pool)
    with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("fork")) as pool:
        pending: deque[Future] = deque()

        def collect() -> tuple[pa.Table, int]:
            table, rejected, read = pending.popleft().result()
            quarantine.extend(rejected)
            return table, read

        for first_row, lines in _blocks(uri):
            pending.append(pool.submit(parse_block, uri, fmt, split, opts, first_row, lines))
            if len(pending) > 2 * WORKERS:
                yield collect()
        while pending:
            yield collect()
