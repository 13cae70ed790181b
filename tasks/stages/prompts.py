"""`prompts`: a prompt set to answer (tasks/prompts.py): a named set (`alpacaeval`, `vicuna`, `koala`, `wizardlm`,
`sinstruct`, `lima`), a file in any format ingest reads, one row per prompt (the first user turn), keyed on
the file's content, or `heldout`: the questions of the held-out rows (eval.holdout), to judge answers on the
user's own data. Not a pipeline stage: the flows that generate answers plan one per entry of `generate.prompts`."""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from storage.params import PATH, WHEN_SET, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.errors import BadInputError
from tasks.prompts import PROMPT_SETS, held_out_prompts, named, read_prompts

HELD_OUT = "heldout"  # the prompt set of the held-out rows' questions


class PromptSetConfig(Section):
    set: str | None = Field(None, description=f"a named set: {', '.join(PROMPT_SETS)}")
    path: str | None = Field(None, json_schema_extra=PATH, description="or a file of prompts (any format ingest "
                                                                        "reads; the first user turn is the prompt)")
    held_out: bool | None = Field(None, json_schema_extra=WHEN_SET,
                                  description="or the questions of the held-out rows (eval.holdout): answers on "
                                              "your own data (`heldout` in a list of sets)")
    format: str | None = Field(None, description="the file's ingest format; detected when empty")
    limit: int | None = Field(None, ge=1, description="only the first N prompts (a quick run)")
    name: str | None = Field(None, description="the set's name in reports; the named set's, or the file's stem")

    @model_validator(mode="after")
    def _one_source(self) -> PromptSetConfig:
        if (self.set is not None) + (self.path is not None) + bool(self.held_out) != 1:
            raise ValueError("give a named prompt set (set), a file (path) or the held-out rows (held_out): one")
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
        if self.held_out:
            return HELD_OUT
        return self.set or self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]

    def location(self) -> str:
        return named(self.set).location() if self.set else self.path


def as_set(value: Any) -> Any:
    """`alpacaeval` (a named set) or `my_prompts.jsonl` (a file) as well as a full entry."""
    if value == HELD_OUT:
        return {"held_out": True}
    if isinstance(value, str):  # a bare word is a set's name (an unknown one is bad input naming the sets)
        return {"set": value} if value in PROMPT_SETS or not any(c in value for c in "/.\\") else {"path": value}
    return value


def fingerprint(params: PromptSetConfig) -> dict[str, Any] | None:
    """A file's content (the held-out rows' is their input's key)."""
    from tasks.ingest.revision import source_revision

    if params.held_out:
        return None
    try:
        return {"content": source_revision(params.location())}
    except FileNotFoundError:
        raise BadInputError("prompt file not found (a named set is read from $SFTFLOW_PROMPT_SETS or its address)",
                            file=params.location(), field="generate.prompts") from None


def build(ctx: StageContext, eval_set: DatasetRef | None = None) -> StageOutput:
    params: PromptSetConfig = ctx.params
    if params.held_out and eval_set is None:
        raise BadInputError("the held-out prompts read the held-out rows: plan them where eval.holdout runs (an "
                            "ablation)", field="generate.prompts")
    read = (held_out_prompts(ctx.store.read_table(eval_set.key), params.label, params.limit) if params.held_out
            else read_prompts(params.location(), params.label, params.format, params.limit))
    ctx.log.info("prompts %s: %d prompts (%d quarantined) from %s", params.label, read.table.num_rows,
                 read.quarantine.num_rows, eval_set.key if params.held_out else params.location())
    return StageOutput(table=read.table, companions={"quarantine": read.quarantine},
                       stats={"name": params.label, "rows": read.table.num_rows, "read": read.read,
                              "quarantined": read.quarantine.num_rows})


def plan(config: Any) -> list[Call]:
    """One prompt set per entry of `generate.prompts` (the held-out questions read eval.holdout's rows)."""
    return [Call(entry, label=f"prompts[{entry.label}]", reads={"eval_set": "eval.holdout"} if entry.held_out else {})
            for entry in config.generate.prompts]


STAGE = Stage("prompts", "1", build, params=PromptSetConfig, output="prompts", fingerprint=fingerprint, plan=plan,
              reads=lambda params: ["eval_set"] if params.held_out else [],
              description="a prompt set to answer: a named test set or a file of prompts")
