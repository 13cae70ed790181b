"""`format`: a selection + the base model's tokenizer → tokenized samples with loss masks, plus exports
(tasks/format.py, tasks/tokenize.py). `tasks.artifacts.Tokenized` is what later stages know of how it was made."""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.format import COLUMNS, export_files, histogram_png, load_tokenizer, report, tokenize_batches
from tasks.templates import get_template
from tasks.tokenize import ConversationEncoder, summarize


class FormatConfig(Section):
    template: str = Field("chatml", description="prompt template (`sftflow templates list`); `tokenizer` uses the "
                                                "base model's own chat_template")
    max_length: int = Field(1024, ge=8, description="tokens kept per sample; samples whose answer starts later "
                                                    "are quarantined")
    train_on: Literal["all_assistant", "last_assistant", "prompt"] = Field(
        "all_assistant", description="loss on every assistant turn, on the last one only, or on every token")
    system: str | None = Field(None, description="system prompt for every sample (replaces the records' own and "
                                                 "the template default); empty string: no system prompt")
    exports: list[Literal["text", "xtuner", "llamafactory"]] = Field(
        default_factory=lambda: ["text", "xtuner", "llamafactory"],
        description="files written next to the tokenized table: formatted text JSONL, xtuner conversation "
                    "JSONL, LLaMA-Factory dataset folder")
    dataset_name: str = Field("sftflow", description="dataset name in the LLaMA-Factory dataset_info.json")
    batch_size: int = Field(2000, ge=1, json_schema_extra=NOT_IN_KEY, description="rows tokenized per batch")


def build(ctx: StageContext, selection: DatasetRef, base_model: DatasetRef) -> StageOutput:
    params = ctx.params
    tokenizer = load_tokenizer(ctx.store, base_model)
    encoder = ConversationEncoder(tokenizer, get_template(params.template), max_length=params.max_length,
                                  train_on=params.train_on, system=params.system)
    advance = ctx.progress(selection.rows, "format")
    table, quarantine, records = tokenize_batches(
        encoder, ctx.store.iter_batches(selection.key, params.batch_size, columns=COLUMNS), advance)
    stats = {"template": encoder.template.name, "train_on": params.train_on, "max_length": params.max_length,
             "rows_in": selection.rows, **summarize(table, quarantine), **encoder.counts,
             "warnings": encoder.warnings}
    files: dict[str, Any] = {
        "chat_template.jinja": encoder.template.chat_template(),
        "template.json": json.dumps(encoder.template.summary(), indent=2, ensure_ascii=False),
        "format_lengths.png": histogram_png(table, params.max_length),
        **export_files(params, table, records, stats["warnings"]),
    }
    example = table.column("text")[0].as_py() if table.num_rows else None
    return StageOutput(table=table, files=files, stats=stats, companions={"quarantine": quarantine},
                       report=report(stats, example))


STAGE = Stage("format", "1", build, params=FormatConfig, section="format", output="tokenized",
              description="template + tokenization + loss masks + exports")
