"""Peak memory of each model stage at the Alpaca-52k / 1,000-row settings of docs/evaluate.md, measured from
outside: every step runs in a fresh process (`python -m benchmarks.memory STORE LABEL`) and this one reads the
kernel's peak of it (VmHWM in /proc/PID/status) until it exits. The steps: ingest and dedup of all of Alpaca-52k
(not measured: no model), embed (52k rows), the comet IQS trained on CaR's 2,032 pairs and scoring 52k rows,
the 1,000 longest answers trained at batch 8 x 512 tokens (`--steps`: the peak comes in the first step), and
the base model and that adapter evaluated on 500 held-out rows and CaR's 254 revised answers. Steps the store
holds from an earlier run are not rebuilt (`--force`: rebuild the measured ones). The goal: training <= 3 GB,
every other stage <= 4 GB; `comparisons` lists each measured stage against its bound.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.ablation import ALPACA, CAR

BOUND_MB = {"train": 3 * 1024}  # the others: 4 GB
OTHER_BOUND_MB = 4 * 1024
MODEL_STAGES = ("embed", "iqs.train", "iqs", "train", "evaluate")
ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default="/tmp/sftflow-memory-benchmark", help="the store")
    parser.add_argument("--steps", type=int, default=6, help="training steps (batch 8 x 512 tokens)")
    parser.add_argument("--force", action="store_true", help="rebuild the measured steps the store holds")


def config(work: str, steps: int) -> Any:
    from flows.config import PipelineConfig

    return PipelineConfig.model_validate({
        "name": "memory", "store": str(Path(work) / "store"), "ingest": {"sources": [str(ALPACA)]},
        "iqs": {"scorer": "comet", "revisions": [str(CAR / "APE_score_train.csv")],
                "validation_revisions": [str(CAR / "APE_score_valid.csv")], "epochs": 1},
        "format": {"max_length": 512, "exports": []},
        "train": {"max_steps": steps, "batch_size": 8, "max_length": 512},
        "eval": {"holdout_rows": 500,
                 "sets": [{"path": str(CAR / "APE_score_valid.csv"), "format": "car_revised", "name": "gold"}]}})


def plan(work: str, steps: int) -> Any:
    """The ablation's steps that make the longest-1,000 chain, its evaluations and the comet IQS scores."""
    from flows.ablation import Arm, ablation_plan

    ablation = ablation_plan(config(work, steps), 1000, arms=[Arm(selector=name, seeds=1)
                                                              for name in ("longest", "random", "car")]).plan
    wanted = [s for s in ablation.steps if s.label.startswith(("evaluate[base model/", "evaluate[longest/0/"))
              or s.stage.name == "iqs" and s.params.scorer == "comet"]
    return ablation.needed_by(wanted)


def run_step(work: str, steps: int, label: str, force: bool) -> None:
    """In the child: build one step of the plan (its inputs are in the store)."""
    from storage.stage import run_stage

    planned = plan(work, steps)
    step = next(s for s in planned.steps if s.label == label)
    store = planned.store
    inputs = {name: store.ref(value if isinstance(value, str) else value.key) for name, value in step.inputs.items()}
    run_stage(step.stage, step.params, inputs, store, key=step.key, force=force, shard=step.shard,
              fingerprint=step.fingerprint)


def measured(work: str, steps: int, label: str, force: bool) -> tuple[float, float]:
    """(peak RSS MB of a fresh process building `label`, seconds)."""
    from storage.memory import rss_mb

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.memory", work, str(steps), label, str(int(force))],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb("VmHWM", proc.pid) or 0.0)
        time.sleep(0.2)
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{label} failed:\n{err[-3000:]}")
    return peak, time.perf_counter() - began


def run(args: argparse.Namespace) -> dict[str, Any]:
    from storage.stage import reusable

    if not ALPACA.is_file():
        raise SystemExit(f"benchmark data not found: {ALPACA} (the project's ../shared/data)")
    steps = plan(args.work, args.steps)
    comparisons, others = [], []
    for step in steps.steps:
        model = step.stage.name in MODEL_STAGES
        if reusable(step.stage, step.params, steps.store, step.key) and not (model and args.force):
            stats = steps.store.manifest(step.key).get("stats", {})
            others.append({"step": step.label, "status": "in the store",
                           "peak_rss_mb_in_process": stats.get("peak_rss_mb")})
            continue
        peak, seconds = measured(args.work, args.steps, step.label, args.force and model)
        row = {"name": step.label, "peak_rss_mb": round(peak), "seconds": round(seconds, 1),
               "bound_mb": BOUND_MB.get(step.stage.name, OTHER_BOUND_MB)}
        row["within"] = peak <= row["bound_mb"]
        stats = steps.store.manifest(step.key).get("stats", {})
        row.update({k: stats[k] for k in ("precision", "micro_batch_rows", "rows") if k in stats})
        (comparisons if model else others).append(row)
    return {"benchmark": "memory", "comparisons": comparisons, "options": others, "train_steps": args.steps,
            "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M")}


if __name__ == "__main__":  # the child: python -m benchmarks.memory WORK STEPS LABEL FORCE
    from flows.settings import configure_environment

    configure_environment()
    run_step(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
