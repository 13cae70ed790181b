"""Selectors of the selection ablation: one module per selector, each declaring `SELECTOR = Selector(...)`
(tasks/selectors/base.py); a plugin module may declare more (tasks/plugins.py). `get("car:probe")` is the car
selector on the probe scorer's scores."""
from __future__ import annotations

import functools

from tasks.errors import BadInputError
from tasks.plugins import declared
from tasks.selectors.base import PIPELINE_SCORER, Selector

BASELINE = "random"  # every other selector is compared with it


@functools.cache
def registered() -> dict[str, Selector]:
    return declared(Selector, __name__, "--selectors")


def get(spec: str) -> Selector:
    """A selector by name, or `NAME:ARGUMENT`: the selector's rule on another scorer's scores (`car:probe`), or
    the rows a file lists (`file:PATH`)."""
    name, _, argument = spec.partition(":")
    found = registered().get(name)
    if found is None:
        raise BadInputError(f"no selector {name!r}; the selectors are {', '.join(registered())} (NAME:SCORER runs "
                            "one on another scorer, e.g. car:probe; file:PATH takes the rows a file lists)",
                            field="--selectors")
    return found.with_argument(argument) if argument else found.checked()


__all__ = ["BASELINE", "PIPELINE_SCORER", "Selector", "get", "registered"]
