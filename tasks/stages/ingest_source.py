"""`ingest.source`: one source (a file, a URL, an hf: dataset) → canonical conversations + quarantine.

One call per entry of `ingest.sources`, run side by side; each is keyed on the source's content, so an
unchanged file is a cache hit and a changed one is read again.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY, PATH, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.ingest.report import source_report, summary
from tasks.ingest.revision import source_revision
from tasks.ingest.source import read_source


class SourceConfig(Section):
    path: str = Field(description="File path, fsspec URL, or hf:NAME[:CONFIG][@REVISION]", json_schema_extra=PATH)
    format: str | None = Field(None, description="alpaca, sharegpt, openai, guanaco, xtuner, self-instruct, "
                                                 "oasst1, oasst-trees, canonical, medicationqa, columns; detected "
                                                 "when empty")
    sheet: str | None = Field(None, description="xlsx sheet name")
    split: str | None = Field(None, description="dataset split for hf: sources")
    mapping: dict[str, str] | None = Field(None, description="table columns (xlsx, csv, parquet, JSON): "
                                                              "system/input/output -> header")
    system_prompt: str | None = Field(None, description="system prompt for records that have none "
                                                        "(medicationqa: the seed's doctor prompt)")
    repair: bool = Field(True, description="drop leading assistant turns, merge consecutive same-role turns, read "
                                           "chatgpt/bing/bard/model as assistant (each repair counted); false: "
                                           "quarantine such conversations")
    lang: list[str] | None = Field(None, description="keep only conversations whose lang (OpenAssistant, or a lang "
                                                     "column) is one of these; those without a lang are kept")
    preference: Literal["chosen"] | None = Field(None, description="preference records (chosen/rejected): chosen "
                                                                   "takes the chosen answer; empty: quarantine them")
    license: str | None = Field(None, json_schema_extra=NOT_IN_KEY,
                                description="the source's licence (e.g. cc-by-4.0), named in the provenance of every "
                                            "export of data read from it; not part of any key")

    @field_validator("lang", mode="before")
    @classmethod
    def _lang_list(cls, value: Any) -> Any:
        """`lang: en` or `lang: en,de` as well as a list."""
        return [code.strip() for code in value.split(",") if code.strip()] if isinstance(value, str) else value


def sources_from_paths(cls: type, value: Any) -> Any:
    """A plain string is a source given by its path alone: `sources: [data.json, sheet.xlsx]`."""
    return [{"path": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


def fingerprint(params: SourceConfig) -> Mapping[str, Any]:
    """The source's content: a missing source is bad input here, before any stage runs."""
    try:
        return {"content": source_revision(params.path)}
    except FileNotFoundError:
        raise BadInputError("source not found", file=params.path, field="ingest.sources") from None


def plan(config: Any) -> list[Call]:
    return [Call(source, label=f"ingest[{i}]") for i, source in enumerate(config.ingest.sources)]


def build(ctx: StageContext) -> StageOutput:
    params = ctx.params
    name = Path(params.path).name if not params.path.startswith("hf:") else params.path
    reading = read_source(params, progress=ctx.progress)
    companions: dict[str, pa.Table] = {}
    output = StageOutput(stats=reading.stats, companions=companions)

    def tables() -> Iterator[pa.Table]:
        yield from reading.tables
        # run_stage publishes companions after the table is consumed, so the quarantine is complete here
        companions["quarantine"] = reading.quarantine.table()
        output.report = source_report([reading.stats])
        ctx.log.info("ingest %s: %s", name, summary(reading.stats))

    output.table = tables()
    return output


STAGE = Stage("ingest.source", "1", build, params=SourceConfig, output="source", fingerprint=fingerprint, plan=plan,
              description="read one source into canonical conversations (+ quarantine)")
