"""`sftflow ingest SOURCE... [--format F] [--sheet S] [--split S] [--map K=COL]... [--no-repair] [--lang L]...
[--preference chosen] [--export FORMAT:PATH]... [--json]`.

Runs the ingest stages without Prefect (storage.stage.run_stage): one cached `ingest.source` per source, then
the `ingest` merge; ends with the counts (read = kept + quarantined + duplicates), the repairs, the warnings
(a quarantine reason above 5% of a source, with the option that would read those rows) and the store keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.cli.output import emit, format_table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ingest", help="read sources into the canonical conversation table",
                            description="Sources: files (.json .jsonl .csv .tsv .parquet .xlsx, optionally .gz), "
                                        "hf:NAME[:CONFIG][@REVISION] (a hub dataset, a save_to_disk folder or a "
                                        "downloaded dataset repo folder).")
    parser.add_argument("sources", nargs="+", metavar="SOURCE")
    parser.add_argument("--format", help="alpaca, sharegpt, openai, guanaco, xtuner, self-instruct, oasst1, "
                                         "oasst-trees, canonical, medicationqa, columns (default: detected from the "
                                         "records)")
    parser.add_argument("--sheet", help="xlsx sheet (default: DrugQA for medicationqa, else the first sheet)")
    parser.add_argument("--split", help="dataset split for hf: sources (default: train, or the only one)")
    parser.add_argument("--map", dest="mapping", action="append", default=[], metavar="KEY=COLUMN",
                        help="table column for system, input or output, e.g. --map input=Question (repeatable)")
    parser.add_argument("--system-prompt", help="system prompt for records that have none")
    parser.add_argument("--repair", action=argparse.BooleanOptionalAction, default=True,
                        help="drop leading assistant turns, merge consecutive same-role turns, read chatgpt/bing/"
                             "bard/model as assistant (default: on; --no-repair quarantines such conversations)")
    parser.add_argument("--lang", action="append", default=[], metavar="CODE",
                        help="keep only conversations in this language, e.g. --lang en (repeatable or comma-"
                             "separated; conversations without a lang are kept)")
    parser.add_argument("--preference", choices=["chosen"],
                        help="preference records (chosen/rejected): take the chosen answer as the assistant turn")
    parser.add_argument("--export", action="append", default=[], metavar="FORMAT:PATH",
                        help="also write the result as xtuner, alpaca, sharegpt, openai or canonical (repeatable)")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the store has the result")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def source_path(text: str) -> str:
    """Local paths (hf: folders too) become absolute so the same data gives the same key from any directory."""
    if text.startswith("hf:"):
        from tasks.ingest import hf

        source = hf.parse_uri(text)
        if source.local is None:
            return text
        return (f"hf:{source.local.resolve()}" + (f":{source.config}" if source.config else "") +
                (f"@{source.revision}" if source.revision else ""))
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def handle(args: argparse.Namespace) -> int:
    from flows.plan import run_alone
    from storage.stage import companion_key
    from storage.store import Store
    from tasks.errors import BadInputError
    from tasks.exports import parse_spec, write_export
    from tasks.ingest.config import SourceConfig
    from tasks.stages import get
    from tasks.stages.ingest import IngestConfig

    mapping = {}
    for item in args.mapping:
        key, sep, column = item.partition("=")
        if not sep or not column:
            raise BadInputError(f"--map expects KEY=COLUMN, got {item!r}", field="mapping")
        mapping[key.strip()] = column.strip()
    exports = [parse_spec(spec) for spec in args.export]
    langs = [code.strip() for item in args.lang for code in item.split(",") if code.strip()]
    sources = [SourceConfig(path=source_path(s), format=args.format, sheet=args.sheet, split=args.split,
                            mapping=mapping or None, system_prompt=args.system_prompt, repair=args.repair,
                            lang=langs or None, preference=args.preference) for s in args.sources]
    store = Store(args.store)
    refs = {}
    for i, source in enumerate(sources):
        result = run_alone(get("ingest.source"), source, {}, store, force=args.force)
        print(f"{source.path}: {result.status} {result.ref.key}", file=sys.stderr)
        refs[f"source_{i:03d}"] = result.ref.key
    merged = run_alone(get("ingest"), IngestConfig(sources=sources), refs, store, force=args.force)
    stats = merged.stats
    exported = []
    for fmt, path in exports:
        done = write_export(store.iter_batches(merged.ref.key), fmt, path)
        print(f"exported to {path}: {done.summary(fmt)}", file=sys.stderr)
        exported.append({"format": fmt, "path": path, "written": done.written, "skipped": done.skipped,
                         "first_ids": done.first_ids})
    result = {"read": stats["read"], "kept": stats["kept"], "quarantined": stats["quarantined"],
              "duplicates": stats["duplicates"], "repairs": stats["repairs"], "warnings": stats["warnings"],
              "key": merged.ref.key, "quarantine_key": companion_key(merged.ref.key, "quarantine")}
    if exported:
        result["exports"] = exported
    rows = [{"source": _shown(s["uri"]), "format": s["format"], "split": s["split"], "read": s["read"],
             "kept": s["kept"], "quarantined": sum(s["quarantined"].values()), "duplicates": s["duplicates"]}
            for s in stats["sources"]]
    reasons = "".join(f"\n  {reason}: {n}" for reason, n in stats["quarantined"].items())
    repairs = dict(stats["repairs"])
    repaired = (f"\nrepaired {repairs.pop('conversations')} conversations: "
                + ", ".join(f"{kind} {n}" for kind, n in repairs.items()) if repairs else "")
    warnings = "".join(f"\nwarning: {w}" for w in stats["warnings"])
    text = (format_table(rows, ["source", "format", "split", "read", "kept", "quarantined", "duplicates"]) +
            f"\n\nread {stats['read']} = kept {stats['kept']} + quarantined {sum(stats['quarantined'].values())} + "
            f"duplicates {stats['duplicates']} ({stats['duplicates_across_sources']} across sources)"
            f"{reasons}{repaired}{warnings}\ndataset    {result['key']} ({merged.status})\n"
            f"quarantine {result['quarantine_key']}")
    emit(result, args.json, text)
    return 0


def _shown(uri: str) -> str:
    """A path under the working directory is shown relative to it."""
    path = Path(uri)
    return str(path.relative_to(Path.cwd())) if path.is_absolute() and path.is_relative_to(Path.cwd()) else uri
