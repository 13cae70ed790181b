"""Format parsers: one raw record (a dict) → canonical conversations, plus auto-detection from the keys.

Every parser yields `Conversation`s or raises / yields `Rejected` (for the quarantine); turns.py validates the
turns (and repairs them: `FormatOptions.repair`), tools.py reads tool calls in their published spellings. Text
is normalized the way record ids are (storage.schema.normalize_text) before Alpaca parts are joined, so meta's
instruction/input rebuild the user turn exactly (tasks/text.py car_text) and exports split it back.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from storage.schema import normalize_text
from tasks.errors import BadInputError
from tasks.ingest.oasst import parse_oasst_tree
from tasks.ingest.quarantine import Rejected
from tasks.ingest.tools import calls_from_json, message_calls, read_calls, read_loss_weight, read_tools
from tasks.ingest.turns import Conversation, Turn, as_text, conversation, role_of
from tasks.text import alpaca_user_content

MEDICATIONQA_SYSTEM = ("You are a professional, highly experienced doctor professor. You always provide accurate, "
                       "comprehensive, and detailed answers based on the patients' questions.")
MEDICATIONQA_SHEET = "DrugQA"
MEDICATIONQA_MAPPING = {"input": "Question", "output": "Answer"}
MAPPING_KEYS = ("system", "input", "output")

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}
RENAMED_ASSISTANTS = frozenset(("chatgpt", "bing", "bard", "model"))  # ShareGPT V3 names read when repairing
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool",
                "function": "tool",  # OpenAI's legacy function results
                "function_call": "assistant", "observation": "tool"}  # LLaMA-Factory's tags in role/content data
ALPACA_OWN = frozenset(("output", "system", "history"))  # alpaca fields not copied into meta
ALPACA_FIELDS = ALPACA_OWN | {"instruction", "input"}
GUANACO_MARKER = re.compile(r"###\s*(Human|Assistant)\s*:")
PREFERENCE_HINT = "--preference chosen (source option preference: chosen) takes the chosen answer"


@dataclass(frozen=True)
class FormatOptions:
    mapping: Mapping[str, str] | None = None  # columns format: system/input/output -> column name
    system_prompt: str | None = None  # a system prompt for records that have none
    repair: bool = True  # the repair policy of turns.py
    lang: frozenset[str] | None = None  # keep only conversations in these languages (lowercase)
    preference: str | None = None  # "chosen": a preference record's chosen answer is the assistant turn


# -- helpers -------------------------------------------------------------------------------------------------
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


def _split_system(turns: list[Turn], system: Any) -> tuple[list[Turn], Any]:
    if turns and turns[0].role == "system":
        if system:
            raise Rejected("bad_structure", turns[0].field, "a system turn and a system field")
        system, turns = turns[0].content, turns[1:]
    return turns, system


def is_preference(obj: Mapping[str, Any]) -> bool:
    return "chosen" in obj and "rejected" in obj


def with_chosen(obj: Mapping[str, Any], turns: list[Turn], meta: dict[str, Any], opts: FormatOptions,
                read_turn: Callable[[Any, str], Turn]) -> list[Turn]:
    """A preference record (LLaMA-Factory's ranking data: conversations + chosen + rejected): its chosen answer
    becomes the assistant turn and the rejected one is kept in meta["rejected"]; quarantined unless asked for."""
    if opts.preference != "chosen":
        raise Rejected("preference_record", "chosen", f"a preference pair (chosen and rejected answers): "
                                                      f"{PREFERENCE_HINT} as the assistant turn")
    for name in ("chosen", "rejected"):
        meta.pop(name, None)
    rejected = obj["rejected"]
    meta["rejected"] = (rejected.get("value", rejected.get("content")) if isinstance(rejected, Mapping)
                        else rejected)
    return [*turns, read_turn(obj["chosen"], "chosen")]


# -- the formats ---------------------------------------------------------------------------------------------
def parse_alpaca(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """instruction / input / output, with LLaMA-Factory's optional system and history ([[user, assistant], …])."""
    instruction = normalize_text(as_text(obj.get("instruction"), "instruction"))
    input_text = normalize_text(as_text(obj.get("input"), "input"))
    turns: list[Turn] = []
    for pair in obj.get("history") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise Rejected("bad_structure", "history", "history items must be [user, assistant] pairs")
        turns += [Turn("user", pair[0], "history"), Turn("assistant", pair[1], "history")]
    user = alpaca_user_content(instruction, input_text) if instruction else ""
    turns += [Turn("user", user, "instruction"), Turn("assistant", obj.get("output"), "output")]
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
            yield conversation([Turn("user", user, "instruction"),
                                Turn("assistant", instance.get("output"), f"instances[{i}].output")],
                               opts.system_prompt, meta)
        except Rejected as rejected:
            yield rejected


def sharegpt_turn(turn: Any, where: str, opts: FormatOptions, renamed: dict[str, int]) -> Turn:
    """One {from, value} turn; `function_call` turns are assistant tool calls, `observation` turns tool results."""
    if type(turn) is not dict and not isinstance(turn, Mapping):  # the type check first: this runs once per turn
        raise Rejected("bad_structure", where, "a turn must be an object")
    name = turn.get("from")
    key = name.lower() if type(name) is str else None
    role = SHAREGPT_ROLES.get(key)
    if role is None and opts.repair and key in RENAMED_ASSISTANTS:
        role = "assistant"
        renamed["renamed_roles"] = renamed.get("renamed_roles", 0) + 1
    if role is None:
        extra = f" ({', '.join(sorted(RENAMED_ASSISTANTS))} are read with repair on)" if not opts.repair else ""
        raise Rejected("unsupported_role", where + ".from", f"role {name!r} is not one of {sorted(SHAREGPT_ROLES)}"
                                                           f"{extra}")
    if key == "function_call":
        return Turn("assistant", "", where, calls_from_json(turn.get("value"), where + ".value"))
    return Turn(role, turn.get("value"), where)


def parse_sharegpt(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """conversations: [{from: human|gpt|system|function_call|observation, value}], optional top-level system and
    tools (LLaMA-Factory), chosen/rejected for preference data."""
    renamed: dict[str, int] = {}

    def read(turn: Any, where: str) -> Turn:
        return sharegpt_turn(turn, where, opts, renamed)

    yield turn_list(obj, opts, "conversations", read, renamed)


def turn_list(obj: Mapping[str, Any], opts: FormatOptions, key: str, read_turn: Callable[[Any, str], Turn],
              repairs: Mapping[str, int] | None = None) -> Conversation:
    """The shape ShareGPT and OpenAI records share: turns under `key`, an optional system prompt (a first system
    turn or a field) and tool definitions, chosen/rejected for preference data."""
    turns = [read_turn(turn, f"{key}[{i}]") for i, turn in enumerate(require(obj, key))]
    meta = rest(obj, (key, "system", "tools"))
    if is_preference(obj):
        turns = with_chosen(obj, turns, meta, opts, read_turn)
    turns, system = _split_system(turns, obj.get("system"))
    return conversation(turns, system or opts.system_prompt, meta, repair=opts.repair,
                        tools=read_tools(obj.get("tools"), "tools"), repairs=repairs)


def message_content(value: Any, field_name: str) -> tuple[Any, list[dict[str, Any]]]:
    """OpenAI content: a string, or a list of parts whose text parts are joined (text under `text`, or under
    `value` as in LLaMA-Factory v1, whose `tool_call` parts are calls). Returns (text, calls)."""
    if not isinstance(value, list):
        return value, []
    texts, calls = [], []
    for part in value:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            texts.append(part["text"] if "text" in part else part.get("value", ""))
        elif kind in ("tool_call", "tool_calls"):
            calls += calls_from_json(part.get("value"), field_name)
        else:
            raise Rejected("unsupported_content", field_name,
                           f"only text and tool_call content parts are read, found {kind or type(part).__name__!r}")
    return "\n".join(t if isinstance(t, str) else as_text(t, field_name) for t in texts), calls


def openai_turn(message: Any, where: str) -> Turn:
    """One message: role/content, tool calls (OpenAI's or LLaMA-Factory's), the answered call id, loss weight."""
    if not isinstance(message, Mapping):
        raise Rejected("bad_structure", where, "a message must be an object")
    role = role_of(message.get("role"), OPENAI_ROLES, where + ".role")
    text, calls = message_content(message.get("content"), where + ".content")
    calls += message_calls(message, where)
    if str(message["role"]).lower() == "function_call":  # LLaMA-Factory: the content is the call's JSON
        calls, text = calls + calls_from_json(text, where + ".content"), ""
    call_id = message.get("tool_call_id")
    return Turn(role, text, where, calls or None, None if call_id is None else str(call_id),
                read_loss_weight(message, role, where))


def parse_openai(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """messages: [{role: system|user|assistant|tool, content, tool_calls?, tool_call_id?, loss_weight|weight?}],
    optional top-level tools; chosen/rejected for preference data."""
    yield turn_list(obj, opts, "messages", openai_turn)


def canonical_turn(message: Any, where: str) -> Turn:
    if not isinstance(message, Mapping):
        return Turn("?", None, where)
    calls = read_calls(message["tool_calls"], where + ".tool_calls") if message.get("tool_calls") else None
    role = message.get("role")
    weight = read_loss_weight(message, role, where) if isinstance(role, str) else None
    call_id = message.get("tool_call_id")
    return Turn(role, message.get("content"), where, calls, None if call_id is None else str(call_id), weight)


def parse_canonical(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """Our own schema (store exports, the self-instruct generator): messages/system/tools/meta; the id is
    recomputed from the content and the lineage becomes this file."""
    turns = [canonical_turn(m, f"messages[{i}]") for i, m in enumerate(require(obj, "messages"))]
    meta = obj.get("meta")
    try:
        meta = json.loads(meta) if isinstance(meta, str) else dict(meta or {})
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise Rejected("bad_structure", "meta", f"meta is not a JSON object: {exc}") from None
    yield conversation(turns, obj.get("system") or opts.system_prompt, meta, repair=opts.repair,
                       tools=read_tools(obj.get("tools"), "tools"))


def parse_guanaco(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """One text field of `### Human: … ### Assistant: …` turns (openassistant-guanaco). Markers may follow
    the previous turn with no space or newline, as in the seed's example."""
    text = as_text(obj.get("text"), "text")
    parts = GUANACO_MARKER.split(text)
    if len(parts) == 1:
        raise Rejected("no_turn_markers", "text", "no '### Human:' / '### Assistant:' marker")
    if parts[0].strip():
        raise Rejected("bad_structure", "text", "text before the first '### Human:' marker")
    turns = [Turn("user" if who == "Human" else "assistant", body, "text")
             for who, body in zip(parts[1::2], parts[2::2])]
    yield conversation(turns, opts.system_prompt, rest(obj, ("text",)), repair=opts.repair)


def parse_xtuner(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """{"conversation": [{system, input, output, output_with_loss?}, …]}: the system prompt rides on the first
    turn; `output_with_loss: false` is a loss weight of 0 on that answer."""
    turns, system = [], None
    for i, item in enumerate(require(obj, "conversation")):
        where = f"conversation[{i}]"
        if not isinstance(item, Mapping):
            raise Rejected("bad_structure", where, "a turn must be an object")
        system = system or item.get("system")
        weight = 0.0 if item.get("output_with_loss", True) is False else None
        turns += [Turn("user", item.get("input"), where + ".input"),
                  Turn("assistant", item.get("output"), where + ".output", loss_weight=weight)]
    yield conversation(turns, system or opts.system_prompt, rest(obj, ("conversation",)), repair=opts.repair)


def parse_columns(obj: Mapping[str, Any], opts: FormatOptions) -> Iterator[Conversation]:
    """A table row mapped by `mapping` (system/input/output → column); other columns go to meta."""
    mapping = dict(opts.mapping or {})
    for name in ("input", "output"):
        if mapping.get(name) not in obj:
            raise Rejected("missing_field", mapping.get(name), f"the row has no {mapping.get(name)!r} column")
    system_col = mapping.get("system")
    question, answer = mapping["input"], mapping["output"]
    turns = [Turn("user", obj[question], question), Turn("assistant", obj[answer], answer)]
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
    "oasst-trees": parse_oasst_tree,
    "columns": parse_columns,
    "medicationqa": parse_columns,
}
TABLE_FORMATS = ("oasst1",)  # formats that need every row at once (message trees)
FORMATS = (*PARSERS, *TABLE_FORMATS)


def options_for(fmt: str, mapping: Mapping[str, str] | None, system_prompt: str | None, *, repair: bool = True,
                lang: Iterable[str] | None = None, preference: str | None = None) -> FormatOptions:
    langs = frozenset(code.strip().lower() for code in lang) if lang else None
    common = {"repair": repair, "lang": langs, "preference": preference}
    if fmt == "medicationqa":
        return FormatOptions(mapping or MEDICATIONQA_MAPPING, system_prompt or MEDICATIONQA_SYSTEM, **common)
    if fmt == "columns":
        if not mapping or "input" not in mapping or "output" not in mapping:
            raise BadInputError(f"format 'columns' needs a mapping with input and output columns, got {mapping}",
                                field="mapping")
        unknown = set(mapping) - set(MAPPING_KEYS)
        if unknown:
            raise BadInputError(f"mapping keys must be {MAPPING_KEYS}, got {sorted(unknown)}", field="mapping")
    return FormatOptions(mapping, system_prompt, **common)


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
    if ({"message_tree_id", "prompt"} <= keys and isinstance(sample.get("prompt"), Mapping)) or (
            {"message_id", "text", "role"} <= keys and isinstance(sample.get("replies"), list)):
        return "oasst-trees"  # OpenAssistant's own exports: a tree per line, or message nodes with nested replies
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
