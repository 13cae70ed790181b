"""One source of the ingest stage, as a config section holds it: shared by ingest, the evaluation sets and
dedup's contamination sources (each reads sources the way ingest does)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY, PATH, Section


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
