"""Stage parameters: the pydantic base of every config section, and the field marks the contract reads.

A field's `json_schema_extra` may say
- `NOT_IN_KEY`: it does not change any stage's output (a batch size, a device), so no key holds it;
- `in_key_of("iqs.train")`: only these stages' keys hold it (a training setting of a section that a scoring
  stage reads too);
- `WHEN_SET`: it enters the keys only when set (not None): a field added after outputs were made leaves their
  keys as they were;
- `PATH`: a local path (or a list of them) that a config file gives relative to its own folder.
Not pydantic's `exclude=True`: Prefect serializes flow parameters with model_dump, which drops those.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

NOT_IN_KEY: dict[str, Any] = {"cache_key": False}
WHEN_SET: dict[str, Any] = {"cache_key": "when_set"}
PATH: dict[str, Any] = {"path": True}


def in_key_of(*stages: str) -> dict[str, Any]:
    return {"cache_key": list(stages)}


class Section(BaseModel):
    """A config section: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _mark(info: Any, name: str) -> Any:
    extra = info.json_schema_extra
    return extra.get(name) if isinstance(extra, dict) else None


def key_params(params: Any, stage: str) -> Any:
    """What of `params` enters `stage`'s key: every field but those marked for no key or for other stages'
    keys, nested sections included."""
    if isinstance(params, BaseModel):
        out = {}
        for name, info in type(params).model_fields.items():
            mark = _mark(info, "cache_key")
            if mark is False or (isinstance(mark, list) and stage not in mark):
                continue
            if mark == "when_set" and getattr(params, name) is None:
                continue
            out[name] = key_params(getattr(params, name), stage)
        return out
    if isinstance(params, dict):
        return {k: key_params(v, stage) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [key_params(v, stage) for v in params]
    return params


def map_paths(params: Any, change: Callable[[str], str]) -> Any:
    """`params` with every PATH-marked string (or list of strings) passed through `change`, in place."""
    if isinstance(params, BaseModel):
        for name, info in type(params).model_fields.items():
            value = getattr(params, name)
            if _mark(info, "path"):
                if isinstance(value, str):
                    setattr(params, name, change(value))
                elif isinstance(value, list):
                    setattr(params, name, [change(v) if isinstance(v, str) else v for v in value])
            else:
                map_paths(value, change)
    elif isinstance(params, (list, tuple)):
        for value in params:
            map_paths(value, change)
    return params


def resolved_path(folder: Path, path: str) -> str:
    """A relative local path resolved against `folder`; URLs, hf: ids and absolute paths as they are."""
    if not path or "://" in path or path.startswith("hf:") or Path(path).is_absolute():
        return path
    return str((folder / path).resolve())
