"""Format parsers: one raw record (a dict) → canonical conversations, plus auto-detection from the keys.

Every parser yields `Conversation`s or raises / yields `Rejected` (for the quarantine). Text is normalized
the way record ids are (storage.schema.normalize_text) before Alpaca parts are joined, so meta's
instruction/input rebuild the user turn exactly (tasks/text.py car_text) and exports split it back.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from storage.schema import normalize_text
from tasks.errors import BadInputError
from tasks.ingest.quarantine import CellError, Rejected
from tasks.text import alpaca_user_content

MEDICATIONQA_SYSTEM = ("You are a professional, highly experienced doctor professor. You always provide accurate, "
                       "comprehensive, and detailed answers based on the patients' questions.")
MEDICATIONQA_SHEET = "DrugQA"
MEDICATIONQA_MAPPING = {"input": "Question", "output": "Answer"}
MAPPING_KEYS = ("system", "input", "output")

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
ALPACA_OWN = frozenset(("output", "system", "history"))  # alpaca fields not copied into meta
ALPACA_FIELDS = ALPACA_OWN | {"instruction", "input"}
GUANACO_MARKER = re.compile(r"###\s*(Human|Assistant)\s*:")


@dataclass
class Conversation:
    messages: list[dict[str, str]]
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FormatOptions:
    mapping: Mapping[str, str] | None = None  # columns format: system/input/output -> column name
    system_prompt: str | None = None  # a system prompt for records that have none


# -- helpers -------------------------------------------------------------------------------------------------
def as_text(value: Any, field_name: str) -> str:
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


def conversation(turns: Iterable[tuple[str, Any, str]], system: Any = None, meta: dict[str, Any] | None = None,
                 system_field: str = "system") -> Conversation:
    """Validate (role, content, field) turns: non-empty, alternating user/assistant, starting with the user
    and ending with an answer. A trailing unanswered user turn is moved to meta["trailing_user"]."""
    meta = dict(meta or {})
    messages: list[dict[str, str]] = []
    for index, (role, value, field_name) in enumerate(turns):
        content = as_text(value, field_name)
        if not content or content.isspace():
            raise Rejected(f"empty_{role}", field_name, f"turn {index} ({role}) is empty")
        expected = "user" if len(messages) % 2 == 0 else "assistant"
        if role != expected:
            raise Rejected("not_alternating", field_name, f"turn {index} is {role}, expected {expected}")
        messages.append({"role": role, "content": content})
    if not messages:
        raise Rejected("no_turns", None, "the conversation has no turns")
    if messages[-1]["role"] == "user":
        if len(messages) == 1:
            raise Rejected("no_assistant_turn", None, "there is no assistant turn")
        meta["trailing_user"] = messages.pop()["content"]
    sys_text = as_text(system, system_field) if system is not None else ""
    return Conversation(messages, sys_text if sys_text and not sys_text.isspace() else None, meta)


def rest(obj: Mapping[str, Any], used: Iterable[str]) -> dict[str, Any]:
    """The record's other fields, kept in meta."""
    meta = dict(obj)  # a copy and a few pops: about twice as fast as a comprehension (this runs once per row)
    for name in used:
        meta.pop(name, None)
    return meta


def require(obj: Mapping[str, Any], name: str, kind: type = list) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        found = "nothing" if value is None else type(value).__name__
        raise Rejected("bad_structure", name, f"expected a {kind.__name__} in {name!r}, found {found}")
    return value


