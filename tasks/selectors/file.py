"""`file:PATH`: the rows a file lists (a published selection such as CaR's 1,013 Alpaca rows), matched to the pool
by what they ask (tasks/listed.py); as many rows as match, whatever the budget."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from storage.params import resolved_path
from tasks.errors import BadInputError
from tasks.selectors.base import Selector


@dataclass(frozen=True)
class FileSelector(Selector):
    path: str | None = None

    def select_params(self, budget: int, n2: int) -> dict[str, Any]:
        return {"n1": 0, "n2": 0, "from_file": self.path}

    def with_argument(self, argument: str) -> Selector:
        path = resolved_path(Path.cwd(), argument)
        if "://" not in path and not Path(path).is_file():
            raise BadInputError(f"no selection file {argument!r}", file=argument, field="--selectors")
        return replace(self, name=f"file:{Path(path).name.split('.')[0]}", path=path)

    def checked(self) -> Selector:
        raise BadInputError("the file selector takes the rows a file lists: name it as file:PATH", field="--selectors")


SELECTOR = FileSelector("file", None, "file", "the rows a file lists (a published selection), matched to the pool")
