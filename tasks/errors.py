"""Errors a stage raises for input it cannot use. They are never retried (see flows/stage.py)."""
from __future__ import annotations


class BadInputError(ValueError):
    """Bad input: the message names the file, the row (or line) and the field where it can."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"field {field!r}" if field else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.field = file, row, field
