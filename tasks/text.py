"""Text views of a canonical record shared by the IQS and the embedding stages.

CaR scores and embeds "Instruction: {instruction} Input: {input} Response: {output}" (the " Input: …" part
only when there is an input). An Alpaca-style record keeps `instruction` and `input` in its meta, so the
exact CaR text can be rebuilt; otherwise the user turn is the instruction. Multi-turn conversations are
joined turn by turn with role names. The system prompt is left out, as CaR had none.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def alpaca_user_content(instruction: str, input_text: str | None) -> str:
    """How an Alpaca instruction/input pair becomes one user turn (and how exports split it back)."""
    return f"{instruction}\n\n{input_text}" if input_text and input_text.strip() else instruction


def single_turn_parts(messages: Sequence[Mapping[str, str]],
                      meta: str | Mapping[str, Any] | None = None) -> tuple[str, str, str] | None:
    """(instruction, input, response) of a one-question, one-answer record (Alpaca's split of the user turn
    from its meta when it matches); None for any other record."""
    if not (len(messages) == 2 and messages[0]["role"] == "user" and messages[1]["role"] == "assistant"):
        return None
    meta = json.loads(meta) if isinstance(meta, str) else dict(meta or {})
    instruction, input_text = messages[0]["content"], ""
    if isinstance(meta.get("instruction"), str) and isinstance(meta.get("input"), str):
        if alpaca_user_content(meta["instruction"].strip(), meta["input"].strip()) == instruction:
            instruction, input_text = meta["instruction"].strip(), meta["input"].strip()
    return instruction, input_text, messages[1]["content"]


def joined_turns(messages: Sequence[Mapping[str, str]]) -> str:
    return " ".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def car_text(messages: Sequence[Mapping[str, str]], meta: str | Mapping[str, Any] | None = None) -> str:
    parts = single_turn_parts(messages, meta)
    if parts is None:
        return joined_turns(messages)
    instruction, input_text, response = parts
    text = f"Instruction: {instruction}"
    if input_text:
        text += f" Input: {input_text}"
    return f"{text} Response: {response}"


def table_texts(table: Any) -> list[str]:
    """car_text for every row of a conversation table (pyarrow)."""
    rows = table.select(["messages", "meta"]).to_pylist()
    return [car_text(r["messages"], r["meta"]) for r in rows]
