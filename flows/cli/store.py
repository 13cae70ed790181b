"""`sftflow store ls | show KEY | gc`."""
from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from flows.cli.output import emit, format_table
from storage.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("store", help="list, inspect and clean the dataset store")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list datasets and models")
    ls.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help="print a manifest and the first rows")
    show.add_argument("key")
    show.add_argument("--rows", type=int, default=5)
    show.add_argument("--json", action="store_true")
    gc = verbs.add_parser("gc", help="remove what interrupted writes left behind")
    gc.add_argument("--older-than", type=float, default=3600.0, metavar="SECONDS")
    gc.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.verb == "ls":
        rows = store.ls()
        now = datetime.now(UTC)
        for row in rows:
            age = (now - datetime.fromisoformat(row["created"])).total_seconds()
            row["age"] = _age(age)
            row["size"] = _size(row["bytes"])
        emit({"store": store.url, "datasets": rows}, args.json,
             format_table(rows, ["key", "stage", "kind", "rows", "size", "age"]) if rows else f"{store.url}: empty")
    elif args.verb == "show":
        manifest = store.manifest(args.key)
        head = store.read_shard(args.key, 0).slice(0, args.rows).to_pylist() if manifest["shards"] else []
        emit({"manifest": manifest, "rows": head}, args.json,
             json.dumps(manifest, indent=2, default=str) + "\n\n" +
             "\n".join(json.dumps(r, ensure_ascii=False, default=str)[:400] for r in head))
    else:
        removed = store.gc(args.older_than)
        emit({"removed": removed}, args.json, f"removed {len(removed)} leftover(s)" +
             "".join(f"\n  {r}" for r in removed))
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"
