"""A stage declared in one file outside sftflow, as a user's plugin would be (SFTFLOW_PLUGINS=tests.toy_stage):
it counts the conversations whose user turns mention a word. Nothing else in the project names it."""
from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef


class ToyConfig(Section):
    word: str = Field("the", description="the word to look for in the user turns")


def build(ctx: StageContext, conversations: DatasetRef) -> StageOutput:
    table = ctx.store.read_table(conversations.key, columns=["id", "messages"])
    word = ctx.params.word.lower()
    hits = [any(word in m["content"].lower().split() for m in msgs if m["role"] == "user")
            for msgs in table.column("messages").to_pylist()]
    (ctx.scratch / "note.txt").write_text(f"{sum(hits)} hits")  # the scratch folder goes once published
    return StageOutput(table=pa.table({"id": table.column("id"), "mentions": hits}),
                       stats={"mentions": sum(hits), "rows": table.num_rows})


STAGE = Stage("toy", "1", build, params=ToyConfig, section="toy", output="mentions",
              description="count conversations whose user turns mention a word")
