"""Exports of a canonical conversation table: xtuner JSONL, Alpaca JSON, ShareGPT JSON, OpenAI-messages JSONL,
and the canonical table itself (parquet or JSONL). Written streaming, one batch at a time; `.gz` compresses.

Alpaca splits the user turn back into instruction and input when meta holds the pair it was built from, so
ingest → export → ingest gives the same ids.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import fsspec
import orjson
import pyarrow as pa

from storage.schema import CONVERSATION_SCHEMA, normalize_text
from tasks.errors import BadInputError
from tasks.text import alpaca_user_content

Row = Mapping[str, Any]


def _meta(row: Row) -> dict[str, Any]:
    meta = row.get("meta")
    return json.loads(meta) if isinstance(meta, str) and meta else dict(meta or {})


def split_user(content: str, meta: Mapping[str, Any]) -> tuple[str, str]:
    """(instruction, input) of an Alpaca user turn: meta's pair if it rebuilds the turn, else (turn, "")."""
    instruction, input_text = meta.get("instruction"), meta.get("input")
    if isinstance(instruction, str) and isinstance(input_text, str):
        if normalize_text(alpaca_user_content(instruction, input_text)) == content:
            return instruction, input_text
    return content, ""


def to_alpaca(row: Row) -> dict[str, Any]:
    messages = row["messages"]
    instruction, input_text = split_user(messages[-2]["content"], _meta(row))
    record: dict[str, Any] = {"instruction": instruction, "input": input_text, "output": messages[-1]["content"]}
    if row.get("system"):
        record["system"] = row["system"]
    if len(messages) > 2:  # LLaMA-Factory's history: earlier [user, assistant] pairs
        earlier = messages[:-2]
        record["history"] = [[earlier[i]["content"], earlier[i + 1]["content"]] for i in range(0, len(earlier), 2)]
    return record


def to_sharegpt(row: Row) -> dict[str, Any]:
    names = {"user": "human", "assistant": "gpt"}
    turns = [{"from": names[m["role"]], "value": m["content"]} for m in row["messages"]]
    if row.get("system"):
        turns.insert(0, {"from": "system", "value": row["system"]})
    return {"conversations": turns}


def to_openai(row: Row) -> dict[str, Any]:
    messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if row.get("system"):
        messages.insert(0, {"role": "system", "content": row["system"]})
    return {"messages": messages}


def to_xtuner(row: Row) -> dict[str, Any]:
    messages = row["messages"]
    turns = [{"input": messages[i]["content"], "output": messages[i + 1]["content"]}
             for i in range(0, len(messages) - 1, 2)]
    if row.get("system"):
        turns[0] = {"system": row["system"], **turns[0]}
    return {"conversation": turns}


# name → (row converter, layout): "json" = one JSON array, "jsonl" = one object per line
EXPORTS: dict[str, tuple[Callable[[Row], dict[str, Any]], str]] = {
    "xtuner": (to_xtuner, "jsonl"),
    "alpaca": (to_alpaca, "json"),
    "sharegpt": (to_sharegpt, "json"),
    "openai": (to_openai, "jsonl"),
}
EXPORT_FORMATS = (*EXPORTS, "canonical")


def parse_spec(spec: str) -> tuple[str, str]:
    """FORMAT:PATH → (format, path)."""
    fmt, sep, path = spec.partition(":")
    if not sep or not path or fmt not in EXPORT_FORMATS:
        raise BadInputError(f"--export expects FORMAT:PATH with FORMAT one of {', '.join(EXPORT_FORMATS)}, "
                            f"got {spec!r}", field="export")
    return fmt, path


def write_export(batches: Iterable[pa.Table | pa.RecordBatch], fmt: str, path: str) -> int:
    """Write the conversation batches to `path` in export format `fmt`; returns the number of records."""
    if fmt == "canonical":
        return _write_canonical(batches, path)
    convert, layout = EXPORTS[fmt]
    count = 0
    with fsspec.open(path, "wb", compression="infer") as out:
        if layout == "json":
            out.write(b"[")
        for batch in batches:
            for row in batch.to_pylist():
                line = orjson.dumps(convert(row))
                if layout == "json":
                    out.write(b"\n" + line if count == 0 else b",\n" + line)
                else:
                    out.write(line + b"\n")
                count += 1
        if layout == "json":
            out.write(b"\n]\n")
    return count


def _write_canonical(batches: Iterable[pa.Table | pa.RecordBatch], path: str) -> int:
    import pyarrow.parquet as pq

    count = 0
    if path.removesuffix(".gz").endswith((".jsonl", ".json")):
        with fsspec.open(path, "wb", compression="infer") as out:
            for batch in batches:
                for row in batch.to_pylist():
                    out.write(orjson.dumps(row) + b"\n")
                    count += 1
        return count
    with fsspec.open(path, "wb") as out, pq.ParquetWriter(out, CONVERSATION_SCHEMA, compression="zstd") as writer:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            writer.write_table(table.cast(CONVERSATION_SCHEMA))
            count += table.num_rows
    return count

