"""`export`: the selection (in the pipeline; any conversation dataset alone, as `sftflow export` runs it) written
to the destinations of `export.to` in other trainers' formats, with its provenance (tasks/destinations.py).

The key holds the destinations, formats and options, so changing one runs the stage again. Its files live
outside the store, so a stored output counts only while every file it wrote is still there with its size
(`present_outside`): delete one and the next run writes them again. In the pipeline the stage owns its
destinations and replaces what is there; `sftflow export` refuses an existing path unless `--force`.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from storage.params import NOT_IN_KEY, PATH, Section
from storage.stage import Call, Stage, StageContext, StageOutput
from storage.store import DatasetRef, Store
from tasks.destinations import export_dataset, present
from tasks.exports import EXPORT_FORMATS, Options


class Destination(Section):
    format: Literal[EXPORT_FORMATS] = Field(description=", ".join(EXPORT_FORMATS))
    path: str = Field(min_length=1, description="file (a folder for hf and llamafactory): a local path or any "
                                                "fsspec URL", json_schema_extra=PATH)

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, value: Any) -> Any:
        """`openai:out/selection.jsonl` as well as {format, path}."""
        if isinstance(value, str):
            fmt, sep, path = value.partition(":")
            return {"format": fmt, "path": path} if sep else {"format": None, "path": value}
        return value


class ExportConfig(Section):
    to: list[Destination] = Field(default_factory=list, description="FORMAT:PATH destinations, e.g. "
                                                                    "openai:out/selection.jsonl, hf:s3://bucket/sel")
    system: str | None = Field(None, description="system prompt for every record (replaces the records' own); "
                                                 "empty string: none")
    multi_turn: Literal["refuse", "history"] = Field(
        "refuse", description="alpaca: refuse multi-turn conversations (bad input naming them), or put the "
                              "earlier turns in LLaMA-Factory's history")
    lineage: bool = Field(False, description="add id, source file/sheet/row, score, cluster and selection reason "
                                             "to every record")
    licenses: dict[str, str] = Field(default_factory=dict, description="source path -> licence, named in the "
                                     "provenance; the pipeline fills it from the `license` of ingest.sources")
    replace: bool = Field(True, json_schema_extra=NOT_IN_KEY,
                          description="replace what is at a destination (false: a destination that exists is "
                                      "bad input, as `sftflow export` without --force)")

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        """`export: [openai:out/selection.jsonl, hf:out/selection]` as well as the full section."""
        return {"to": value} if isinstance(value, list) else value

    def options(self) -> Options:
        return Options(system=self.system, history=self.multi_turn == "history", lineage=self.lineage)


def plan(config: Any) -> list[Call]:
    """One export when destinations are configured, with the licences the config gives its sources (a licence
    is in no ingest key, so a cached source's manifest may predate it)."""
    if not config.export.to:
        return []
    licenses = {source.path: source.license for source in config.ingest.sources if source.license}
    return [Call(config.export.model_copy(update={"licenses": {**licenses, **config.export.licenses}}))]


def build(ctx: StageContext, selection: DatasetRef) -> StageOutput:
    params: ExportConfig = ctx.params
    written = export_dataset(ctx.store, selection.key, params.to, params.options(), ctx.scratch, params.replace,
                             params.licenses)
    for entry in written:
        ctx.log.info("export: %d rows of %s to %s as %s", entry.rows, selection.key, entry.path, entry.format)
    exports = [asdict(entry) for entry in written]
    return StageOutput(table=table(exports), report=report(selection.key, exports),
                       stats={"rows": selection.rows, "exports": exports})


def table(exports: list[dict[str, Any]]) -> pa.Table:
    """One row per destination: format, path, rows, left_out (JSON: reason -> count and first ids), files."""
    return pa.Table.from_pylist([{**entry, "left_out": json.dumps(entry["left_out"])} for entry in exports])


def report(key: str, exports: list[dict[str, Any]]) -> str:
    lines = [f"# export of `{key}`", "", "| format | destination | rows | left out |", "|---|---|---:|---|"]
    for entry in exports:
        left_out = ", ".join(f"{reason} {n['count']}" for reason, n in entry["left_out"].items()) or "-"
        lines.append(f"| {entry['format']} | [{entry['path']}]({link(entry['path'])}) | {entry['rows']:,} | "
                     f"{left_out} |")
    return "\n".join(lines)


def link(path: str) -> str:
    """A local path as a file:// URL (a report's link opens it); URLs as they are."""
    return path if "://" in path else Path(path).as_uri()


def files_present(store: Store, key: str, params: ExportConfig) -> bool:
    return present(store.manifest(key).get("stats", {}).get("exports", []))


def exports_of(store: Store, key: str) -> list[dict[str, Any]]:
    """The exports of dataset `key` the store records, newest first: one per destination path, those whose
    files are gone (or were replaced since) left out."""
    found = []
    for candidate in store.keys():
        manifest = store.manifest(candidate)
        if manifest["stage"] == STAGE.name and manifest.get("inputs", {}).get("selection") == key:
            exports = manifest.get("stats", {}).get("exports", [])
            found += [{**entry, "created": manifest["created"]} for entry in exports]
    newest = {}
    for entry in sorted(found, key=lambda entry: entry["created"], reverse=True):
        newest.setdefault(entry["path"], entry)
    return [entry for entry in newest.values() if present([entry])]


STAGE = Stage("export", "1", build, params=ExportConfig, section="export", output="exported", plan=plan,
              present_outside=files_present,
              description="the selection in other trainers' formats (openai, sharegpt, alpaca, xtuner, "
                          "llamafactory, parquet, hf) with its provenance, at local paths or fsspec URLs")
