"""Canonical conversation records in other trainers' formats: one converter per format, one writer for all.

Callers: `sftflow export` and the pipeline's export stage (every format of EXPORT_FORMATS, through
tasks/destinations.py), the format stage (`text`, `xtuner`, `llamafactory` files next to the tokenized table),
`sftflow ingest --export FORMAT:PATH` (`xtuner`, `alpaca`, `sharegpt`, `openai`, `canonical`) and the
self-instruct generator's `--output` (alpaca JSONL, canonical parquet). Files are written streaming, one batch
at a time (`.gz` compresses); JSON layouts are one array, JSONL one object per line; `parquet` is one file,
`hf` and `llamafactory` are folders.

What each format holds of the tool and loss-weight fields: `openai` everything (tools, tool_calls, tool
results, OpenAI's per-message `weight`), and so do `parquet` and `hf`, which hold `openai`'s records as a table
(TRL's conversational `messages` column; `tools` as JSON text, since a column has one type and every tool's
parameters another shape); `sharegpt` and `llamafactory` tools, calls (`function_call` turns) and results
(`observation` / `tool` turns), but neither a turn that has both text and calls nor a loss weight; `xtuner`
loss weights (`output_with_loss`) but no tools; `alpaca` neither, and one exchange per record unless earlier
ones go to LLaMA-Factory's `history` (`Options.history`). A record a format cannot hold is left out and
counted by reason with its first ids (`Exported`), never written half. A trailing user turn without an answer
is left out of the conversation formats (it carries no loss). Alpaca splits the user turn back into
instruction and input when meta holds the pair it was built from, so ingest → export → ingest gives the same
ids.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import fsspec
import orjson
import pyarrow as pa

from storage.schema import CONVERSATION_SCHEMA, normalize_text
from tasks.errors import BadInputError
from tasks.text import alpaca_user_content

Row = Mapping[str, Any]
INGEST_EXPORTS = ("xtuner", "alpaca", "sharegpt", "openai", "canonical")  # `sftflow ingest --export`
STAGE_EXPORTS = ("text", "xtuner", "llamafactory")  # the format stage's `exports:`
# `sftflow export`; the answer formats hold a prompt and a generated answer for the official evaluators
# (AlpacaEval's model_outputs.json, FastChat's answer JSONL), not a conversation that ingest reads back
ANSWER_FORMATS = ("alpacaeval", "fastchat")
EXPORT_FORMATS = ("openai", "sharegpt", "alpaca", "xtuner", "llamafactory", "parquet", "hf", *ANSWER_FORMATS)
FOLDER_FORMATS = ("llamafactory", "hf")  # written as a folder at PATH
FIRST_IDS = 5  # ids kept per reason a record was left out


class Unrepresentable(Exception):
    """A record the format cannot hold; `reason` is counted in Exported.skipped."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Options:
    """How records are written. `system` replaces every record's system prompt ("" for none); `history`: alpaca
    puts earlier exchanges in LLaMA-Factory's `history` (False: a multi-turn record cannot be held); `ids`: each
    record's id as its first field; `lineage`: the id plus where the row came from and why it was selected."""

    system: str | None = None
    history: bool = True
    ids: bool = False
    lineage: bool = False


