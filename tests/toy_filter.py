"""A filter declared in one file outside sftflow, as a user's plugin would be (SFTFLOW_PLUGINS=tests.toy_filter):
it keeps the conversations whose answers have at least `min_words` words. It writes `conversations` and names
its place after dedup, so every later reader of conversations reads what it kept."""
from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef


class ToyFilterConfig(Section):
    min_words: int = Field(1, ge=0, description="answers shorter than this are dropped")


def build(ctx: StageContext, conversations: DatasetRef) -> StageOutput:
    table = ctx.store.read_table(conversations.key)
    keep = [sum(len((m["content"] or "").split()) for m in msgs if m["role"] == "assistant") >= ctx.params.min_words
            for msgs in table.column("messages").to_pylist()]
    return StageOutput(table=table.filter(pa.array(keep)), stats={"rows": table.num_rows, "kept": sum(keep)})


STAGE = Stage("toy_filter", "1", build, params=ToyFilterConfig, section="toy_filter", output="conversations",
              after="dedup", description="keep conversations whose answers have at least min_words words")
