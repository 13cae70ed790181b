"""File readers: each yields (row, record) pairs, record a dict or an `Unreadable` for the quarantine.

Rows are 0-based: the line of a JSONL file, the element of a JSON array, the data row of a CSV or parquet
file. gzip is read transparently (by the .gz suffix). JSONL and parquet are streamed; a JSON array is one
document and is parsed whole.
"""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
import orjson
from fsspec.spec import AbstractBufferedFile

from tasks.errors import BadInputError
from tasks.ingest.formats import detect_format
from tasks.ingest.quarantine import Unreadable

Item = tuple[int, "dict[str, Any] | Unreadable"]
COMPRESSED = (".gz", ".gzip")
KINDS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
         ".parquet": "parquet", ".pq": "parquet", ".xlsx": "xlsx", ".xlsm": "xlsx"}
PARQUET_BATCH = 10_000
LINES_BLOCK = 1 << 20  # bytes of JSONL lines read at a time


def file_kind(uri: str) -> str:
    """json, jsonl, csv, parquet or xlsx, from the suffix (after .gz); JSON is sniffed when there is none."""
    name = uri.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    for suffix, kind in KINDS.items():
        if name.endswith(suffix):
            return kind
    with open_binary(uri) as fh:
        head = fh.read(4096).lstrip()
    if head[:1] in (b"[", b"{"):
        return "json"
    raise BadInputError(f"cannot tell the file type from the name (known: {', '.join(KINDS)}, optionally .gz) "
                        f"and the content does not start like JSON: {head[:40]!r}", file=uri)


def open_binary(uri: str) -> Any:
    fh = fsspec.open(uri, "rb", compression="infer").open()
    # an object store's file (s3fs, gcsfs) takes no size hint in readlines(), which JSONL blocks are read with
    return io.BufferedReader(fh) if isinstance(fh, AbstractBufferedFile) else fh


def _json_item(row: int, line: bytes) -> Item:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return row, _unparsable(line, exc)
    return row, _record(obj, line)


def is_message_list(obj: Any) -> bool:
    """A bare list of chat messages (each an object with a role), as some OpenAI-format JSONL files hold."""
    return type(obj) is list and bool(obj) and all(type(m) is dict and "role" in m for m in obj)


def _record(obj: Any, raw: Any) -> dict[str, Any] | Unreadable:
    """A record, or a list of messages read as one ({"messages": [...]}), or an Unreadable."""
    if type(obj) is dict:
        return obj
    if is_message_list(obj):
        return {"messages": obj}
    return Unreadable("not_an_object", raw, f"expected a JSON object, found {type(obj).__name__}")


def _unparsable(line: bytes, exc: orjson.JSONDecodeError) -> Unreadable:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Unreadable("invalid_utf8", line, f"invalid UTF-8 at byte {bad.start}")
    return Unreadable("malformed_json", line, str(exc))


def read_jsonl(uri: str) -> Iterator[Item]:
    """Line by line, never the whole file. A file that is really one JSON array (as the seed's converter
    wrote into a .jsonl file) is read as an array; lines that are lists of messages are OpenAI records.
    Blank lines are skipped (and counted in the row numbers)."""
    with open_binary(uri) as fh:
        first = fh.readline()
        if first.lstrip().startswith(b"[") and not _is_message_line(first):
            yield from _array_items(uri, first + fh.read())
            return
        row, lines = 0, [first]
        while lines:
            yield from jsonl_items(lines, row)
            row += len(lines)
            lines = fh.readlines(LINES_BLOCK)


def _is_message_line(line: bytes) -> bool:
    try:
        return is_message_list(orjson.loads(line))
    except orjson.JSONDecodeError:  # the first line of an array spread over lines
        return False


def jsonl_items(lines: list[bytes], first_row: int) -> Iterator[Item]:
    """(row, record or Unreadable) of JSONL lines numbered from `first_row`; blank lines are skipped."""
    for row, line in enumerate(lines, first_row):  # the common case inline: this runs once per line
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if line.strip():
                yield row, _unparsable(line, exc)
        else:
            yield row, obj if type(obj) is dict else _record(obj, line)


def read_json(uri: str) -> Iterator[Item]:
    """A JSON array of records (or {"key": [records]}). JSON Lines in a .json file are read as such."""
    with open_binary(uri) as fh:
        data = fh.read()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        first = data.lstrip().split(b"\n", 1)[0]
        if first.startswith(b"{") and isinstance(_json_item(0, first)[1], dict):
            yield from read_jsonl(uri)
            return
        raise BadInputError(f"not valid JSON ({exc}); a file of one JSON object per line should be .jsonl",
                            file=uri) from None
    yield from _records_of(uri, doc)


def _array_items(uri: str, data: bytes) -> Iterator[Item]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadInputError(f"not valid JSON: {exc}", file=uri) from None
    yield from _records_of(uri, doc)


def _records_of(uri: str, doc: Any) -> Iterator[Item]:
    if isinstance(doc, Mapping):  # one record, or a wrapper such as {"data": [records], "version": 2}
        lists = [v for v in doc.values() if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v)]
        doc = lists[0] if len(lists) == 1 and detect_format(doc) is None else [doc]
    if not isinstance(doc, list):
        raise BadInputError(f"expected a JSON array of records, found {type(doc).__name__}", file=uri)
    for row, obj in enumerate(doc):
        yield row, _record(obj, obj)


def read_csv(uri: str) -> Iterator[Item]:
    """CSV (TSV for .tsv) with a header row; undecodable bytes are kept as surrogates and quarantined."""
    csv.field_size_limit(sys.maxsize)
    delimiter = "\t" if uri.lower().removesuffix(".gz").endswith(".tsv") else ","
    with open_binary(uri) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        for row, record in enumerate(reader):
            if None in record:
                yield row, Unreadable("extra_cells", record, f"{len(record[None])} cell(s) beyond the header")
            elif any(isinstance(v, str) and _has_surrogates(v) for v in record.values()):
                raw_text = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if v else v
                            for k, v in record.items()}
                yield row, Unreadable("invalid_utf8", raw_text, "invalid UTF-8 bytes in the row")
            else:
                yield row, record


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_parquet(uri: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    row = 0
    with fsspec.open(uri, "rb") as fh:
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                yield row, record
                row += 1


READERS = {"json": read_json, "jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}
