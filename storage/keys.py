"""Stable keys: a dataset's key is a hash of (stage, stage version, parameters, input keys)."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

KEY_HEX_CHARS = 20


def _plain(value: Any) -> Any:
    """Reduce a value to JSON-stable data; floats are written with repr so 0.1 and 0.10 agree."""
    if hasattr(value, "model_dump"):  # pydantic models
        return _plain(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        return float(repr(value))
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"cannot key a value of type {type(value).__name__}: {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any, chars: int = KEY_HEX_CHARS) -> str:
    """Hex digest of a value's canonical JSON (or of bytes/str as given)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = canonical_json(value).encode("utf-8")
    return hashlib.blake2b(data, digest_size=32).hexdigest()[:chars]


def stage_key(stage: str, version: str, params: Mapping[str, Any], input_keys: Mapping[str, str]) -> str:
    """The store key of a stage output. Readable prefix, hashed body; order of dict entries never matters."""
    body = digest({"stage": stage, "version": version, "params": params, "inputs": dict(input_keys)})
    return f"{stage.replace('.', '-')}-{body}"
