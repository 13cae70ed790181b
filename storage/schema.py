"""The canonical conversation record shared by every stage (see README, "The canonical record")."""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

ROLES = ("user", "assistant")
ID_HASH = hashlib.blake2b(digest_size=32)  # copied for each id: cheaper than a new hash object (one per row)

SOURCE_TYPE = pa.struct(
    [
        pa.field("uri", pa.string()),  # file path, URL or hf:NAME[:CONFIG][@REVISION]
        pa.field("format", pa.string()),  # alpaca, sharegpt, guanaco, medicationqa, ...
        pa.field("split", pa.string()),  # xlsx sheet name or dataset split; null for plain files
        pa.field("row", pa.int64()),  # 0-based row / line / record number inside the source
    ]
)
MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", SOURCE_TYPE),
        pa.field("system", pa.string()),
        pa.field("messages", pa.list_(MESSAGE_TYPE)),
        pa.field("meta", pa.string()),  # JSON object: the source's other columns
    ]
)


def normalize_text(text: str) -> str:
    """The normalization ids are computed on: NFC, unix newlines, no surrounding whitespace."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text).strip()


def record_id(system: str | None, messages: Sequence[Mapping[str, str]]) -> str:
    """Stable content hash: the same normalized conversation always gets the same id, whatever its source."""
    return normalized_id(normalize_text(system or ""), [[m["role"], normalize_text(m["content"])] for m in messages])


def normalized_id(system: str, turns: Sequence[Sequence[str]]) -> str:
    """record_id of text that is normalized already: system ("" for none) and [role, content] turns."""
    # = digest([system, [[role, content], ...]], chars=32): orjson writes the same compact, non-ASCII-preserving
    # JSON as storage.keys.canonical_json for lists of strings, about 10x faster (ingest computes one per row);
    # lists are written faster than tuples, which give the same bytes
    hasher = ID_HASH.copy()
    hasher.update(orjson.dumps([system, turns]))
    return hasher.hexdigest()[:32]


def normalize_conversation(system: str | None, messages: Sequence[Mapping[str, str]]
                           ) -> tuple[str, str | None, list[list[str]]]:
    """(id, normalized system or None when blank, normalized [role, content] turns): what a record stores."""
    turns = [[m["role"], normalize_text(m["content"])] for m in messages]
    sys_text = normalize_system(system)
    return normalized_id(sys_text or "", turns), sys_text, turns


def normalize_system(system: str | None) -> str | None:
    """A system prompt as stored: normalized, None when there is none or it is blank."""
    return normalize_text(system) if system and system.strip() else None


def make_record(
    *,
    messages: Sequence[Mapping[str, str]],
    system: str | None,
    uri: str,
    fmt: str,
    row: int,
    split: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one canonical row (normalized text, id computed) ready for `records_to_table`."""
    conv_id, sys_text, turns = normalize_conversation(system, messages)
    return {
        "id": conv_id,
        "source": {"uri": uri, "format": fmt, "split": split, "row": row},
        "system": sys_text,
        "messages": [{"role": role, "content": content} for role, content in turns],
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

