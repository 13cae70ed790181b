"""The selection ablation on Alpaca-52k (../shared/data): does a selector beat a random sample of the same size?

Pool: Alpaca-52k, or a seeded subset of it (`--pool-rows`); held-out sets: `--holdout-rows` rows of the pool
(split off before any selector runs) and the 254 expert-revised validation responses of CaR
(APE_score_valid.csv, format car_revised). The IQS scores come from `--iqs` trained on CaR's 2,032 training
pairs (probe by default: the comet IQS takes 16-20 minutes an epoch on 2 CPU cores). Base model: the bundled
SmolLM2-135M-Instruct; every selector x seed trains the same LoRA for `--steps` steps. The numbers are the
flow's own report (flows/ablation.py); "comparisons" lists each selector's paired difference to random.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.evaluate import ALPACA

CAR = ALPACA.parents[1] / "car"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from flows.ablation import DEFAULT_SELECTORS

    parser.add_argument("--pool-rows", type=int, default=5000, help="seeded subset of Alpaca-52k (0: all of it)")
    parser.add_argument("--holdout-rows", type=int, default=500)
    parser.add_argument("--gold", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate on CaR's 254 revised validation responses")
    parser.add_argument("--budget", type=int, default=40, help="rows every selector selects")
    parser.add_argument("--steps", type=int, default=10, help="LoRA steps per training run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per row, training and evaluation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--selectors", default=",".join(DEFAULT_SELECTORS))
    parser.add_argument("--iqs", default="probe", help="the IQS scorer car and top_score use (probe or comet)")
    parser.add_argument("--work", default="/tmp/sftflow-ablation-benchmark", help="pool file and store")


def pool_file(work: Path, rows: int) -> Path:
    """Alpaca-52k, or a seeded subset of `rows` records of it, as an Alpaca JSON file."""
    records = json.loads(gzip.decompress(ALPACA.read_bytes()))
    if rows:
        records = [records[i] for i in sorted(random.Random(0).sample(range(len(records)), rows))]
    path = work / f"alpaca_{rows or 'all'}.json"
    if not path.is_file():
        path.write_text(json.dumps(records))
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    from flows.ablation import run_ablation
    from flows.config import PipelineConfig

    if not ALPACA.is_file():
        raise SystemExit(f"benchmark data not found: {ALPACA} (the project's ../shared/data)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sets = [{"path": str(CAR / "APE_score_valid.csv"), "format": "car_revised", "name": "gold"}] if args.gold else []
    config = PipelineConfig.model_validate({
        "name": "alpaca-ablation", "store": str(work / "store"),
        "ingest": {"sources": [{"path": str(pool_file(work, args.pool_rows)), "format": "alpaca"}]},
        "iqs": {"scorer": args.iqs, "revisions": [str(CAR / "APE_score_train.csv")]},
        "format": {"max_length": args.max_length, "exports": []},
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length},
        "eval": {"holdout_rows": args.holdout_rows, "sets": sets}})
    selectors = [s.strip() for s in args.selectors.split(",") if s.strip()]
    began = time.perf_counter()
    result = run_ablation(config, args.budget, selectors, args.seeds)
    seconds = time.perf_counter() - began
    report = json.loads(Path(result["report"]["files"]["ablation.json"]).read_text())
    comparisons = []
    for eval_set in report["summary"]["eval_sets"]:
        for model in eval_set["models"]:
            if model["vs_baseline"]:
                delta = model["vs_baseline"]["loss"]
                comparisons.append({"name": f"{eval_set['name']}: {model['model']}",
                                    "loss": round(model["summary"]["loss"]["estimate"], 4),
                                    "delta_vs_random": round(delta["estimate"], 4), "low": round(delta["low"], 4),
                                    "high": round(delta["high"], 4), "verdict": model["vs_baseline"]["verdict"]})
    ran = sum(row["status"] == "ran" for row in result["stages"])
    return {"benchmark": "ablation", "comparisons": comparisons, "sentence": report["sentence"],
            "pool_rows": args.pool_rows or "all", "holdout_rows": args.holdout_rows, "gold": args.gold,
            "budget": args.budget, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "seeds": args.seeds, "selectors": selectors, "iqs": args.iqs, "seconds": round(seconds, 1),
            "steps_ran": ran, "report": result["report"]["files"]["report.md"]}
