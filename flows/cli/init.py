"""`sftflow init SOURCE... [--revisions FILE...] [--out FILE] [--force] [--json]`: a commented pipeline YAML for
your own files, ready for `sftflow run`.

Each source is read once by the ingest code (format and sheet detected as `sftflow ingest` does, every row
counted), and the defaults are sized to the rows found: n1 (and a budget to copy), the number of clusters, the
training steps. The YAML is validated with `load_config` before it is written, so what it writes also runs.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from flows.cli.output import emit, format_table

SELECT_SHARE = 0.02  # CaR keeps 1,000 of Alpaca's 52,002 rows (about 2%)
SELECT_MIN, SELECT_MAX = 20, 1000  # enough rows to train on at all; CaR's n1
COLUMNS = ["source", "format", "sheet", "read", "kept", "quarantined", "duplicates"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("init", help="write a commented pipeline YAML for your source files")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="files or hf: datasets, as for `sftflow ingest`")
    parser.add_argument("--revisions", nargs="+", metavar="FILE",
                        help="expert revisions to train the IQS model on (without them: a cluster-only sample)")
    parser.add_argument("--name", help="data set name (default: the first source's file name)")
    parser.add_argument("--out", default="pipeline.yaml", metavar="FILE", help="where to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def counted(source: Any) -> dict[str, Any]:
    """The ingest stage's statistics of a source: every row read, so the counts are the ones ingest reports."""
    from tasks.ingest.source import read_source

    read = read_source(source)
    for _ in read.tables:
        pass
    return read.stats


def describe(path: str) -> dict[str, Any]:
    """Format, sheet and counts of one source, detected and read as the ingest stage does."""
    from tasks.errors import BadInputError
    from tasks.ingest import xlsx
    from tasks.ingest.config import SourceConfig
    from tasks.ingest.readers import file_kind

    sheets = xlsx.sheet_names(path) if not path.startswith("hf:") and file_kind(path) == "xlsx" else None
    try:
        stats = counted(SourceConfig(path=path))
    except BadInputError:
        # a workbook whose first sheet is a cover page or notes: the first sheet whose records have a known format
        for sheet in (sheets or [])[1:]:
            try:
                stats = counted(SourceConfig(path=path, sheet=sheet))
                break
            except BadInputError:
                continue
        else:
            raise
    info = {"path": path, "format": stats["format"], "read": stats["read"], "kept": stats["kept"],
            "quarantined": stats["quarantined"], "duplicates": stats["duplicates"], "sheet": None, "sheets": sheets}
    if sheets is not None:
        info.update(sheet=stats["split"], header_row=stats["header_row"])
    return info


def sized_defaults(rows: int) -> dict[str, int]:
    """n1 about 2% of the rows (20 to 1,000), CaR's int(sqrt(n/2)) clusters, one epoch of LoRA steps."""
    k = max(1, int(math.sqrt(rows / 2)))
    n1 = min(rows, max(min(SELECT_MIN, rows), min(SELECT_MAX, math.ceil(rows * SELECT_SHARE))))
    selected = min(rows, n1 + k)  # n2 = 1: at most one more row per cluster
    return {"rows": rows, "k": k, "n1": n1, "budget": selected, "max_steps": max(1, math.ceil(selected / 4))}


def _q(value: Any) -> str:
    """A YAML scalar: JSON's double-quoted strings are valid YAML."""
    return "null" if value is None else json.dumps(value)


def _counts(source: dict[str, Any]) -> str:
    quarantined = sum(source["quarantined"].values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in source["quarantined"].items())
    return (f"{source['read']:,} read: {source['kept']:,} kept, {quarantined:,} quarantined"
            + (f" ({reasons})" if reasons else "") + f", {source['duplicates']:,} duplicate"
            + ("" if source["duplicates"] == 1 else "s"))


