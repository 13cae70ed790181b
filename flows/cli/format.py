"""`sftflow format SELECTION --base-model MODEL [--template NAME] ... [--out DIR] [--json]`: run the format stage
on a selection in the store (or a canonical parquet/JSONL file) and copy its exports out."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("format", help="tokenize a selection with a prompt template; write exports")
    parser.add_argument("selection", help="store key of a selection (or any canonical conversation table)")
    parser.add_argument("--base-model", required=True, metavar="KEY|DIR",
                        help="store key of a base_model artifact, or a local HF model/tokenizer folder")
    parser.add_argument("--config", help="pipeline YAML whose `format` section is the starting point")
    parser.add_argument("--template", help="template name (`sftflow templates list`)")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--train-on", choices=["all_assistant", "last_assistant", "prompt"])
    parser.add_argument("--system", help="system prompt for every sample ('' for none)")
    parser.add_argument("--export", help="comma-separated: text,xtuner,llamafactory ('' for none)")
    parser.add_argument("--out", type=Path, help="copy the exports (and chat_template.jinja) into this folder")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--force", action="store_true", help="run again even if the store has the result")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def model_key(store, value: str) -> str:
    """A base_model reference: a store key as is, a local folder published once as a model artifact."""
    from storage.keys import digest

    folder = Path(value)
    if not folder.is_dir():
        return value
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    key = "base_model-local-" + digest([str(folder.resolve())] + [[str(p), p.stat().st_size, p.stat().st_mtime_ns]
                                                                   for p in files])
    if not store.verify(key):
        with store.writer(key, "base_model", kind="model", source=str(folder.resolve())) as writer:
            writer.add_file("model", folder)
    return key


def handle(args: argparse.Namespace) -> int:
    from flows.cli.stage import stage_params
    from flows.plan import run_alone
    from storage.store import Store
    from tasks.stages import get

    store = Store(args.store)
    stage = get("format")
    overrides = [f"{name}={value}" for name, value in (("template", args.template), ("max_length", args.max_length),
                                                       ("train_on", args.train_on)) if value is not None]
    if args.system is not None:
        overrides.append(f"system={json.dumps(args.system)}")
    if args.export is not None:
        overrides.append(f"exports={json.dumps([e.strip() for e in args.export.split(',') if e.strip()])}")
    params = stage_params(stage, args.config, overrides)
    inputs = {"selection": args.selection, "base_model": model_key(store, args.base_model)}
    result = run_alone(stage, params, inputs, store, force=args.force)
    copied = []
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for entry in store.manifest(result.ref.key)["files"]:
            name = entry["name"].removeprefix("files/")
            if name.startswith("exports/") or name in ("chat_template.jinja", "report.md"):
                target = args.out / name.removeprefix("exports/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store.local_path(result.ref.key, "files", name), target)
                copied.append(str(target))
    stats = result.stats
    summary = {"key": result.ref.key, "status": result.status, "seconds": round(result.seconds, 2),
               "stats": stats, "exports": copied}
    text = (f"{result.status} {result.ref.key}: {stats.get('rows_out')} samples, {stats.get('quarantined')} "
            f"quarantined, {stats.get('tokens')} tokens ({stats.get('supervised_share', 0):.1%} supervised), "
            f"template {stats.get('template')}" + "".join(f"\n  {p}" for p in copied))
    emit(summary, args.json, text)
    return 0
