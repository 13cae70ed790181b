"""`sftflow select --report [KEY]`: the selection report (the newest selection when no KEY), with links to its
exports (`sftflow export`, the pipeline's export stage).
`sftflow select --explore [KEY] [--no-browser]`: the selection explorer page, opened in a browser.
`sftflow select --conversations KEY --clusters KEY [--scored KEY] [--set n1=500]`: run the select stage alone."""
from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser

from flows.cli.output import emit, format_table

CLUSTER_COLUMNS = ["cluster", "size", "selected", "top_score", "cluster_top", "best_score", "mean_score"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("select", help="CaR selection: print a selection's report, or run the select stage")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--report", nargs="?", const="", metavar="KEY",
                       help="print the report of selection KEY (default: the newest selection in the store)")
    shown.add_argument("--explore", nargs="?", const="", metavar="KEY",
                       help="print the path of selection KEY's explorer page (default: the newest selection) and "
                            "open it in a browser")
    parser.add_argument("--no-browser", action="store_true", help="--explore: print the path, open nothing")
    parser.add_argument("--clusters-shown", type=int, default=20, metavar="N",
                        help="largest clusters listed in the report table (default 20; all with --json)")
    parser.add_argument("--conversations", metavar="KEY", help="run: the conversations dataset")
    parser.add_argument("--clusters", metavar="KEY", help="run: the clusters dataset")
    parser.add_argument("--scored", metavar="KEY", help="run: the IQS scores (omit for a cluster-only sample)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="run: a select option, e.g. --set n1=500 --set budget=800 (repeatable)")
    parser.add_argument("--force", action="store_true", help="run: build again even if the store has it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def latest_selection(store) -> str:
    selections = [row for row in store.ls() if row["stage"] == "select" and row["complete"]]
    if not selections:
        raise FileNotFoundError(f"no selection in store {store.url}: run the pipeline or "
                                "`sftflow select --conversations"
                                " KEY --clusters KEY` first")
    return max(selections, key=lambda row: row["created"])["key"]


def handle(args: argparse.Namespace) -> int:
    from storage.store import Store
    from tasks.errors import BadInputError

    shown = args.report if args.explore is None else args.explore
    if shown is None and not (args.conversations and args.clusters):
        raise BadInputError("give --report [KEY], --explore [KEY], or --conversations KEY and --clusters KEY to run",
                            field="--conversations" if args.clusters else "--clusters" if args.conversations else None)
    store = Store(args.store)
    key = run(store, args) if shown is None else shown or latest_selection(store)
    if args.explore is None:
        show_report(store, key, args)
    else:
        explore(store, key, args)
    return 0


def run(store, args: argparse.Namespace) -> str:
    """The select stage alone (`sftflow stage select` with these flags)."""
    from flows.cli.stage import run, stage_params
    from tasks.stages import get

    stage = get("select")
    inputs = {"conversations": args.conversations, "clusters": args.clusters}
    if args.scored:
        inputs["scored"] = args.scored
    return run(stage, stage_params(stage, None, args.overrides), inputs, store, args.force)["key"]


def selection_manifest(store, key: str) -> dict:
    manifest = store.manifest(key)
    if manifest["stage"] != "select":
        raise FileNotFoundError(f"{key} is a {manifest['stage']} dataset, not a selection")
    return manifest


def has_display() -> bool:
    """False on a Linux machine without X or Wayland (ssh, CI), where webbrowser would start a text browser."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def explore(store, key: str, args: argparse.Namespace) -> None:
    from tasks.explorer import EXPLORER_FILE

    manifest = selection_manifest(store, key)
    if f"files/{EXPLORER_FILE}" not in {f["name"] for f in manifest.get("files", [])}:
        raise FileNotFoundError(f"selection {key} has no {EXPLORER_FILE} (made before the explorer existed): run "
                                "the select stage again (`sftflow run --from select`, or `sftflow select ... --force`)")
    path = store.local_path(key, "files", EXPLORER_FILE)
    opened = not args.no_browser and has_display() and webbrowser.open(path.as_uri())
    note = "opened in your browser" if opened else "open it in a browser" + (
        "" if args.no_browser else " (no display here to open one on)")
    emit({"key": key, "path": str(path), "url": path.as_uri(), "opened": opened}, args.json, f"{path}\n{note}")


def show_report(store, key: str, args: argparse.Namespace) -> None:
    from tasks.select import SUMMARY_FILE, SUMMARY_ROWS
    from tasks.stages.export import exports_of, link

    manifest = selection_manifest(store, key)
    summary = json.loads(store.read_file(key, SUMMARY_FILE))
    files = {f["name"].removeprefix("files/"): str(store.local_path(key, *f["name"].split("/")))
             for f in manifest.get("files", [])}
    exported = [{name: entry[name] for name in ("format", "path", "rows", "created")}
                for entry in exports_of(store, key)]
    result = {"key": key, **summary, "files": files, "exports": exported}
    rows = [{"": label, "value": summary.get(name)} for name, label in SUMMARY_ROWS]
    clusters = sorted(summary["cluster_table"], key=lambda r: (-r["size"], r["cluster"]))
    shown = clusters[:args.clusters_shown]
    text = [f"selection {key}", *([summary["note"]] if summary["note"] else []), "",
            format_table(rows, ["", "value"]), "",
            f"largest {len(shown)} of {len(clusters)} clusters:",
            format_table(shown, [c for c in CLUSTER_COLUMNS if c in clusters[0]]), "",
            *[f"{name}: {path}" for name, path in files.items() if name.endswith((".png", ".html"))],
            *[f"exported as {e['format']}: {link(e['path'])} ({e['rows']:,} rows, {e['created']})" for e in exported]]
    emit(result, args.json, "\n".join(text))
