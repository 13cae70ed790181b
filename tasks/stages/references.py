"""`references`: answers a person or a reference model wrote to a prompt set, laid out as a generate output over the
same prompts, so a judge compares any model's answers with them. For `heldout` prompts, the held-out rows' own
answers (e.g. MedicationQA's, from drug labels and MedlinePlus); for a named set that carries them, its
leaderboard's reference (AlpacaEval: GPT-4-turbo's answers, AlpacaEval 2.0's reference). An ablation judges
every arm, random included, against them: an absolute mark per arm, as AlpacaEval's win rate is, and a check of
the judge on the user's own domain (a judge that prefers a small model's answers to experts' is reading length
and style, not quality)."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from storage.schema import make_record
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.prompts import PROMPT_SETS
from tasks.stages.generate import GENERATION_SCHEMA
from tasks.stages.prompts import PromptSetConfig

REFERENCE = "reference"  # the generator of every answer, and the arm name judgements against them carry


def reference_answer(messages: list[dict[str, Any]]) -> str | None:
    """The answer to the first user turn (the question the held-out prompt asks), as the row's author wrote it."""
    asked = False
    for message in messages or []:
        if message["role"] == "user":
            if asked:
                return None
            asked = True
        elif message["role"] == "assistant" and asked:
            return message["content"]
    return None


def build(ctx: StageContext, prompts: DatasetRef, eval_set: DatasetRef | None = None) -> StageOutput:
    params: PromptSetConfig = ctx.params
    if params.held_out:
        if eval_set is None:
            raise BadInputError("the held-out rows' answers read eval.holdout: plan them where it runs (an ablation)",
                                field="eval_set")
        held_out = {row["id"]: reference_answer(row["messages"]) for row in
                    ctx.store.read_table(eval_set.key, columns=["id", "messages"]).to_pylist()}
    fields = () if params.held_out else reference_fields(params)
    # the set's own records, by row: the prompts keep only the question (an answer field is no prompt's meta)
    records_by_row = {} if params.held_out else dict(read_rows(params))
    asked = ctx.store.read_table(prompts.key, columns=["id", "source", "messages", "meta"])
    records, used = [], Counter()
    for n, row in enumerate(asked.to_pylist()):
        meta = json.loads(row["meta"] or "{}")
        if params.held_out:
            held_out_id, field = meta.get("held_out_id"), "held-out answer"
            if held_out_id not in held_out:
                raise BadInputError(f"prompt {row['id']} names no held-out row of {eval_set.key} ({held_out_id!r})",
                                    row=n, field="meta.held_out_id")
            answer = held_out[held_out_id]
        else:
            record = records_by_row.get((row["source"] or {}).get("row"))
            record = record if isinstance(record, Mapping) else {}
            field = next((f for f in fields if isinstance(record.get(f), str) and record[f].strip()), None)
            answer = record.get(field) if field else None
        if not answer or not answer.strip():
            where = ", ".join(fields) or "its held-out row answers nothing"
            raise BadInputError(f"prompt {row['id']} has no reference answer ({where})", row=n, field="meta")
        used[field] += 1
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        source = row["source"] or {}
        record = make_record(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                             system=None, uri=source.get("uri") or prompts.key, fmt="reference",
                             row=source.get("row") or n, meta={**meta, "generator": REFERENCE})
        records.append({**record, "prompt_id": row["id"], "finish_reason": None, "new_tokens": None,
                        "generator": REFERENCE})
    table = pa.Table.from_pylist(records, schema=GENERATION_SCHEMA)
    chars = [len(r["messages"][-1]["content"]) for r in records]
    ctx.log.info("references: %d answers to %s (%s)", len(records), prompts.key,
                 ", ".join(f"{k}: {v}" for k, v in used.items()))
    return StageOutput(table=table, stats={"model": REFERENCE, "prompts": prompts.key, "rows": len(records),
                                           "taken_from": dict(used),
                                           "mean_answer_chars": round(sum(chars) / len(chars), 1) if chars else 0})


def read_rows(entry: PromptSetConfig) -> Iterator[tuple[int, Any]]:
    """The prompt set's records as ingest reads them (row number, record), the rows its prompts name."""
    from tasks.ingest.config import SourceConfig
    from tasks.ingest.source import open_source

    return open_source(SourceConfig(path=entry.location(), format=entry.format))[0]


def reference_fields(entry: PromptSetConfig) -> tuple[str, ...]:
    """The prompt meta fields holding a set's reference answers (none: the set has no references)."""
    return PROMPT_SETS[entry.set].references if entry.set in PROMPT_SETS else ()


def has_references(entry: PromptSetConfig) -> bool:
    return bool(entry.held_out) or bool(reference_fields(entry))


def plan(config: Any) -> list[Call]:
    """One per prompt set that has references: the held-out rows' questions, a named set that carries them."""
    return [Call(entry, label=f"references[{entry.label}]", reads={
                 "prompts": f"prompts[{entry.label}]", **({"eval_set": "eval.holdout"} if entry.held_out else {})})
            for entry in config.generate.prompts if has_references(entry)]


STAGE = Stage("references", "1", build, params=PromptSetConfig, output="references", plan=plan,
              reads=lambda params: ["eval_set"] if params.held_out else [],
              description="reference answers to a prompt set (the held-out rows' own, AlpacaEval's GPT-4-turbo's), "
                          "for a judge to compare with")
