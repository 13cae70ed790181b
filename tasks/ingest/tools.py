"""Tool calling as the published formats spell it, read into the canonical record's fields.

- Tool definitions: a list, or its JSON text (LLaMA-Factory's `tools` string), of function definitions
  `{name, description, parameters}`, bare or wrapped as OpenAI does (`{"type": "function", "function": {…}}`).
- Calls: ShareGPT's `function_call` turn (JSON text of `{name, arguments}` or a list of them), OpenAI's
  `tool_calls` (`{id, type, function: {name, arguments}}`, arguments as JSON text) and legacy `function_call`,
  and LLaMA-Factory v1's `{"type": "tool_call", "value": "{…}"}` content parts.
- Loss weights: LLaMA-Factory v1's `loss_weight` and OpenAI's `weight`, 0 or 1.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from storage.schema import normalize_loss_weight, normalize_tool_calls, normalize_tools
from tasks.ingest.quarantine import Rejected


def read_tools(value: Any, field_name: str) -> str | None:
    """The normalized JSON text of the tool definitions (None for none or an empty list)."""
    try:
        if isinstance(value, str) and value.strip():
            value = orjson.loads(value)
        if isinstance(value, list):
            value = [t["function"] if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping) else t
                     for t in value]
        return normalize_tools(value)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise Rejected("bad_tools", field_name, f"tool definitions unreadable: {exc}") from None


def calls_from_json(value: Any, field_name: str) -> list[dict[str, Any]]:
    """A ShareGPT `function_call` value (or a v1 tool_call part): one call or a list of calls, as JSON text."""
    try:
        calls = orjson.loads(value) if isinstance(value, str) else value
    except orjson.JSONDecodeError as exc:
        raise Rejected("bad_tool_call", field_name, f"the tool call is not JSON: {exc}") from None
    return read_calls(calls if isinstance(calls, list) else [calls], field_name)


def read_calls(calls: Any, field_name: str) -> list[dict[str, Any]]:
    """Calls in any of the spellings above → [{id, name, arguments}] (arguments as compact JSON text)."""
    if not isinstance(calls, list) or not calls:
        raise Rejected("bad_tool_call", field_name, "expected a non-empty list of tool calls")
    flat = []
    for call in calls:
        if not isinstance(call, Mapping):
            raise Rejected("bad_tool_call", field_name, f"a tool call must be an object, found {type(call).__name__}")
        function = call.get("function")
        body = function if isinstance(function, Mapping) else call
        arguments = body.get("arguments", body.get("parameters"))  # Llama 3.1 writes "parameters"
        flat.append({"id": call.get("id"), "name": body.get("name"), "arguments": arguments})
    try:
        return normalize_tool_calls(flat)
    except ValueError as exc:
        raise Rejected("bad_tool_call", field_name, str(exc)) from None


def message_calls(message: Mapping[str, Any], field_name: str) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls` and legacy `function_call` of one message ([] when it has neither)."""
    calls = []
    if message.get("tool_calls"):
        calls += read_calls(message["tool_calls"], field_name + ".tool_calls")
    if message.get("function_call"):
        calls += read_calls([message["function_call"]], field_name + ".function_call")
    return calls


def read_loss_weight(message: Mapping[str, Any], role: str, field_name: str) -> float | None:
    """0.0 for an assistant turn without loss, None for the default; other weights cannot be honoured
    (the tokenized rows carry labels, not per-token weights)."""
    name = "loss_weight" if "loss_weight" in message else "weight"
    weight = message.get(name)
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        raise Rejected("unsupported_loss_weight", f"{field_name}.{name}",
                       f"{name} must be 0 or 1 (labels are all-or-nothing per turn), got {weight!r}")
    weight = normalize_loss_weight(role, weight)
    if weight is not None and role != "assistant":
        raise Rejected("unsupported_loss_weight", f"{field_name}.{name}",
                       f"only assistant turns carry loss; a {role} turn has {name} {message.get(name)!r}")
    return weight
