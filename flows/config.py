"""The one typed configuration shared by the CLI, the flow parameters and the deployments.

`PipelineConfig` is assembled from the stages: each registered stage with a `section` brings its parameter
model (declared beside it, in tasks/stages/), plus the name, the store and the runner. The Prefect UI shows it
as the run form with defaults.
"""
from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model

from storage.params import Section, map_paths, resolved_path
from storage.stage import validation_message
from tasks.errors import BadInputError
from tasks.stages import registered


class ResourcesConfig(Section):
    memory_gb: float | None = Field(None, gt=0, description="memory a stage may use: batches (train's micro-batches) "
                                                            "are sized to it, and a stage that cannot fit fails "
                                                            "saying what to lower; empty: the container's, Dask "
                                                            "worker's or machine's limit")


class RunnerConfig(Section):
    task_runner: Literal["thread", "dask", "ray"] = "thread"
    address: str | None = Field(None, description="address of an existing Dask/Ray cluster")
    workers: int = Field(2, ge=1, description="stages (and sources, shards) run side by side")


def _sections() -> dict[str, Any]:
    """section name -> its parameter type, from the stages (stages sharing a section share its type)."""
    sections: dict[str, Any] = {}
    for stage in registered().values():
        if stage.section is None:
            continue
        if sections.setdefault(stage.section, stage.params) is not stage.params:
            raise TypeError(f"stages share section {stage.section!r} with different parameter models")
    return sections


def _default(kind: Any) -> Any:
    from pydantic import TypeAdapter

    return lambda: TypeAdapter(kind).validate_python({})


PipelineConfig = create_model(
    "PipelineConfig",
    __base__=Section,
    __doc__="The pipeline: one section per stage (see `sftflow stage --list`), the store and the runner.",
    name=(str, Field("sftflow", description="data set name, used in flow run names")),
    store=(str | None, Field(None, description="store URL; $SFTFLOW_HOME/store when empty")),
    runner=(RunnerConfig, Field(default_factory=RunnerConfig)),
    resources=(ResourcesConfig, Field(default_factory=ResourcesConfig)),
    **{name: (kind, Field(default_factory=_default(kind))) for name, kind in _sections().items()},
)
SECTIONS = tuple(name for name in PipelineConfig.model_fields if name not in ("name", "store"))


def parse_assignment(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise BadInputError(f"--set expects key=value, got {text!r}", field="--set")
    dotted, raw = text.split("=", 1)
    return dotted.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` assignments (values parsed as YAML) to a nested dict."""
    for text in assignments:
        path, value = parse_assignment(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BadInputError(f"--set {text!r}: {part!r} is not a section", field="--set")
        node[path[-1]] = value
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInputError(f"not valid YAML: {exc}", file=str(path)) from None
    except OSError as exc:
        raise BadInputError(f"cannot read the config: {exc.strerror}", file=str(path)) from None
    if not isinstance(data, dict):
        raise BadInputError(f"expected sections ({', '.join(SECTIONS)}, ...), found {type(data).__name__}",
                            file=str(path))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """A PipelineConfig from YAML plus `--set` overrides. Relative paths in the YAML (sources, revision files,
    ...) are resolved against the YAML's folder; those of overrides are left to the working directory."""
    path = Path(path) if path is not None else None
    config = validated(read_yaml(path) if path is not None else {}, str(path) if path is not None else None)
    if path is not None:
        map_paths(config, lambda p: resolved_path(path.parent, p))
    if overrides:
        data = apply_overrides(config.model_dump(mode="json", exclude_unset=True), overrides)
        for section, (tag, members) in variants().items():  # `--set iqs.scorer=probe` switches variants
            chosen = data.get(section, {}).get(tag) if isinstance(data.get(section), dict) else None
            if chosen in members and any(o.startswith(f"{section}.{tag}=") for o in overrides):
                given = {o.split("=", 1)[0].split(".")[1] for o in overrides if o.startswith(f"{section}.")}
                data[section] = {k: v for k, v in data[section].items()
                                 if k in members[chosen].model_fields or k in given}
        config = validated(data, None)
    return config


def validated(data: dict[str, Any], file: str | None) -> Any:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        message, field = validation_message(exc, union_tags())
        raise BadInputError(message, file=file, field=field) from None


@functools.cache
def variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """The sections that are discriminated unions (iqs): section -> (the tag field, {tag: member model})."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    def visit(section: str, kind: Any) -> None:
        args = typing.get_args(kind)
        if typing.get_origin(kind) is not typing.Annotated:
            return
        for mark in args[1:]:
            tag = getattr(mark, "discriminator", None)
            if isinstance(tag, str):
                found[section] = (tag, {value: member for member in typing.get_args(args[0])
                                        for value in typing.get_args(member.model_fields[tag].annotation)})
        visit(section, args[0])

    for section, kind in _sections().items():
        visit(section, kind)
    return found


def union_tags() -> frozenset[str]:
    """The variant tags (the `iqs.scorer` values): pydantic puts the tag in an error's location
    (iqs.comet.epochs), where a user would not look for it."""
    return frozenset(tag for _, members in variants().values() for tag in members)
