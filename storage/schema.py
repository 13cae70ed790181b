"""The canonical conversation record shared by every stage (see README, "The canonical record")."""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

ROLES = ("user", "assistant", "tool")
ID_HASH = hashlib.blake2b(digest_size=32)  # copied for each id: cheaper than a new hash object (one per row)

SOURCE_TYPE = pa.struct(
    [
        pa.field("uri", pa.string()),  # file path, URL or hf:NAME[:CONFIG][@REVISION]
        pa.field("format", pa.string()),  # alpaca, sharegpt, guanaco, medicationqa, ...
        pa.field("split", pa.string()),  # xlsx sheet name or dataset split; null for plain files
        pa.field("row", pa.int64()),  # 0-based row / line / record number inside the source
    ]
)
TOOL_CALL_TYPE = pa.struct(
    [
        pa.field("id", pa.string()),  # the source's call id (OpenAI), null when it has none; not part of the record id
        pa.field("name", pa.string()),
        pa.field("arguments", pa.string()),  # JSON text, compact, in the source's key order
    ]
)
MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string()),
        pa.field("content", pa.string()),
        pa.field("tool_calls", pa.list_(TOOL_CALL_TYPE)),  # assistant turns that call tools; null otherwise
        pa.field("tool_call_id", pa.string()),  # tool turns: the call answered, when the source names it
        pa.field("loss_weight", pa.float64()),  # 0: no loss on this assistant turn; null: the default (loss)
    ]
)
MESSAGE_EXTRAS = ("tool_calls", "tool_call_id", "loss_weight")

CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", SOURCE_TYPE),
        pa.field("system", pa.string()),
        pa.field("messages", pa.list_(MESSAGE_TYPE)),
        pa.field("meta", pa.string()),  # JSON object: the source's other columns
        pa.field("tools", pa.string()),  # JSON array of function definitions {name, description, parameters}
    ]
)


def normalize_text(text: str) -> str:
    """The normalization ids are computed on: NFC, unix newlines, no surrounding whitespace."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text).strip()


def record_id(system: str | None, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
    """Stable content hash: the same normalized conversation always gets the same id, whatever its source."""
    return normalize_conversation(system, messages, tools).id


def normalized_id(system: str, turns: Sequence[Sequence[str]], extras: Sequence[Mapping[str, Any] | None] | None = None,
                  tools: str | None = None) -> str:
    """record_id of text that is normalized already: system ("" for none), [role, content] turns, and the turns'
    normalized extras (tool calls, loss weights) and tool definitions when a record has any."""
    # = digest([system, [[role, content], ...]], chars=32): orjson writes the same compact, non-ASCII-preserving
    # JSON as storage.keys.canonical_json for lists of strings, about 10x faster (ingest computes one per row);
    # lists are written faster than tuples, which give the same bytes
    hasher = ID_HASH.copy()
    keyed = _keyed_extras(extras) if extras is not None else None
    if keyed is None and tools is None:  # every record without the tool and loss fields: ids as before they existed
        hasher.update(orjson.dumps([system, turns]))
    else:  # a turn with extras becomes [role, content, {extras}]; the tool definitions come last
        keyed = keyed or [None] * len(turns)
        hashed = [[*turn, extra] if extra else turn for turn, extra in zip(turns, keyed)]
        hasher.update(orjson.dumps([system, hashed, tools], option=orjson.OPT_SORT_KEYS))
    return hasher.hexdigest()[:32]


def _keyed_extras(extras: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any] | None] | None:
    """The part of each turn's extras that is content: call names and arguments and loss weights. Call ids are
    opaque handles (ShareGPT has none), so the same calls read from either spelling get the same id."""
    keyed, found = [], False
    for extra in extras:
        item: dict[str, Any] = {}
        if extra:
            if extra.get("tool_calls"):
                item["tool_calls"] = [[call["name"], call["arguments"]] for call in extra["tool_calls"]]
            if extra.get("loss_weight") is not None:
                item["loss_weight"] = extra["loss_weight"]
        found = found or bool(item)
        keyed.append(item or None)
    return keyed if found else None


class Normalized(NamedTuple):
    id: str
    system: str | None  # None when there is none or it is blank
    turns: list[list[str]]  # [role, content], normalized
    extras: list[dict[str, Any] | None] | None  # per turn (None: no turn has any)
    tools: str | None


def normalize_conversation(system: str | None, messages: Sequence[Mapping[str, Any]], tools: Any = None
                           ) -> Normalized:
    """What a record stores: the id, the normalized system prompt, turns, turn extras and tool definitions."""
    turns = [[m["role"], normalize_text(m["content"])] for m in messages]
    # a message with only role and content (what ingest builds for nearly every turn) has no extras to look for
    extras = [message_extras(m) for m in messages] if any(len(m) > 2 for m in messages) else None
    sys_text = normalize_system(system)
    tools_text = normalize_tools(tools) if tools is not None else None
    extras_or_none = extras if extras and any(extras) else None
    return Normalized(normalized_id(sys_text or "", turns, extras_or_none, tools_text), sys_text, turns,
                      extras_or_none, tools_text)


def normalize_system(system: str | None) -> str | None:
    """A system prompt as stored: normalized, None when there is none or it is blank."""
    return normalize_text(system) if system and system.strip() else None


def message_extras(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """A message's tool calls, answered call id and loss weight, normalized; None when it has none."""
    calls, call_id, weight = message.get("tool_calls"), message.get("tool_call_id"), message.get("loss_weight")
    if not calls and call_id is None and weight is None:  # nearly every message: nothing to normalize
        return None
    weight = normalize_loss_weight(message.get("role"), weight)
    if not calls and call_id is None and weight is None:
        return None
    extras: dict[str, Any] = {}
    if calls:
        extras["tool_calls"] = normalize_tool_calls(calls)
    if call_id is not None:
        extras["tool_call_id"] = str(call_id)
    if weight is not None:
        extras["loss_weight"] = weight
    return extras


