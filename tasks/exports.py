"""The formatted selection in other trainers' formats: plain formatted text (JSONL), xtuner's conversation
JSONL, and a LLaMA-Factory dataset folder (sharegpt-style data file plus its dataset_info.json entry).

xtuner and LLaMA-Factory apply their own prompt templates, so they get the conversations, not our text; a
trailing user turn without an answer is left out there (both reject or ignore it; it carries no loss here).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

EXPORTS = ("text", "xtuner", "llamafactory")


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def answered(messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    end = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return list(messages[:end + 1])


def effective_system(record: Mapping[str, Any], override: str | None) -> str | None:
    system = override if override is not None else record.get("system")
    return system or None


def text_jsonl(ids: Sequence[str], texts: Sequence[str]) -> bytes:
    return _jsonl({"id": i, "text": t} for i, t in zip(ids, texts))


def xtuner_jsonl(records: Sequence[Mapping[str, Any]], system: str | None = None) -> bytes:
    """xtuner's single/multi-turn format: {"conversation": [{"system", "input", "output"}, {"input", "output"}]}."""
    rows = []
    for record in records:
        turns, pending = [], None
        for message in answered(record["messages"]):
            if message["role"] == "user":
                pending = message["content"] if pending is None else pending + "\n\n" + message["content"]
            else:
                turns.append({"input": pending or "", "output": message["content"]})
                pending = None
        sys_text = effective_system(record, system)
        if sys_text and turns:
            turns[0] = {"system": sys_text, **turns[0]}
        rows.append({"id": record["id"], "conversation": turns})
    return _jsonl(rows)


def llamafactory_files(records: Sequence[Mapping[str, Any]], name: str, system: str | None = None
                       ) -> dict[str, bytes]:
    """`data.json` (sharegpt formatting with OpenAI-style role/content tags) and `dataset_info.json`."""
    data = []
    for record in records:
        row: dict[str, Any] = {"id": record["id"], "messages": [
            {"role": m["role"], "content": m["content"]} for m in answered(record["messages"])]}
        sys_text = effective_system(record, system)
        if sys_text:
            row["system"] = sys_text
        data.append(row)
    info = {name: {"file_name": "data.json", "formatting": "sharegpt",
                   "columns": {"messages": "messages", "system": "system"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant"}}}
    return {"data.json": json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"),
            "dataset_info.json": json.dumps(info, indent=2).encode("utf-8")}
