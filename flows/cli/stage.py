"""`sftflow stage NAME [--input NAME=KEY]... [--set FIELD=VALUE]... [--config YAML] [--json]`: any stage alone,
on datasets of the store; `sftflow stage --list`: every stage with its inputs and parameters."""
from __future__ import annotations

import argparse
from typing import Any

from flows.cli.output import emit, format_table

RESULT_FIELDS = ("stage", "status", "key", "rows_in", "rows_out", "seconds", "stats")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stage", help="run one stage alone on datasets of the store, or list the stages")
    parser.add_argument("name", nargs="?", metavar="STAGE", help="a stage name (see --list)")
    parser.add_argument("--list", action="store_true", help="every stage, its inputs, output and parameters")
    parser.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME=KEY",
                        help="an input dataset by store key, e.g. --input conversations=ingest-3f2a... (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a parameter, e.g. --set n1=500 (repeatable; the section prefix is optional)")
    parser.add_argument("--config", metavar="YAML", help="pipeline YAML whose section of this stage to start from")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--force", action="store_true", help="build again even if the store has the result")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from tasks.errors import BadInputError

    if args.list:
        return list_stages(args.json)
    if not args.name:
        raise BadInputError("name a stage, or give --list", field="STAGE")
    from storage.store import Store
    from tasks.stages import get

    stage = get(args.name)
    result = run(stage, stage_params(stage, args.config, args.overrides), parse_inputs(args.inputs), Store(args.store),
                 args.force)
    emit(result, args.json, f"{result['stage']}: {result['status']} {result['key']} ({result['rows_out']} rows, "
                            f"{result['seconds']}s)")
    return 0


def parse_inputs(items: list[str]) -> dict[str, str]:
    from tasks.errors import BadInputError

    inputs = {}
    for item in items:
        name, sep, key = item.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise BadInputError(f"--input expects NAME=KEY, got {item!r}", field="--input")
        inputs[name.strip()] = key.strip()
    return inputs


def stage_params(stage: Any, config: str | None, overrides: list[str]) -> Any:
    """A stage's parameters: its section of `config` (or its defaults), then the `--set` overrides."""
    from pydantic import ValidationError

    from flows.config import apply_overrides, load_config
    from storage.stage import validation_message
    from tasks.errors import BadInputError

    data = stage.dump_params(getattr(load_config(config), stage.section)) if config and stage.section else {}
    prefix = f"{stage.section}." if stage.section else None
    apply_overrides(data, [o.removeprefix(prefix) if prefix else o for o in overrides])
    try:
        return stage.parse_params(data)
    except ValidationError as exc:
        from flows.config import union_tags

        message, field = validation_message(exc, union_tags())
        raise BadInputError(message, field=".".join(p for p in (stage.section, field) if p) or None) from None


def run(stage: Any, params: Any, inputs: dict[str, str], store: Any, force: bool = False) -> dict[str, Any]:
    """Run the stage alone; the result as `--json` prints it."""
    from flows.plan import run_alone

    result = run_alone(stage, params, inputs, store, force)
    return {"stage": stage.name, "status": result.status, "key": result.ref.key, "rows_in": result.rows_in,
            "rows_out": result.ref.rows, "seconds": round(result.seconds, 2), "stats": result.stats}


def describe(stage: Any) -> dict[str, Any]:
    from pydantic import TypeAdapter

    schema = TypeAdapter(stage.params).json_schema()
    members = schema.get("$defs", {}).values() if "oneOf" in schema or "anyOf" in schema else [schema]
    fields = sorted({name for member in members for name in member.get("properties", {})})
    return {"stage": stage.name, "version": stage.version, "output": stage.dataset, "section": stage.section,
            "inputs": [i.name + ("?" if i.optional else "..." if i.many else "") for i in stage.inputs],
            "tags": list(stage.tags), "parameters": fields, "description": stage.description}


def list_stages(as_json: bool) -> int:
    from tasks.stages import registered

    rows = [describe(stage) for stage in registered().values()]
    table = [{**row, "inputs": ", ".join(row["inputs"]) or "-", "section": row["section"] or "-"} for row in rows]
    emit({"stages": rows}, as_json, format_table(table, ["stage", "inputs", "output", "section", "description"]) +
         "\n\ninputs: NAME? optional; NAME... every dataset of a fan-out stage. Parameters: --list --json")
    return 0
