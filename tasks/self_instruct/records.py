"""Generated tasks as canonical records (with lineage), the quarantine table, and their export (tasks/exports.py)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from storage.schema import make_record, records_to_table
from tasks.exports import write_export
from tasks.self_instruct.generate import Outcome
from tasks.text import alpaca_user_content

SOURCE_FORMAT = "self_instruct"
QUARANTINE_SCHEMA = pa.schema([
    pa.field("reason", pa.string()),
    pa.field("text", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("input", pa.string()),
    pa.field("output", pa.string()),
    pa.field("request", pa.int64()),
    pa.field("seed_task_ids", pa.list_(pa.string())),
    pa.field("max_rouge_l", pa.float64()),
    pa.field("most_similar", pa.string()),
])


def generated_records(kept: Iterable[Outcome], backend: str, model: str) -> pa.Table:
    """One user turn (instruction + input, as for Alpaca) and one assistant turn per kept task."""
    records = []
    for row, outcome in enumerate(kept):
        task = outcome.task
        meta = {"instruction": task.instruction, "input": task.input, "seed_task_ids": list(outcome.seed_task_ids),
                "backend": backend, "model": model, "request": outcome.request,
                "max_rouge_l": outcome.max_rouge_l, "most_similar_instruction": outcome.most_similar}
        records.append(make_record(
            messages=[{"role": "user", "content": alpaca_user_content(task.instruction, task.input)},
                      {"role": "assistant", "content": task.output}],
            system=None, uri=f"{SOURCE_FORMAT}:{backend}:{model}", fmt=SOURCE_FORMAT, row=row, meta=meta))
    return records_to_table(records)


def quarantine_table(dropped: Iterable[Outcome]) -> pa.Table:
    rows = [{"reason": o.reason, "text": o.text, "instruction": o.task.instruction if o.task else None,
             "input": o.task.input if o.task else None, "output": o.task.output if o.task else None,
             "request": o.request, "seed_task_ids": list(o.seed_task_ids), "max_rouge_l": o.max_rouge_l,
             "most_similar": o.most_similar} for o in dropped]
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def export(table: pa.Table, path: str | Path) -> str:
    """`.parquet`: the canonical records, lineage included (ingest format `canonical`); anything else: Alpaca
    JSONL (instruction, input, output), which every Alpaca reader takes. Returns the layout written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        write_export([table], "canonical", str(path))
        return "canonical"
    write_export([table], "alpaca", str(path), layout="jsonl")
    return "alpaca"
