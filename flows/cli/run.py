"""`sftflow run [CONFIG.yaml] [--set key=value]... [--from STAGE] [--until STAGE] [--plan] [--json]`: the pipeline
flow (`--plan`: the steps it would run, with their keys and whether the store holds them, running nothing)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from flows.cli.output import emit, format_table

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "demo" / "pipeline.yaml"
COLUMNS = ["stage", "status", "rows_in", "rows_out", "seconds", "peak_rss_mb", "key"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run the pipeline flow (the demo configuration when no CONFIG is given)")
    parser.add_argument("config", nargs="?", help="pipeline YAML (see demo/pipeline.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set select.n1=500 (repeatable)")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE",
                        help="force this stage and every stage that reads its output to run again")
    parser.add_argument("--until", dest="until_stage", metavar="STAGE",
                        help="stop after this stage: run only it and what it needs")
    parser.add_argument("--task-runner", choices=["thread", "dask", "ray"], help="overrides runner.task_runner")
    parser.add_argument("--address", "--dask-address", dest="address",
                        help="address of an existing Dask or Ray cluster (overrides runner.address)")
    parser.add_argument("--plan", action="store_true",
                        help="print the steps the run would execute (keys, inputs, cached or to run); run nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.execute import PipelineFailed
    from flows.pipeline import run_pipeline

    overrides = list(args.overrides)
    if args.task_runner:
        overrides.append(f"runner.task_runner={args.task_runner}")
    if args.address:
        overrides.append(f"runner.address={args.address}")
    if not args.config and not (DEMO_CONFIG.parent / "data").is_dir():  # a fresh clone: `make demo`'s first step
        print("sftflow run: writing the demo data first (python demo/build_data.py demo/data)", file=sys.stderr)
        subprocess.run([sys.executable, str(DEMO_CONFIG.parent / "build_data.py"), str(DEMO_CONFIG.parent / "data")],
                       check=True)
    config = load_config(args.config or DEMO_CONFIG, overrides)
    if args.plan:
        from flows.pipeline import plan_for, sft_pipeline
        from flows.runner import describe, normalized, plan_text

        description = describe(plan_for(normalized(config), args.from_stage, args.until_stage), sft_pipeline.name)
        emit(description, args.json, plan_text(description))
        return 0
    try:
        report = run_pipeline(config, from_stage=args.from_stage, until_stage=args.until_stage)
        code = 0
    except PipelineFailed as exc:
        report, code = exc.report, 1
    failures = "".join(f"\n{row['stage']} failed: {row['error']}" for row in report["stages"] if row["error"])
    emit(report, args.json, format_table(report["stages"], COLUMNS) + failures)
    if code:
        print("pipeline failed; fix the cause and run again: finished stages come back from the cache",
              file=sys.stderr)
    return code
