"""Raw rows → records: every row through its format's parser, plain rows of the flat formats a chunk at a time."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tasks.ingest.columnar import CHUNK_PARSERS
from tasks.ingest.columns import RecordColumns
from tasks.ingest.formats import PARSERS, FormatOptions
from tasks.ingest.oasst import parse_oasst1
from tasks.ingest.quarantine import QuarantineLog, Rejected, Unreadable
from tasks.ingest.turns import Conversation


def conversations(items: Iterable[tuple[int, Any]], fmt: str, opts: FormatOptions
                  ) -> Iterator[tuple[int, Conversation | Rejected, Any]]:
    """(row, conversation or rejection, raw row) for every candidate conversation of the source."""
    for row, result, raw in _parsed(items, fmt, opts):
        yield row, in_languages(result, opts.lang) if opts.lang else result, raw


def _parsed(items: Iterable[tuple[int, Any]], fmt: str, opts: FormatOptions
            ) -> Iterator[tuple[int, Conversation | Rejected, Any]]:
    if fmt == "oasst1":
        readable = []
        for row, obj in items:
            if isinstance(obj, Unreadable):
                yield row, obj, obj.raw
            else:
                readable.append((row, obj))
        yield from parse_oasst1(readable, opts)
        return
    parse = PARSERS[fmt]
    for row, obj in items:
        if isinstance(obj, Unreadable):
            yield row, obj, obj.raw
            continue
        try:
            for result in parse(obj, opts):
                yield row, result, obj
        except Rejected as rejected:
            yield row, rejected, obj


def in_languages(result: Conversation | Rejected, langs: frozenset[str]) -> Conversation | Rejected:
    """The `lang` filter: a conversation whose meta names another language is set aside (quarantined as
    filtered_lang, so it can be found again); one without a `lang` is kept."""
    if isinstance(result, Rejected):
        return result
    lang = result.meta.get("lang")
    if isinstance(lang, str) and lang.strip().lower() not in langs:
        return Rejected("filtered_lang", "lang", f"lang {lang!r} is not one of {sorted(langs)} (--lang)")
    return result


def add_parsed(row: int, result: Conversation | Rejected, raw: Any, records: RecordColumns,
               quarantine: QuarantineLog, uri: str) -> None:
    """A conversation into `records`, a rejection into `quarantine`."""
    if isinstance(result, Rejected):
        quarantine.add(uri, row, result, raw)
    else:
        records.add(row, result)


def parse_chunk(chunk: list[tuple[int, Any]], fmt: str, opts: FormatOptions, records: RecordColumns,
                quarantine: QuarantineLog, uri: str) -> int:
    """A chunk of raw rows of a flat format (CHUNK_PARSERS) into `records` and `quarantine`: plain rows a column
    at a time, the others row by row. Returns the number of conversations read."""
    before = len(records)
    others = CHUNK_PARSERS[fmt](chunk, opts, records)
    read = len(records) - before
    for row, result, raw in conversations(others, fmt, opts):
        add_parsed(row, result, raw, records, quarantine, uri)
        read += 1
    return read