# -- the formats ---------------------------------------------------------------------------------------------
def parse_alpaca(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """instruction / input / output, with LLaMA-Factory's optional system and history ([[user, assistant], …])."""
    instruction = normalize_text(as_text(obj.get("instruction"), "instruction"))
    input_text = normalize_text(as_text(obj.get("input"), "input"))
    turns: list[tuple[str, Any, str]] = []
    for pair in obj.get("history") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise Rejected("bad_structure", "history", "history items must be [user, assistant] pairs")
        turns += [("user", pair[0], "history"), ("assistant", pair[1], "history")]
    user = alpaca_user_content(instruction, input_text) if instruction else ""
    turns += [("user", user, "instruction"), ("assistant", obj.get("output"), "output")]
    yield conversation(turns, obj.get("system") or opts.system_prompt, alpaca_meta(obj, instruction, input_text))


def alpaca_meta(obj: Mapping[str, Any], instruction: str, input_text: str) -> dict[str, Any]:
    """The record's other fields plus the normalized pair the user turn was built from (exports split it back)."""
    if obj.keys() <= ALPACA_FIELDS:  # no other fields (nearly always): no copy of the record
        return {"instruction": instruction, "input": input_text}
    meta = rest(obj, ALPACA_OWN)
    meta.update(instruction=instruction, input=input_text)
    return meta


def parse_self_instruct(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation | Rejected]:
    """Alpaca seed tasks: instruction + instances[{input, output}], one record per instance."""
    instruction = normalize_text(as_text(obj.get("instruction"), "instruction"))
    base = rest(obj, ("instances",))
    for i, instance in enumerate(require(obj, "instances")):
        try:
            if not isinstance(instance, Mapping):
                raise Rejected("bad_structure", f"instances[{i}]", "an instance must be an object")
            input_text = normalize_text(as_text(instance.get("input"), f"instances[{i}].input"))
            user = alpaca_user_content(instruction, input_text) if instruction else ""
            meta = {**base, "instruction": instruction, "input": input_text, "instance": i}
            yield conversation([("user", user, "instruction"),
                                ("assistant", instance.get("output"), f"instances[{i}].output")],
                               opts.system_prompt, meta)
        except Rejected as rejected:
            yield rejected


def role_of(value: Any, table: Mapping[str, str], field_name: str) -> str:
    role = table.get(str(value).lower()) if isinstance(value, str) else None
    if role is None:
        raise Rejected("unsupported_role", field_name, f"role {value!r} is not one of {sorted(table)}")
    return role


def _split_system(turns: list[tuple[str, Any, str]], system: Any) -> tuple[list[tuple[str, Any, str]], Any]:
    if turns and turns[0][0] == "system":
        if system:
            raise Rejected("bad_structure", turns[0][2], "a system turn and a system field")
        system, turns = turns[0][1], turns[1:]
    return turns, system


def parse_sharegpt(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """conversations: [{from: human|gpt|system, value}], optional top-level system (LLaMA-Factory)."""
    turns = []
    for i, turn in enumerate(require(obj, "conversations")):
        where = f"conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise Rejected("bad_structure", where, "a turn must be an object")
        turns.append((role_of(turn.get("from"), SHAREGPT_ROLES, where + ".from"), turn.get("value"), where))
    turns, system = _split_system(turns, obj.get("system"))
    yield conversation(turns, system or opts.system_prompt, rest(obj, ("conversations", "system")))


def message_content(value: Any, field_name: str) -> Any:
    """OpenAI content: a string, or a list of parts of which the text parts are joined."""
    if isinstance(value, list):
        texts = [p.get("text", "") for p in value if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(texts) != len(value):
            raise Rejected("unsupported_content", field_name, "only text content parts are supported")
        return "\n".join(texts)
    return value


def parse_openai(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """messages: [{role: system|user|assistant, content}]."""
    turns = []
    for i, message in enumerate(require(obj, "messages")):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise Rejected("bad_structure", where, "a message must be an object")
        role = role_of(message.get("role"), {"system": "system", "user": "user", "assistant": "assistant"},
                     where + ".role")
        turns.append((role, message_content(message.get("content"), where + ".content"), where))
    turns, system = _split_system(turns, obj.get("system"))
    yield conversation(turns, system or opts.system_prompt, rest(obj, ("messages", "system")))


def parse_canonical(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """Our own schema (store exports, the self-instruct generator): messages/system/meta; the id is recomputed
    from the content and the lineage becomes this file."""
    turns = [(m.get("role"), m.get("content"), f"messages[{i}]") if isinstance(m, Mapping)
             else ("?", None, f"messages[{i}]") for i, m in enumerate(require(obj, "messages"))]
    meta = obj.get("meta")
    try:
        meta = json.loads(meta) if isinstance(meta, str) else dict(meta or {})
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise Rejected("bad_structure", "meta", f"meta is not a JSON object: {exc}") from None
    yield conversation(turns, obj.get("system") or opts.system_prompt, meta)


def parse_guanaco(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """One text field of `### Human: … ### Assistant: …` turns (openassistant-guanaco). Markers may follow
    the previous turn with no space or newline, as in the seed's example."""
    text = as_text(obj.get("text"), "text")
    parts = GUANACO_MARKER.split(text)
    if len(parts) == 1:
        raise Rejected("no_turn_markers", "text", "no '### Human:' / '### Assistant:' marker")
    if parts[0].strip():
        raise Rejected("bad_structure", "text", "text before the first '### Human:' marker")
    turns = [("user" if who == "Human" else "assistant", body, "text") for who, body in zip(parts[1::2], parts[2::2])]
    yield conversation(turns, opts.system_prompt, rest(obj, ("text",)))


def parse_xtuner(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """{"conversation": [{system, input, output}, …]}: the system prompt rides on the first turn."""
    turns, system = [], None
    for i, item in enumerate(require(obj, "conversation")):
        where = f"conversation[{i}]"
        if not isinstance(item, Mapping):
            raise Rejected("bad_structure", where, "a turn must be an object")
        system = system or item.get("system")
        turns += [("user", item.get("input"), where + ".input"), ("assistant", item.get("output"), where + ".output")]
    yield conversation(turns, system or opts.system_prompt, rest(obj, ("conversation",)))


def parse_columns(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """A table row mapped by `mapping` (system/input/output → column); other columns go to meta."""
    mapping = dict(opts.mapping or {})
    for name in ("input", "output"):
        if mapping.get(name) not in obj:
            raise Rejected("missing_field", mapping.get(name), f"the row has no {mapping.get(name)!r} column")
    system_col = mapping.get("system")
    question, answer = mapping["input"], mapping["output"]
    turns = [("user", obj[question], question), ("assistant", obj[answer], answer)]
    system = obj.get(system_col) if system_col else None
    yield conversation(turns, system or opts.system_prompt, rest(obj, mapping.values()), system_col or "system")


Parser = Callable[[Mapping[str, Any], FormatOptions], Iterable[Conversation | Rejected]]

PARSERS: dict[str, Parser] = {
    "alpaca": parse_alpaca,
    "sharegpt": parse_sharegpt,
    "openai": parse_openai,
    "guanaco": parse_guanaco,
    "xtuner": parse_xtuner,
    "self-instruct": parse_self_instruct,
    "canonical": parse_canonical,
    "columns": parse_columns,
    "medicationqa": parse_columns,
}
TABLE_FORMATS = ("oasst1",)  # formats that need every row at once (message trees)
FORMATS = (*PARSERS, *TABLE_FORMATS)


def options_for(fmt: str, mapping: Mapping[str, str] | None, system_prompt: str | None) -> FormatOptions:
    if fmt == "medicationqa":
        return FormatOptions(mapping or MEDICATIONQA_MAPPING, system_prompt or MEDICATIONQA_SYSTEM)
    if fmt == "columns":
        if not mapping or "input" not in mapping or "output" not in mapping:
            raise BadInputError(f"format 'columns' needs a mapping with input and output columns, got {mapping}",
                                field="mapping")
        unknown = set(mapping) - set(MAPPING_KEYS)
        if unknown:
            raise BadInputError(f"mapping keys must be {MAPPING_KEYS}, got {sorted(unknown)}", field="mapping")
    return FormatOptions(mapping, system_prompt)


def check_columns(columns: Iterable[str], opts: FormatOptions, file: str) -> None:
    """A mapping that names columns the source does not have is a configuration error, not a bad row."""
    found = list(columns)
    missing = [col for col in (opts.mapping or {}).values() if col not in found]
    if missing:
        raise BadInputError(f"missing column(s) {missing}: the headers found are {found}, the mapping asked for "
                            f"{dict(opts.mapping or {})} (set mapping / --map to the right headers)", file=file)


def detect_format(sample: Mapping[str, Any], mapping: Mapping[str, str] | None = None) -> str | None:
    """The format a record's keys say it is in, or None."""
    keys = set(sample)
    if mapping:
        return "columns"
    if {"Question", "Answer", "Focus (Drug)"} <= keys:
        return "medicationqa"
    if "conversations" in keys:
        return "sharegpt"
    if "conversation" in keys:
        return "xtuner"
    if {"id", "messages", "source"} <= keys:
        return "canonical"
    if "messages" in keys:
        return "openai"
    if {"instruction", "instances"} <= keys:
        return "self-instruct"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"message_id", "parent_id", "text", "role"} <= keys:
        return "oasst1"
    if "text" in keys and isinstance(sample.get("text"), str) and GUANACO_MARKER.search(sample["text"]):
        return "guanaco"
    return None


def undetected(file: str, sample: Mapping[str, Any] | None) -> BadInputError:
    seen = f"its first record has the keys {sorted(sample)}" if sample is not None else "it holds no readable record"
    return BadInputError(f"cannot tell the format: {seen}. Pass --format (one of {', '.join(FORMATS)}), or "
                         "--map input=COLUMN --map output=COLUMN for a plain table", file=file)
