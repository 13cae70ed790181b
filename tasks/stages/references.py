"""`references`: the held-out rows' own answers to their questions (the answers a person wrote, e.g. MedicationQA's
experts'), laid out as a generate output over the same prompts, so a judge compares any model's answers with them.
An ablation with `heldout` prompts judges every arm, random included, against them: an absolute mark per arm (as
AlpacaEval's win rate against a reference model's answers), and a check of the judge on the user's own domain
(a judge that prefers a small model's answers to experts' is reading length and style, not quality)."""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from storage.schema import make_record
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.errors import BadInputError
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


def build(ctx: StageContext, prompts: DatasetRef, eval_set: DatasetRef) -> StageOutput:
    held_out = {row["id"]: row["messages"] for row in
                ctx.store.read_table(eval_set.key, columns=["id", "messages"]).to_pylist()}
    asked = ctx.store.read_table(prompts.key, columns=["id", "source", "messages", "meta"])
    records = []
    for n, row in enumerate(asked.to_pylist()):
        meta = json.loads(row["meta"] or "{}")
        held_out_id = meta.get("held_out_id")
        if held_out_id not in held_out:
            raise BadInputError(f"prompt {row['id']} names no held-out row of {eval_set.key} ({held_out_id!r}): "
                                "references answer the held-out prompts only", row=n, field="meta.held_out_id")
        answer = reference_answer(held_out[held_out_id])
        if not answer or not answer.strip():
            raise BadInputError(f"held-out row {held_out_id} has no answer to its first question", row=n,
                                field="messages")
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        source = row["source"] or {}
        record = make_record(messages=[{"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}],
                             system=None, uri=source.get("uri") or eval_set.key, fmt="reference",
                             row=source.get("row") or n, meta={**meta, "generator": REFERENCE})
        records.append({**record, "prompt_id": row["id"], "finish_reason": None, "new_tokens": None,
                        "generator": REFERENCE})
    table = pa.Table.from_pylist(records, schema=GENERATION_SCHEMA)
    chars = [len(r["messages"][-1]["content"]) for r in records]
    ctx.log.info("references: %d held-out answers to %s", len(records), prompts.key)
    return StageOutput(table=table, stats={"model": REFERENCE, "prompts": prompts.key, "rows": len(records),
                                           "mean_answer_chars": round(sum(chars) / len(chars), 1) if chars else 0})


def plan(config: Any) -> list[Call]:
    """One per held-out prompt set: the rows they were asked of hold the answers."""
    return [Call(entry, label=f"references[{entry.label}]",
                 reads={"prompts": f"prompts[{entry.label}]", "eval_set": "eval.holdout"})
            for entry in config.generate.prompts if entry.held_out]


STAGE = Stage("references", "1", build, params=PromptSetConfig, output="references", plan=plan,
              description="the held-out rows' own answers to the held-out prompts, for a judge to compare with")
