"""`sftflow export [KEY] --to FORMAT:PATH [--to ...] [--system TEXT] [--multi-turn refuse|history]
[--with lineage] [--force] [--json]`: a conversation dataset of the store (the newest selection when no KEY) in
other trainers' formats, with its provenance. Runs the export stage (tasks/stages/export.py) alone, so the store
records what was written where (`sftflow select --report` lists it)."""
from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    from tasks.exports import EXPORT_FORMATS

    parser = sub.add_parser("export", help="write a selection (or any conversation dataset) for another trainer",
                            description="Formats: " + ", ".join(EXPORT_FORMATS) + ". PATH is a local path or any "
                                        "fsspec URL (s3://, gs://, ...); hf and llamafactory write a folder.")
    parser.add_argument("key", nargs="?", metavar="KEY",
                        help="store key or unique prefix of a conversation dataset (selection, conversations, "
                             "dedup's -removed rows, eval set); default: the newest selection")
    parser.add_argument("--to", dest="to", action="append", default=[], metavar="FORMAT:PATH", required=True,
                        help="a destination, e.g. --to openai:selection.jsonl --to hf:selection_hf (repeatable)")
    parser.add_argument("--system", help="system prompt for every record (replaces the records' own; '' for none)")
    parser.add_argument("--multi-turn", choices=["refuse", "history"], default="refuse",
                        help="alpaca: refuse multi-turn conversations (default), or put earlier turns in "
                             "LLaMA-Factory's history")
    parser.add_argument("--with", dest="extras", action="append", default=[], choices=["lineage"],
                        help="lineage: add id, source file/sheet/row, score, cluster and selection reason columns")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--force", action="store_true", help="replace what is at a destination")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def resolve(store, reference: str | None) -> str:
    """A store key or a unique prefix of one; the newest selection when None."""
    from flows.cli.select import latest_selection
    from tasks.errors import BadInputError

    if reference is None:
        return latest_selection(store)
    matches = store.resolve(reference)
    if len(matches) != 1:
        hint = (f"it matches {len(matches)} keys ({', '.join(matches[:4])}{', …' if len(matches) > 4 else ''})"
                if matches else "no such key; see `sftflow store ls`")
        raise BadInputError(f"{reference!r} does not name one dataset in the store {store.url}: {hint}", field="KEY")
    return matches[0]


def destination(spec: str):
    """A --to FORMAT:PATH, a local PATH made absolute (the stage's key and its checks of the files do not depend
    on the working directory)."""
    from tasks.exports import EXPORT_FORMATS, parse_spec
    from tasks.stages.export import Destination

    fmt, path = parse_spec(spec, EXPORT_FORMATS, "--to")
    return Destination(format=fmt, path=path if "://" in path else str(Path(path).expanduser().resolve()))


def handle(args: argparse.Namespace) -> int:
    from flows.plan import run_alone
    from storage.store import Store
    from tasks.stages import get
    from tasks.stages.export import ExportConfig

    store = Store(args.store)
    key = resolve(store, args.key)
    params = ExportConfig(to=[destination(spec) for spec in args.to], system=args.system,
                          multi_turn=args.multi_turn, lineage="lineage" in args.extras, replace=args.force)
    result = run_alone(get("export"), params, {"selection": key}, store, force=True)
    exports = result.stats["exports"]
    lines = [f"{key}: {result.stats['rows']:,} rows"]
    for entry in exports:
        lines.append(f"  {entry['format']:<12} {entry['rows']:>7,} rows  {entry['path']}")
        lines += [f"      left out {n['count']} ({reason}): {', '.join(n['first_ids'])}"
                  for reason, n in entry["left_out"].items()]
    lines.append(f"recorded in the store as {result.ref.key}")
    emit({"key": key, "export_key": result.ref.key, "rows": result.stats["rows"], "exports": exports}, args.json,
         "\n".join(lines))
    return 0
