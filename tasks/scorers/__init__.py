"""Quality scorers for the `iqs` stage: one module per scorer, each declaring `SCORER = Scorer(...)`
(tasks/scorers/base.py). Adding a scorer is adding a module here (or in a plugin, tasks/plugins.py): the
`iqs.scorer` choices, the config schema and `sftflow iqs eval --scorer` come from this registry.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, TypeAdapter

from storage.params import Section
from tasks.errors import BadInputError
from tasks.plugins import declared
from tasks.scorers.base import Scorer

DEFAULT = "comet"
NONE = "none"


class NoScoring(Section):
    """`iqs.scorer: none`: no scores; the selection is a cluster-only diversity sample."""

    scorer: Literal["none"] = NONE


@functools.cache
def registered() -> dict[str, Scorer]:
    return declared(Scorer, __name__, "iqs.scorer", reserved=(NONE,))


def get(name: str) -> Scorer:
    scorers = registered()
    if name not in scorers:
        raise BadInputError(f"no scorer {name!r}; the scorers are {', '.join(scorers)} (or none)",
                            field="iqs.scorer")
    return scorers[name]


def _default_scorer(value: Any) -> Any:
    return {"scorer": DEFAULT, **value} if isinstance(value, dict) and "scorer" not in value else value


@functools.cache
def section_type() -> Any:
    """The `iqs` section: one config model per scorer, told apart by `scorer` (comet when not given)."""
    members = tuple(s.config for s in registered().values()) + (NoScoring,)
    tagged = Annotated[Union[members], Field(discriminator="scorer")]  # noqa: UP007
    return Annotated[tagged, BeforeValidator(_default_scorer)]


def parse_config(data: Any) -> Any:
    return TypeAdapter(section_type()).validate_python(data)


def default_config() -> Any:
    return parse_config({})
