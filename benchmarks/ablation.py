"""The selection ablation on Alpaca-52k (../shared/data): does a selector beat a random sample of the same size?

CaR's own budget by default: the pool is all of Alpaca-52k after dedup (`--pool-rows` N: a seeded subset);
the held-out sets are `--holdout-rows` rows of the pool, split off before any selector runs, and the 254
expert-revised validation responses of CaR (APE_score_valid.csv, format car_revised). Every selector takes
`--budget` rows (1,000: CaR's n1, with its n2 = 1 per cluster cut or filled to exactly 1,000), and trains the
same LoRA on the bundled SmolLM2-135M-Instruct for `--epochs` passes (or `--steps`), batch, length and learning
rate alike. The arms: `--selectors` × `--seeds` (the core table: CaR with the comet IQS trained on CaR's 2,032
pairs, and random), `--more-selectors` × `--more-seeds`, and `--lr-selectors` × `--lr-seeds` at each of
`--learning-rates` (each compared with random at its own rate); `--full` adds the whole pool, one seed, planned
last. Every step is cached in the store under `--work`: a run cut short continues from its finished chains, and
the same command again is served from it.
The numbers are the flow's own report (flows/ablation.py); `comparisons` lists each arm's paired difference to
random, with its interval.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.evaluate import ALPACA

CAR = ALPACA.parents[1] / "car"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool-rows", type=int, default=0, help="seeded subset of Alpaca-52k (0: all of it)")
    parser.add_argument("--holdout-rows", type=int, default=500)
    parser.add_argument("--gold", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate on CaR's 254 revised validation responses")
    parser.add_argument("--budget", type=int, default=1000, help="rows every selector selects")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over each selection (when no --steps)")
    parser.add_argument("--steps", type=int, help="LoRA steps per training run (instead of --epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row, training and evaluation")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="every arm's, unless it names its own")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the core selectors")
    parser.add_argument("--selectors", default="car,random", help="the core table")
    parser.add_argument("--more-selectors", default="", help="more arms, e.g. car:probe,longest,random@tokens=car,"
                                                             "cluster_only")
    parser.add_argument("--more-seeds", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also train on every row of the pool (one seed, "
                                                            "planned last: hours on 2 cores, resumed from its "
                                                            "checkpoints)")
    parser.add_argument("--learning-rates", default="", help="more learning rates for --lr-selectors, e.g. 6.67e-5")
    parser.add_argument("--lr-selectors", default="car,random")
    parser.add_argument("--lr-seeds", type=int, default=2)
    parser.add_argument("--iqs", default="comet", help="the scorer car and top_score use (comet: CaR's IQS)")
    parser.add_argument("--comet-epochs", type=int, default=1, help="epochs of the comet IQS on CaR's 2,032 pairs")
    parser.add_argument("--prompts", default="", help="also answer these prompt sets and judge each arm against "
                                                      "random, e.g. alpacaeval (needs $SFTFLOW_PROMPT_SETS)")
    parser.add_argument("--judge", default="reward", help="the judge of those answers")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per answer (default: generate's)")
    parser.add_argument("--work", default="/tmp/sftflow-ablation-benchmark", help="pool file and store")


def names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def arms(args: argparse.Namespace) -> list[Any]:
    from flows.ablation import Arm

    found = [Arm.parse(name, args.seeds) for name in names(args.selectors)]
    found += [Arm.parse(name, args.more_seeds) for name in names(args.more_selectors)]
    found += [Arm.parse(name, args.lr_seeds, float(rate)) for rate in names(args.learning_rates)
              for name in names(args.lr_selectors)]
    return found + ([Arm.parse("full", 1)] if args.full else [])


def pool_file(work: Path, rows: int) -> Path:
    """Alpaca-52k itself, or a seeded subset of `rows` records of it as an Alpaca JSON file."""
    if not rows:
        return ALPACA
    records = json.loads(gzip.decompress(ALPACA.read_bytes()))
    records = [records[i] for i in sorted(random.Random(0).sample(range(len(records)), rows))]
    path = work / f"alpaca_{rows}.json"
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
    iqs = {"scorer": args.iqs, "revisions": [str(CAR / "APE_score_train.csv")],
           "validation_revisions": [str(CAR / "APE_score_valid.csv")],
           **({"epochs": args.comet_epochs} if args.iqs == "comet" else {})}
    config = PipelineConfig.model_validate({
        "name": "alpaca-ablation", "store": str(work / "store"),
        "ingest": {"sources": [str(pool_file(work, args.pool_rows))]},  # as pipeline_scale reads it: one key
        "iqs": iqs, "format": {"max_length": args.max_length, "exports": []},
        "train": {"max_steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size,
                  "max_length": args.max_length, "learning_rate": args.learning_rate},
        "eval": {"holdout_rows": args.holdout_rows, "sets": sets},
        "generate": {"prompts": names(args.prompts),
                     **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})},
        "judge": {"judge": args.judge}})
    chosen = arms(args)
    began = time.perf_counter()
    result = run_ablation(config, args.budget, arms=chosen)
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
            "budget": args.budget, "epochs": None if args.steps else args.epochs, "steps": args.steps,
            "batch_size": args.batch_size, "max_length": args.max_length, "learning_rate": args.learning_rate,
            "arms": [arm.model_dump() for arm in chosen], "iqs": args.iqs, "seconds": round(seconds, 1),
            "steps_ran": ran, "runs": report["runs"], "report": result["report"]["files"]["report.md"],
            "judged": report.get("judged"), "prompts": args.prompts or None,
            "load_average": os.getloadavg()}
