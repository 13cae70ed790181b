"""`prompts`: a prompt set to answer (tasks/prompts.py): a named set (`alpacaeval`, `vicuna`, `koala`, `wizardlm`,
`sinstruct`, `lima`) or a file in any format ingest reads, one row per prompt (the first user turn), keyed on
the file's content. Not a pipeline stage: the flows that generate answers plan one per entry of
`generate.prompts`."""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from storage.params import PATH, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.prompts import PROMPT_SETS, named, read_prompts


class PromptSetConfig(Section):
    set: str | None = Field(None, description=f"a named set: {', '.join(PROMPT_SETS)}")
    path: str | None = Field(None, json_schema_extra=PATH, description="or a file of prompts (any format ingest "
                                                                        "reads; the first user turn is the prompt)")
    format: str | None = Field(None, description="the file's ingest format; detected when empty")
    limit: int | None = Field(None, ge=1, description="only the first N prompts (a quick run)")
    name: str | None = Field(None, description="the set's name in reports; the named set's, or the file's stem")

    @model_validator(mode="after")
    def _one_source(self) -> PromptSetConfig:
        if (self.set is None) == (self.path is None):
            raise ValueError("give a named prompt set (set) or a file (path), not both or neither")
        return self

    @model_validator(mode="after")
    def _known_set(self) -> PromptSetConfig:
        if self.set is not None:
            named(self.set)
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.set or self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]

    def location(self) -> str:
        return named(self.set).location() if self.set else self.path


def as_set(value: Any) -> Any:
    """`alpacaeval` (a named set) or `my_prompts.jsonl` (a file) as well as a full entry."""
    if isinstance(value, str):  # a bare word is a set's name (an unknown one is bad input naming the sets)
        return {"set": value} if value in PROMPT_SETS or not any(c in value for c in "/.\\") else {"path": value}
    return value


def fingerprint(params: PromptSetConfig) -> dict[str, Any]:
    from tasks.ingest.revision import source_revision

    try:
        return {"content": source_revision(params.location())}
    except FileNotFoundError:
        raise BadInputError("prompt file not found (a named set is read from $SFTFLOW_PROMPT_SETS or its address)",
                            file=params.location(), field="generate.prompts") from None


def build(ctx: StageContext) -> StageOutput:
    params: PromptSetConfig = ctx.params
    read = read_prompts(params.location(), params.label, params.format, params.limit)
    ctx.log.info("prompts %s: %d prompts (%d quarantined) from %s", params.label, read.table.num_rows,
                 read.quarantine.num_rows, params.location())
    return StageOutput(table=read.table, companions={"quarantine": read.quarantine},
                       stats={"name": params.label, "rows": read.table.num_rows, "read": read.read,
                              "quarantined": read.quarantine.num_rows})


def plan(config: Any) -> list[Call]:
    """One prompt set per entry of `generate.prompts`."""
    return [Call(entry, label=f"prompts[{entry.label}]") for entry in config.generate.prompts]


STAGE = Stage("prompts", "1", build, params=PromptSetConfig, output="prompts", fingerprint=fingerprint, plan=plan,
              description="a prompt set to answer: a named test set or a file of prompts")
