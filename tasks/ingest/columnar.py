"""Column-wise parsing of the flat formats (alpaca, columns, medicationqa) for a chunk of raw rows.

Rows whose fields are plain, non-blank text (nearly all of them) are turned into records a column at a time;
every other row (non-text values, a history, empty turns, unreadable lines) is returned for the per-row
parsers in formats.py, which decide its conversation or quarantine reason. The fast rows are exactly the
ones for which those parsers yield one user/assistant pair, so both ways give the same records
(tests/test_ingest_columnar.py checks this on real data).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from storage.schema import meta_json, normalize_text
from tasks.ingest.columns import RecordColumns
from tasks.ingest.formats import FormatOptions, alpaca_meta, rest
from tasks.text import alpaca_user_content

Item = tuple[int, Any]


def _text(value: Any) -> bool:
    """Plain text with something in it (a CellError, a number or a list goes the per-row way)."""
    return type(value) is str and bool(value) and not value.isspace()


def _optional_text(value: Any) -> bool:
    return value is None or type(value) is str


def _split(items: list[Item], plain: Callable[[Any], bool]) -> tuple[list[Item], list[Item]]:
    flags = [plain(obj) for _, obj in items]
    return ([item for item, ok in zip(items, flags) if ok], [item for item, ok in zip(items, flags) if not ok])


def alpaca_chunk(items: list[Item], opts: FormatOptions, records: RecordColumns) -> list[Item]:
    """Add the plain Alpaca rows of `items` to `records`; return the others."""
    rows: list[int] = []
    systems: list[str | None] = []
    users: list[str] = []
    answers: list[str] = []
    metas: list[str] = []
    others: list[Item] = []
    for item in items:  # one pass that fetches each field once: this runs once per row
        obj = item[1]
        if type(obj) is not dict:
            others.append(item)
            continue
        instruction, output, input_text, system = (obj.get("instruction"), obj.get("output"), obj.get("input"),
                                                    obj.get("system"))
        if not (type(instruction) is str and type(output) is str and instruction and output
                and (input_text is None or type(input_text) is str) and (system is None or type(system) is str)
                and not obj.get("history") and not instruction.isspace() and not output.isspace()):
            others.append(item)
            continue
        instruction, input_text = normalize_text(instruction), normalize_text(input_text or "")
        rows.append(item[0])
        systems.append(system or opts.system_prompt)
        users.append(alpaca_user_content(instruction, input_text))
        answers.append(output)
        metas.append(meta_json(alpaca_meta(obj, instruction, input_text)))
    records.add_pairs(rows=rows, systems=systems, users=users, answers=answers, metas=metas)
    return others


def columns_chunk(items: list[Item], opts: FormatOptions, records: RecordColumns) -> list[Item]:
    """Add the rows of `items` whose mapped cells are plain text to `records`; return the others."""
    mapping = dict(opts.mapping or {})
    question, answer, system_col = mapping["input"], mapping["output"], mapping.get("system")

    def plain(obj: Any) -> bool:
        return (type(obj) is dict and _text(obj.get(question)) and _text(obj.get(answer))
                and (system_col is None or _optional_text(obj.get(system_col))))

    fast, others = _split(items, plain)
    objs = [obj for _, obj in fast]
    used = frozenset(mapping.values())
    records.add_pairs(
        rows=[row for row, _ in fast],
        systems=[(obj.get(system_col) if system_col else None) or opts.system_prompt for obj in objs],
        users=[obj[question] for obj in objs],
        answers=[obj[answer] for obj in objs],
        metas=[meta_json(rest(obj, used)) for obj in objs],
    )
    return others


ChunkParser = Callable[[list[Item], FormatOptions, RecordColumns], list[Item]]
CHUNK_PARSERS: Mapping[str, ChunkParser] = {"alpaca": alpaca_chunk, "columns": columns_chunk,
                                            "medicationqa": columns_chunk}
