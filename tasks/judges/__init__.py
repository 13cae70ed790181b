"""Judges of answers: one module per judge, each declaring `JUDGE = Judge(...)` (tasks/judges/base.py); a plugin
module may declare more (tasks/plugins.py). The `judge` section's choices and config come from this registry."""
from __future__ import annotations

import functools
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field, TypeAdapter

from tasks.errors import BadInputError
from tasks.judges.base import Judge
from tasks.plugins import declared

DEFAULT = "reward"


@functools.cache
def registered() -> dict[str, Judge]:
    return declared(Judge, __name__, "judge.judge")


def get(name: str) -> Judge:
    found = registered().get(name)
    if found is None:
        raise BadInputError(f"no judge {name!r}; the judges are {', '.join(registered())}", field="--judge")
    return found


def _default_judge(value: Any) -> Any:
    return {"judge": DEFAULT, **value} if isinstance(value, dict) and "judge" not in value else value


@functools.cache
def section_type() -> Any:
    """The `judge` section: one config model per judge, told apart by `judge` (reward when not given)."""
    tagged = Annotated[Union[tuple(j.config for j in registered().values())], Field(discriminator="judge")]  # noqa: UP007
    return Annotated[tagged, BeforeValidator(_default_judge)]


def parse_config(data: Any) -> Any:
    return TypeAdapter(section_type()).validate_python(data)


__all__ = ["DEFAULT", "Judge", "get", "parse_config", "registered", "section_type"]
