"""Turns read from a source → one validated conversation, with the repair policy for real published data.

A conversation starts with a user turn, a user turn is answered by an assistant turn, an assistant turn that
calls tools is followed by their results (tool turns) and then by the assistant again, and it ends with an
assistant turn (a trailing unanswered user turn goes to meta["trailing_user"], trailing tool results to
meta["trailing_tool_results"]).

Repair (on by default, `ingest.repair` / `--no-repair`), as FastChat's training code does for ShareGPT's
"split" files: leading assistant (and tool) turns are dropped, consecutive user or assistant turns are merged
with a blank line between them. Each repair is counted in the row's meta["repairs"] and in the stats; what
repair cannot fix (an empty turn, a tool result without a call, a system turn inside the conversation) is
quarantined with its reason.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, NamedTuple

from storage.schema import normalize_text
from tasks.ingest.quarantine import CellError, Rejected

# what may follow: nothing yet, a user turn, an answer, an answer that calls tools, a tool result
NEXT = {None: ("user",), "user": ("assistant",), "assistant": ("user",), "call": ("tool",),
        "tool": ("tool", "assistant")}
MERGEABLE = ("user", "assistant")


class Turn(NamedTuple):
    role: str  # user, assistant, tool or system
    content: Any  # the raw value: text, or a number or date written out by as_text
    field: str | None  # where it came from, for the quarantine
    tool_calls: list[dict[str, Any]] | None = None  # normalized calls (tasks/ingest/tools.py)
    tool_call_id: str | None = None
    loss_weight: float | None = None  # None: the default; 0.0: no loss on this assistant turn


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    tools: str | None = None  # normalized JSON text of the tool definitions
    repairs: dict[str, int] = field(default_factory=dict)  # summed into the stats' "repairs"
    skipped: dict[str, int] = field(default_factory=dict)  # messages left out (OpenAssistant), summed likewise


def as_text(value: Any, field_name: str | None) -> str:
    """A cell or JSON value as text; numbers and dates are written out, lists and objects are rejected."""
    if type(value) is str:  # the common case first: this runs several times per row
        return value
    if value is None:
        return ""
    if isinstance(value, CellError):
        raise Rejected("error_cell", field_name, f"the cell holds the error value {value}")
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise Rejected("not_text", field_name, f"expected text, found {type(value).__name__}")


def role_of(value: Any, table: Mapping[str, str], field_name: str) -> str:
    role = table.get(str(value).lower()) if isinstance(value, str) else None
    if role is None:
        raise Rejected("unsupported_role", field_name, f"role {value!r} is not one of {sorted(table)}")
    return role


def conversation(turns: Iterable[Turn], system: Any = None, meta: dict[str, Any] | None = None,
                 system_field: str = "system", *, repair: bool = False, tools: str | None = None,
                 repairs: Mapping[str, int] | None = None) -> Conversation:
    """Validate (and, with `repair`, fix) the turns; raises Rejected for what cannot be used. `repairs` are
    those the parser already made (renamed roles)."""
    meta = dict(meta or {})
    done: dict[str, int] = dict(repairs) if repairs else {}  # a plain dict: a Counter per row costs 10% of a parse
    messages: list[dict[str, Any]] = []
    state, answered = None, False  # the last turn kept ("call": an answer with tool calls), any answer yet
    for index, (role, value, where, calls, call_id, weight) in enumerate(turns):  # runs once per turn
        if repair and state is None and (role == "assistant" or role == "tool"):
            done["dropped_leading_turns"] = done.get("dropped_leading_turns", 0) + 1
            continue
        content = value if type(value) is str else as_text(value, where)
        if (not content or content.isspace()) and not calls:
            raise Rejected(f"empty_{role}", where, f"turn {index} ({role}) is empty")
        if role in NEXT[state]:
            message = {"role": role, "content": content}
            if calls:
                message["tool_calls"] = calls
            if call_id is not None:
                message["tool_call_id"] = call_id
            if weight is not None:
                message["loss_weight"] = weight
            messages.append(message)
        elif repair and _mergeable(messages[-1] if messages else None, role, calls, weight):
            _merge(messages[-1], content, calls)
            done["merged_turns"] = done.get("merged_turns", 0) + 1
        else:
            why = " (a tool call needs its result first)" if state == "call" else ""
            raise Rejected("not_alternating", where,
                           f"turn {index} is {role}, expected {' or '.join(NEXT[state])}{why}")
        state = "call" if messages[-1].get("tool_calls") else role
        answered = answered or role == "assistant"
    if not messages:
        if done.get("dropped_leading_turns"):
            raise Rejected("no_user_turn", None, "every turn comes before the first user turn (dropped by repair)")
        raise Rejected("no_turns", None, "the conversation has no turns")
    if not answered:
        raise Rejected("no_assistant_turn", None, "there is no assistant turn")
    _trim_unanswered(messages, meta)
    if done:
        meta["repairs"] = dict(sorted(done.items()))
    sys_text = as_text(system, system_field) if system is not None else ""
    return Conversation(messages, sys_text if sys_text and not sys_text.isspace() else None, meta, tools, done)


def _mergeable(previous: dict[str, Any] | None, role: str, calls: Any, weight: float | None) -> bool:
    """The same role twice (user or assistant), the first without tool calls (their results must come next),
    both with the same loss weight."""
    return (previous is not None and role == previous["role"] and role in MERGEABLE
            and not previous.get("tool_calls") and weight == previous.get("loss_weight"))


def _merge(previous: dict[str, Any], content: str, calls: list[dict[str, Any]] | None) -> None:
    parts = [normalize_text(text) for text in (previous["content"], content)]
    previous["content"] = "\n\n".join(part for part in parts if part)
    if calls:
        previous["tool_calls"] = calls


def _trim_unanswered(messages: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Move the turns after the last answer to meta."""
    results = []
    while messages[-1]["role"] == "tool":
        results.insert(0, messages.pop()["content"])
    if results:
        meta["trailing_tool_results"] = results
    if messages[-1]["role"] == "user":
        meta["trailing_user"] = messages.pop()["content"]