@dataclass
class Exported:
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records left out
    first_ids: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first FIRST_IDS of them

    def leave_out(self, reason: str, record_id: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ids = self.first_ids.setdefault(reason, [])
        if len(ids) < FIRST_IDS:
            ids.append(record_id)

    def left_out(self) -> str:
        """'1 (loss_weight: 3f2a…), 2 (tools: 9c1d…, 07be…)'; '' when nothing was left out."""
        return ", ".join(f"{n} ({reason}: {', '.join(self.first_ids.get(reason, []))}"
                         f"{', …' if n > len(self.first_ids.get(reason, [])) else ''})"
                         for reason, n in sorted(self.skipped.items()))

    def summary(self, fmt: str) -> str:
        left_out = self.left_out()
        return f"{self.written} records as {fmt}" + (f"; left out {left_out}" if left_out else "")


# -- helpers -------------------------------------------------------------------------------------------------
def _meta(row: Row) -> dict[str, Any]:
    meta = row.get("meta")
    return json.loads(meta) if isinstance(meta, str) and meta else dict(meta or {})


def answered(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    end = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return list(messages[:end + 1])


def _system(row: Row, options: Options) -> str | None:
    system = options.system if options.system is not None else row.get("system")
    return system or None


def _tools(row: Row) -> list[dict[str, Any]]:
    return json.loads(row["tools"]) if row.get("tools") else []


def _call(call: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": call["name"], "arguments": json.loads(call["arguments"])}


def _no_loss(message: Mapping[str, Any]) -> bool:
    return message.get("loss_weight") is not None and message["role"] == "assistant" and message["loss_weight"] == 0


def split_user(content: str, meta: Mapping[str, Any]) -> tuple[str, str]:
    """(instruction, input) of an Alpaca user turn: meta's pair if it rebuilds the turn, else (turn, "")."""
    instruction, input_text = meta.get("instruction"), meta.get("input")
    if isinstance(instruction, str) and isinstance(input_text, str):
        if normalize_text(alpaca_user_content(instruction, input_text)) == content:
            return instruction, input_text
    return content, ""


def exchanges(row: Row) -> list[tuple[str, Mapping[str, Any]]]:
    """(prompt, answer) pairs for the pair formats: consecutive user turns joined by a blank line, an answer
    with no user turn before it gets an empty prompt. Tool turns have no place there."""
    if row.get("tools"):
        raise Unrepresentable("tools")
    pairs, pending = [], None
    for message in answered(row["messages"]):
        if message["role"] == "tool" or message.get("tool_calls"):
            raise Unrepresentable("tool_calls")
        if message["role"] == "user":
            pending = message["content"] if pending is None else pending + "\n\n" + message["content"]
        else:
            pairs.append((pending or "", message))
            pending = None
    return pairs


def _tagged_turns(row: Row, names: Mapping[str, str], key: str, value: str) -> list[dict[str, Any]]:
    """ShareGPT-style turns ({from, value} or LLaMA-Factory's {role, content}): tool calls as function_call
    turns holding the call JSON, tool results as observation turns."""
    turns = []
    for message in answered(row["messages"]):
        if _no_loss(message):
            raise Unrepresentable("loss_weight")
        if message.get("tool_calls"):
            if message["content"]:
                raise Unrepresentable("tool_call_with_text")
            calls = [_call(c) for c in message["tool_calls"]]
            text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            turns.append({key: names["function_call"], value: text})
        else:
            turns.append({key: names[message["role"]], value: message["content"]})
    return turns


def lineage_fields(row: Row) -> dict[str, Any]:
    """Where a row came from and why it was chosen (null where the dataset has no such column)."""
    source = row.get("source") or {}
    return {"id": row["id"], "source_uri": source.get("uri"), "source_split": source.get("split"),
            "source_row": source.get("row"), "score": row.get("iqs_score"), "cluster": row.get("cluster"),
            "reason": row.get("selection_reason")}


# -- the converters ------------------------------------------------------------------------------------------
def to_alpaca(row: Row, options: Options) -> dict[str, Any]:
    pairs = exchanges(row)
    if any(_no_loss(answer) for _, answer in pairs):
        raise Unrepresentable("loss_weight")
    (user, answer), earlier = pairs[-1], pairs[:-1]
    if earlier and not options.history:
        raise Unrepresentable("multi_turn")
    instruction, input_text = split_user(user, _meta(row))
    record: dict[str, Any] = {"instruction": instruction, "input": input_text, "output": answer["content"]}
    if _system(row, options):
        record["system"] = _system(row, options)
    if earlier:  # LLaMA-Factory's history: earlier [user, assistant] pairs
        record["history"] = [[prompt, reply["content"]] for prompt, reply in earlier]
    return record


def to_xtuner(row: Row, options: Options) -> dict[str, Any]:
    """xtuner's single/multi-turn format: {"conversation": [{"system", "input", "output"}, {"input", "output"}]};
    `output_with_loss: false` where the answer carries no loss."""
    turns = []
    for prompt, answer in exchanges(row):
        turn = {"input": prompt, "output": answer["content"]}
        if _no_loss(answer):
            turn["output_with_loss"] = False
        turns.append(turn)
    sys_text = _system(row, options)
    if sys_text and turns:
        turns[0] = {"system": sys_text, **turns[0]}
    return {"conversation": turns}


SHAREGPT_NAMES = {"user": "human", "assistant": "gpt", "tool": "observation", "function_call": "function_call"}


def to_sharegpt(row: Row, options: Options) -> dict[str, Any]:
    turns = _tagged_turns(row, SHAREGPT_NAMES, "from", "value")
    sys_text = _system(row, options)
    if sys_text:
        turns.insert(0, {"from": "system", "value": sys_text})
    record: dict[str, Any] = {"conversations": turns}
    if row.get("tools"):
        record["tools"] = json.dumps(_tools(row), ensure_ascii=False)
    return record


def to_openai(row: Row, options: Options) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    sys_text = _system(row, options)
    if sys_text:
        messages.append({"role": "system", "content": sys_text})
    for message in answered(row["messages"]):
        out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
        if message.get("tool_calls"):
            out["content"] = message["content"] or None
            out["tool_calls"] = [{**({"id": c["id"]} if c.get("id") else {}), "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in message["tool_calls"]]
        if message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        if _no_loss(message):
            out["weight"] = 0  # OpenAI fine-tuning's per-message switch
        messages.append(out)
    record: dict[str, Any] = {"messages": messages}
    if row.get("tools"):
        record["tools"] = [{"type": "function", "function": tool} for tool in _tools(row)]
    return record


LLAMAFACTORY_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                     "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}
LLAMAFACTORY_NAMES = {"user": "user", "assistant": "assistant", "tool": "tool", "function_call": "function_call"}


def to_llamafactory(row: Row, options: Options) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt formatting with OpenAI-style role/content tags (dataset_info.json says which)."""
    record: dict[str, Any] = {"messages": _tagged_turns(row, LLAMAFACTORY_NAMES, "role", "content")}
    sys_text = _system(row, options)
    if sys_text:
        record["system"] = sys_text
    if row.get("tools"):
        record["tools"] = json.dumps(_tools(row), ensure_ascii=False)
    return record


def to_text(row: Row, options: Options) -> dict[str, Any]:
    return {"text": row["text"]}


def _answer(row: Row) -> tuple[str, str]:
    """(the first user turn, the last answer) of a generated answer."""
    messages = row["messages"] or []
    prompt = next((m["content"] for m in messages if m["role"] == "user"), None)
    answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), None)
    if prompt is None or answer is None:
        raise Unrepresentable("not_a_prompt_and_answer")
    return prompt, answer


def to_alpacaeval(row: Row, options: Options) -> dict[str, Any]:
    """AlpacaEval's model_outputs.json: the instruction as its prompt set wrote it, the answer, the model."""
    prompt, answer = _answer(row)
    meta = _meta(row)
    return {"instruction": meta.get("instruction") or prompt, "output": answer,
            "generator": meta.get("generator") or "sftflow", "dataset": meta.get("dataset") or meta.get("prompt_set")}


def to_fastchat(row: Row, options: Options) -> dict[str, Any]:
    """FastChat's answer JSONL (MT-Bench, Vicuna-80): one choice with the answer turn, by question id."""
    _, answer = _answer(row)
    meta = _meta(row)
    question = meta.get("question_id", meta.get("id", row["id"]))
    return {"question_id": question, "answer_id": row["id"], "model_id": meta.get("generator") or "sftflow",
            "choices": [{"index": 0, "turns": [answer]}]}


Converter = Callable[[Row, Options], dict[str, Any]]
CONVERTERS: dict[str, tuple[Converter, str]] = {  # name → (converter, default layout)
    "xtuner": (to_xtuner, "jsonl"),
    "alpaca": (to_alpaca, "json"),
    "sharegpt": (to_sharegpt, "json"),
    "openai": (to_openai, "jsonl"),
    "llamafactory": (to_llamafactory, "json"),
    "text": (to_text, "jsonl"),
    "parquet": (to_openai, "parquet"),
    "hf": (to_openai, "hf"),
    "alpacaeval": (to_alpacaeval, "json"),
    "fastchat": (to_fastchat, "jsonl"),
}


# -- writing -------------------------------------------------------------------------------------------------
def parse_spec(spec: str, formats: Sequence[str] = INGEST_EXPORTS, option: str = "--export") -> tuple[str, str]:
    """FORMAT:PATH → (format, path)."""
    fmt, sep, path = spec.partition(":")
    if not sep or not path or fmt not in formats:
        raise BadInputError(f"{option} expects FORMAT:PATH with FORMAT one of {', '.join(formats)}, got {spec!r}",
                            field=option.lstrip("-"))
    return fmt, path


def _rows(batches: Iterable[pa.Table | pa.RecordBatch | Sequence[Row]]) -> Iterator[Row]:
    for batch in batches:
        yield from batch.to_pylist() if isinstance(batch, (pa.Table, pa.RecordBatch)) else batch


def converted(records: Iterable[Row], fmt: str, options: Options, done: Exported) -> Iterator[dict[str, Any]]:
    """The records in format `fmt` (with their id or lineage fields first, as asked); what the format cannot
    hold is counted in `done`."""
    convert = CONVERTERS[fmt][0]
    for record in records:
        try:
            out = convert(record, options)
        except Unrepresentable as exc:
            done.leave_out(exc.reason, record["id"])
            continue
        if options.lineage:
            out = {**lineage_fields(record), **out}
        elif options.ids:
            out = {"id": record["id"], **out}
        done.written += 1
        yield out


def write_rows(out: BinaryIO, records: Iterable[Row], fmt: str, options: Options = Options(), *,
               layout: str | None = None) -> Exported:
    """Convert and write `records` to the open binary file `out`; records the format cannot hold are counted."""
    layout = layout or CONVERTERS[fmt][1]
    done = Exported()
    if layout == "json":
        out.write(b"[")
    for record in converted(records, fmt, options, done):
        line = orjson.dumps(record)
        if layout == "json":
            out.write(b"\n" + line if done.written == 1 else b",\n" + line)
        else:
            out.write(line + b"\n")
    if layout == "json":
        out.write(b"\n]\n")
    return done


TOOL_CALL_TYPE = pa.struct([("id", pa.string()), ("type", pa.string()),
                            ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
MESSAGE_EXTRA_TYPES = {"tool_calls": pa.list_(TOOL_CALL_TYPE), "tool_call_id": pa.string(), "weight": pa.int64()}
LINEAGE_TYPES = {"id": pa.string(), "source_uri": pa.string(), "source_split": pa.string(), "source_row": pa.int64(),
                 "score": pa.float64(), "cluster": pa.int64(), "reason": pa.string()}


def messages_table(records: Iterable[Row], options: Options = Options()) -> tuple[pa.Table, Exported]:
    """`openai`'s records as a table (the `parquet` and `hf` formats): a `messages` column of role/content structs
    (TRL's conversational format), with the tool and weight fields only when a record has them, and `tools`
    (OpenAI's list, as JSON text) only when a record has tool definitions."""
    done = Exported()
    rows = list(converted(records, "openai", options, done))
    extras = {name for row in rows for message in row["messages"] for name in message} - {"role", "content"}
    message = pa.struct([("role", pa.string()), ("content", pa.string()),
                         *((name, kind) for name, kind in MESSAGE_EXTRA_TYPES.items() if name in extras)])
    columns = list(LINEAGE_TYPES) if options.lineage else ["id"] if options.ids else []
    fields = [pa.field(name, LINEAGE_TYPES[name]) for name in columns] + [pa.field("messages", pa.list_(message))]
    if any("tools" in row for row in rows):
        fields.append(pa.field("tools", pa.string()))
        for row in rows:
            row["tools"] = json.dumps(row["tools"], ensure_ascii=False) if "tools" in row else None
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), done


def write_export(batches: Iterable[pa.Table | pa.RecordBatch | Sequence[Row]], fmt: str, path: str,
                 options: Options = Options(), *, layout: str | None = None) -> Exported:
    """Write the conversation batches to `path` (any fsspec URL) in export format `fmt`: a file, or a folder for
    `hf` and `llamafactory`."""
    if fmt == "canonical":
        return Exported(_write_canonical(batches, path))
    if fmt == "llamafactory":
        fs, folder = fsspec.core.url_to_fs(path)
        files, done = llamafactory_files(list(_rows(batches)), folder.rstrip("/").rsplit("/", 1)[-1], options)
        fs.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            fs.pipe_file(f"{folder.rstrip('/')}/{name}", data)
        return done
    if fmt in ("parquet", "hf"):
        table, done = messages_table(_rows(batches), options)
        _write_table(table, fmt, path)
        return done
    with fsspec.open(path, "wb", compression="infer") as out:
        return write_rows(out, _rows(batches), fmt, options, layout=layout)


def _write_table(table: pa.Table, fmt: str, path: str) -> None:
    if fmt == "hf":  # a folder `datasets.load_from_disk` opens
        import datasets
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        shown = not are_progress_bars_disabled()
        disable_progress_bars()  # a bar for one small file, on every export
        try:
            datasets.Dataset(table).save_to_disk(path)
        finally:
            if shown:
                enable_progress_bars()
        return
    import pyarrow.parquet as pq

    with fsspec.open(path, "wb") as out:
        pq.write_table(table, out, compression="zstd")


def export_bytes(records: Iterable[Row], fmt: str, options: Options = Options()) -> tuple[bytes, Exported]:
    """The export as bytes (the format stage stores its exports as files of its output)."""
    buffer = io.BytesIO()
    done = write_rows(buffer, records, fmt, options)
    return buffer.getvalue(), done


def llamafactory_files(records: Sequence[Row], name: str, options: Options = Options()
                       ) -> tuple[dict[str, bytes], Exported]:
    """A LLaMA-Factory dataset folder: `data.json` and its `dataset_info.json` entry (the `tools` column only when
    a record has tool definitions: LLaMA-Factory expects every named column to exist)."""
    options = options if options.lineage else replace(options, ids=True)
    data, done = export_bytes(records, "llamafactory", options)
    columns = {"messages": "messages", "system": "system"}
    if any(r.get("tools") for r in records):
        columns["tools"] = "tools"
    info = {name: {"file_name": "data.json", "formatting": "sharegpt", "columns": columns, "tags": LLAMAFACTORY_TAGS}}
    return {"data.json": data, "dataset_info.json": json.dumps(info, indent=2).encode("utf-8")}, done


def _write_canonical(batches: Iterable[pa.Table | pa.RecordBatch | Sequence[Row]], path: str) -> int:
    import pyarrow.parquet as pq

    count = 0
    if path.removesuffix(".gz").endswith((".jsonl", ".json")):
        with fsspec.open(path, "wb", compression="infer") as out:
            for row in _rows(batches):
                out.write(orjson.dumps(row) + b"\n")
                count += 1
        return count
    with fsspec.open(path, "wb") as out, pq.ParquetWriter(out, CONVERSATION_SCHEMA, compression="zstd") as writer:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else (
                pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch)
                else pa.Table.from_pylist(list(batch), schema=CONVERSATION_SCHEMA))
            writer.write_table(table.select(CONVERSATION_SCHEMA.names).cast(CONVERSATION_SCHEMA))
            count += table.num_rows
    return count