def yaml_text(name: str, sources: list[dict[str, Any]], written_paths: list[str], revisions: list[str] | None,
              sizes: dict[str, int]) -> str:
    lines = [f"# sftflow pipeline for {name}, written by `sftflow init`. Run it: sftflow run <this file>",
             "# Every field and its default: flows/config.py (PipelineConfig); --set section.field=value overrides.",
             f"name: {_q(name)}", "ingest:", "  sources:"]
    for source, path in zip(sources, written_paths):
        lines += [f"    # {_counts(source)}", f"    - path: {_q(path)}", f"      format: {_q(source['format'])}"]
        if source["sheet"] is not None:
            others = [s for s in source["sheets"] if s != source["sheet"]]
            lines.append(f"      sheet: {_q(source['sheet'])}  # header in Excel row {source['header_row'] + 1}"
                         + (f"; other sheets: {', '.join(others)}" if others else ""))
        lines.append("      # license: cc-by-4.0  # the source's licence, named in every export's provenance")
    rows = sizes["rows"]
    lines.append("iqs:")
    if revisions:
        lines += ["  # CaR's Instruction Quality Scorer, trained on these expert revisions (raw -> revised pairs)",
                  "  scorer: comet", "  revisions:"] + [f"    - {_q(path)}" for path in revisions]
    else:
        lines += ["  # No expert revisions given, so no quality scores: the selection is a cluster-only diversity",
                  "  # sample. To rank by quality, list revision files (JSON/JSONL records or CaR's src,score CSV)",
                  "  # under revisions: and set scorer: comet (CaR's model) or probe (cheap, on the embeddings).",
                  "  scorer: none"]
    lines += ["cluster:",
              f"  # empty: CaR's int(sqrt(rows / 2)) = {sizes['k']} clusters for these {rows:,} rows",
              "  k: null",
              "select:",
              f"  # about 2% of the {rows:,} rows (CaR: 1,000 of Alpaca's 52,002), at least {SELECT_MIN}, at most "
              f"{SELECT_MAX}",
              f"  n1: {sizes['n1']}",
              "  n2: 1  # then the best row of every cluster not already taken",
              f"  # budget: {sizes['budget']}  # a fixed total instead: n1 becomes the largest value that fits",
              "train:",
              f"  # one epoch over the at most {sizes['budget']:,} selected rows at batch_size 4; LoRA on the bundled "
              "SmolLM2-135M",
              f"  max_steps: {sizes['max_steps']}",
              "  batch_size: 4",
              "# export:  # the selection for other trainers after every run, with its provenance (docs/export.md)",
              "#   - openai:selection.jsonl  # OpenAI messages JSONL (TRL, axolotl, OpenAI fine-tuning)",
              "#   - hf:selection_hf  # a folder datasets.load_from_disk opens, with a dataset card"]
    return "\n".join(lines) + "\n"


def written_path(path: str, folder: Path) -> str:
    """A local source below the YAML's folder relative to it (load_config resolves it against that folder), so the
    two move together; anything else as it is (absolute paths, URLs, hf: datasets)."""
    if "://" in path or path.startswith("hf:") or not Path(path).is_relative_to(folder):
        return path
    return Path(path).relative_to(folder).as_posix()


def handle(args: argparse.Namespace) -> int:
    from flows.cli.ingest import source_path
    from flows.config import load_config
    from tasks.errors import BadInputError

    out = Path(args.out)
    if out.exists() and not args.force:
        raise BadInputError("exists already: pass --force to overwrite it, or --out another file", file=str(out),
                            field="--out")
    folder = out.resolve().parent
    paths = [source_path(s) for s in args.sources]
    for given, path in zip(args.sources, paths):
        if "://" not in path and not path.startswith("hf:") and not Path(path).exists():
            raise FileNotFoundError(f"no such source file: {given}")
    revisions = [written_path(source_path(p), folder) for p in args.revisions or []]
    sources = [describe(path) for path in paths]
    sizes = sized_defaults(sum(s["kept"] for s in sources))
    name = args.name or Path(args.sources[0].rstrip("/")).name.split(".")[0]
    text = yaml_text(name, sources, [written_path(p, folder) for p in paths], revisions, sizes)
    draft = folder / f".{out.name}.draft"  # beside it: relative paths resolve as they will from the file itself
    draft.write_text(text)
    try:
        load_config(draft)  # what is written must load (a failure here is a bug of this command, not bad input)
        draft.replace(out)
    finally:
        draft.unlink(missing_ok=True)
    rows = [{"source": Path(s["path"]).name, "format": s["format"], "sheet": s["sheet"], "read": s["read"],
             "kept": s["kept"], "quarantined": sum(s["quarantined"].values()), "duplicates": s["duplicates"]}
            for s in sources]
    result = {"out": str(out), "name": name, "sources": sources, "defaults": sizes}
    emit(result, args.json, format_table(rows, COLUMNS) + f"\n\nwrote {out} ({sizes['rows']:,} rows: n1 "
         f"{sizes['n1']}, about {sizes['k']} clusters, {sizes['max_steps']} training steps); run it with "
         f"`sftflow run {out}`")
    return 0
