"""xlsx sheets, streamed with openpyxl's read-only mode: pick the sheet, find the header row, yield rows.

The header row is the first row that holds every mapped column (or, with no mapping, the first row with at
least two text cells), so title rows and merged banner cells above it are skipped. Header cells left empty
by a merge get the column letter as name. Error cells (#DIV/0!, #N/A, …) come back as `CellError`.
"""
from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from tasks.errors import BadInputError
from tasks.ingest.quarantine import CellError

HEADER_SCAN_ROWS = 50


@dataclass
class Sheet:
    name: str
    headers: list[str]
    header_row: int  # 0-based sheet row
    rows: Iterator[tuple[int, dict[str, Any]]]  # (0-based sheet row, {header: value}); blank rows skipped
    total_rows: int | None
    blank_rows: list[int]  # filled while `rows` is consumed


def _load(uri: str) -> Any:
    import openpyxl

    fs, path = fsspec.core.url_to_fs(uri)
    source = path if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) \
        else io.BytesIO(fs.cat_file(path))
    try:
        return openpyxl.load_workbook(source, read_only=True, data_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl raises zipfile.BadZipFile, InvalidFileException, KeyError
        raise BadInputError(f"not a readable xlsx workbook: {type(exc).__name__}: {exc}", file=uri) from None


def sheet_names(uri: str) -> list[str]:
    workbook = _load(uri)
    try:
        return list(workbook.sheetnames)
    finally:
        workbook.close()


def _value(cell: Any) -> Any:
    if getattr(cell, "data_type", None) == "e":
        return CellError(cell.value)
    value = cell.value
    return value.strip() if isinstance(value, str) else value


def _blank(values: Sequence[Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _names(values: Sequence[Any]) -> list[str]:
    from openpyxl.utils import get_column_letter

    names: list[str] = []
    for i, value in enumerate(values):
        name = str(value).strip() if value is not None and str(value).strip() else f"column_{get_column_letter(i + 1)}"
        base, n = name, 1
        while name in names:
            name, n = f"{base}.{n}", n + 1
        names.append(name)
    return names


def open_sheet(uri: str, sheet: str | None, mapping: Mapping[str, str] | None, default_sheet: str | None = None
               ) -> Sheet:
    """`mapping` (system/input/output → column): the header row must hold its columns; `default_sheet` is used
    when no sheet is asked for and the workbook has it (medicationqa's DrugQA), else the first sheet."""
    required = set((mapping or {}).values())
    workbook = _load(uri)
    names = workbook.sheetnames
    wanted = sheet or (default_sheet if default_sheet in names else None) or names[0]
    if wanted not in names:
        raise BadInputError(f"no sheet {wanted!r}; the workbook has the sheets {names} (pass --sheet)", file=uri)
    ws = workbook[wanted]
    rows = ws.iter_rows()
    scanned: list[list[Any]] = []
    header_index = None
    for index, cells in enumerate(rows):
        values = [_value(c) for c in cells]
        scanned.append(values)
        present = {str(v).strip() for v in values if v is not None}
        if required:
            if required <= present:
                header_index = index
                break
        elif sum(isinstance(v, str) and bool(v) for v in values) >= 2:
            header_index = index
            break
        if index + 1 >= HEADER_SCAN_ROWS:
            break
    if header_index is None:
        found = next((v for v in scanned if not _blank(v)), [])
        headers = [v for v in found if v is not None]
        if required:
            missing = sorted(required - {str(h).strip() for h in headers})
            raise BadInputError(f"sheet {wanted!r}: missing column(s) {missing}: the headers found are {headers}, "
                                f"the mapping asked for {dict(mapping or {})} (fix the mapping, or pick the sheet "
                                "with --sheet)", file=uri)
        raise BadInputError(f"sheet {wanted!r}: no header row (a row of at least two text cells) in the first "
                            f"{HEADER_SCAN_ROWS} rows", file=uri)
    headers = _names(scanned[header_index])
    blank_rows: list[int] = []

    def data_rows() -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            for index, cells in enumerate(rows, start=header_index + 1):
                values = [_value(c) for c in cells]
                if _blank(values):
                    blank_rows.append(index)
                    continue
                if len(values) > len(headers):  # cells right of the header row: keep them, named by letter
                    headers.extend(_names([None] * len(values))[len(headers):])
                yield index, dict(zip(headers, values + [None] * (len(headers) - len(values))))
        finally:
            workbook.close()

    total = (ws.max_row - header_index - 1) if ws.max_row else None
    return Sheet(wanted, headers, header_index, data_rows(), total, blank_rows)