def normalize_loss_weight(role: Any, weight: Any) -> float | None:
    """None for the default (loss on assistant turns, none elsewhere), else the weight as a float."""
    if weight is None:
        return None
    weight = float(weight)
    return None if weight == (1.0 if role == "assistant" else 0.0) else weight


def json_text(value: Any) -> str:
    """Compact JSON of a value, or of the JSON a string holds (keys in their order); ValueError if not JSON."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def normalize_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """[{id, name, arguments}] with arguments as compact JSON text; ValueError for a call without a name."""
    out = []
    for call in calls:
        name = call.get("name") if isinstance(call, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a tool call needs a name, got {call!r:.80}")
        call_id = call.get("id")
        out.append({"id": None if call_id is None else str(call_id), "name": name.strip(),
                    "arguments": json_text(call.get("arguments"))})
    return out


def normalize_tools(tools: Any) -> str | None:
    """Tool definitions (a list of objects with a name, or its JSON text) as compact JSON; None for none."""
    if tools is None or (isinstance(tools, str) and not tools.strip()):
        return None
    if isinstance(tools, str):
        try:
            tools = orjson.loads(tools)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"tools are not JSON: {exc}") from None
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) and isinstance(t.get("name"), str)
                                             for t in tools):
        raise ValueError("tools must be a list of function definitions, each with a name")
    return json_text(tools) if tools else None


def make_record(
    *,
    messages: Sequence[Mapping[str, Any]],
    system: str | None,
    uri: str,
    fmt: str,
    row: int,
    split: str | None = None,
    meta: Mapping[str, Any] | None = None,
    tools: Any = None,
) -> dict[str, Any]:
    """Build one canonical row (normalized text, id computed) ready for `records_to_table`."""
    record = normalize_conversation(system, messages, tools)
    extras = record.extras or [None] * len(record.turns)
    return {
        "id": record.id,
        "source": {"uri": uri, "format": fmt, "split": split, "row": row},
        "system": record.system,
        "tools": record.tools,
        "messages": [{"role": role, "content": content, **(extra or {})}
                     for (role, content), extra in zip(record.turns, extras)],
        "meta": meta_json(meta),
    }


def meta_json(meta: Mapping[str, Any] | None) -> str:
    """meta as a JSON object string: sorted keys, non-ASCII kept, other types (dates, ...) written as text."""
    try:  # orjson is about twice as fast without OPT_NON_STR_KEYS, which only keys that are not text need
        return orjson.dumps(meta if type(meta) is dict else dict(meta or {}), default=str,
                            option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return orjson.dumps(dict(meta or {}), default=str,
                            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def records_to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(records), schema=CONVERSATION_SCHEMA)

