"""The pipeline at CaR's scale: Alpaca-52k through `select`, with the probe and the comet scorer, at several sizes.

Every stage runs in a fresh process (`--step`), so each has its own wall time, rows/s and peak RSS; finished
stages come back from the store, so an interrupted run resumes (their timings are kept in `timings.json` next
to the store). Per stage the growth exponent b of time ∝ n^b is fitted over the sizes, to predict larger runs,
on wall time and on CPU time (on a shared machine the load changes wall time most).
The selection is compared with CaR's published one: rows in common (by the normalized content id; comparable
with CaR's at the full 52,002 rows, n1=1000, n2=1), Spearman of our score with CaR's on the CaR rows the pool
holds (at every size), clusters covered by the top n1.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ALPACA = DATA / "alpaca" / "alpaca_data_52k.json.gz"
CAR = DATA / "car"
FULL = 52_002
RESULTS = ROOT / "benchmarks" / "results" / "pipeline_scale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000,4000,16000,52002", help="pool sizes (a seeded sample of Alpaca)")
    parser.add_argument("--scorers", default="probe,comet", help="iqs scorers to run, in this order")
    parser.add_argument("--folder", type=Path, default=RESULTS, help="store, samples and timings (kept: resumes)")
    parser.add_argument("--comet-epochs", type=int, default=1, help="epochs of the COMET IQS model (CaR's data)")
    parser.add_argument("--step", nargs=2, metavar=("CONFIG", "LABEL"), help=argparse.SUPPRESS)


# -- one step, in its own process ---------------------------------------------------------------------------
def run_step(config_path: str, label: str) -> None:
    """Run one step of the plan (its inputs are in the store already); print its result as JSON."""
    from flows.config import load_config
    from flows.plan import pipeline_plan
    from storage.stage import run_stage
    from storage.store import Store

    config = load_config(config_path)
    store = Store(config.store)
    step = next(s for s in pipeline_plan(config, store).until("select").steps if s.label == label)
    inputs = {name: store.ref(v.key if hasattr(v, "key") else v) for name, v in step.inputs.items()}
    result = run_stage(step.stage, step.params, inputs, store, key=step.key, shard=step.shard)
    print(json.dumps({"status": result.status, "key": result.ref.key, "rows_in": result.rows_in,
                      "rows_out": result.ref.rows}))


def measured(config: Path, label: str) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of one step in a fresh process (os.wait4 gives that child's own rusage);
    CPU time is what a loaded shared machine distorts least."""
    import tempfile

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "pipeline_scale", "--step", str(config), label],
                                cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"step {label} failed: {err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    return {**result, "seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_mb": round(usage.ru_maxrss / 1024)}


# -- the runs -------------------------------------------------------------------------------------------------
def alpaca_rows() -> list[dict[str, str]]:
    with gzip.open(ALPACA, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def sample(folder: Path, n: int) -> Path:
    """The first n rows of a seeded permutation of Alpaca (the whole file at 52,002): sizes nest."""
    if n >= FULL:
        return ALPACA
    path = folder / "samples" / f"alpaca_{n}.json"
    if not path.exists():
        rows = alpaca_rows()
        order = np.random.default_rng(0).permutation(len(rows))[:n]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([rows[i] for i in sorted(order)], ensure_ascii=False))
    return path


def write_config(folder: Path, n: int, scorer: str, comet_epochs: int) -> Path:
    iqs: dict[str, Any] = {"scorer": scorer, "revisions": [str(CAR / "APE_score_train.csv")],
                           "validation_revisions": [str(CAR / "APE_score_valid.csv")]}
    if scorer == "comet":
        iqs["epochs"] = comet_epochs
    n1 = 1000 if n >= FULL else max(1, round(n * 1000 / FULL))
    config = {"name": f"alpaca-{n}", "store": str(folder / "store"), "ingest": {"sources": [str(sample(folder, n))]},
              "iqs": iqs, "select": {"n1": n1, "n2": 1}}
    path = folder / "configs" / f"{scorer}_{n}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def run_pipeline(config: Path, timings: dict[str, Any], record: Path) -> list[dict[str, Any]]:
    """Every step up to select, each measured once (a step measured before is not run again)."""
    from flows.config import load_config
    from flows.plan import pipeline_plan
    from storage.store import Store

    cfg = load_config(config)
    rows = []
    for step in pipeline_plan(cfg, Store(cfg.store)).until("select").steps:
        if step.key not in timings:
            print(f"{config.stem}: {step.label} ...", file=sys.stderr, flush=True)
            timings[step.key] = {"stage": step.stage.name, "label": step.label, **measured(config, step.label),
                                 "load_before": os.getloadavg()[0]}
            record.write_text(json.dumps(timings, indent=1))
        rows.append(timings[step.key])
    return rows


def growth(points: list[tuple[int, float]]) -> float | None:
    """b of time = a * n^b by least squares on log-log (None with fewer than two sizes)."""
    points = [(n, t) for n, t in points if t > 0]
    if len({n for n, _ in points}) < 2:
        return None
    x, y = np.log([n for n, _ in points]), np.log([t for _, t in points])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def fidelity(config: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Our selection and scores against CaR's published ones (CaR_selected_result.json)."""
    from scipy.stats import spearmanr

    from flows.config import load_config
    from storage.schema import record_id
    from storage.store import Store
    from tasks.text import alpaca_user_content

    store = Store(load_config(config).store)
    key = {row["stage"]: row["key"] for row in steps}
    car = json.loads((CAR / "CaR_selected_result.json").read_text())
    car_ids = [record_id(None, [{"role": "user", "content": alpaca_user_content(r["instruction"], r["input"])},
                                {"role": "assistant", "content": r["output"]}]) for r in car]
    ours = set(store.read_table(key["select"], ["id"]).column("id").to_pylist())
    scored = store.read_table(key["iqs"], ["id", "iqs_score"]).to_pylist()
    score = {r["id"]: r["iqs_score"] for r in scored}
    paired = [(score[i], r["score"]) for i, r in zip(car_ids, car) if i in score]
    summary = store.manifest(key["select"])["stats"]
    dedup = store.manifest(key["dedup"])["stats"] if "dedup" in key else {}
    kept = set(store.read_table(key["dedup"], ["id"]).column("id").to_pylist()) if "dedup" in key else None
    return {"car_rows": len(car), "car_rows_in_our_pool": len(paired),
            "car_rows_dedup_removed": sum(i not in kept for i in car_ids if i in score) if kept else 0,
            "car_rows_we_select": sum(i in ours for i in car_ids), "selected": len(ours),
            "spearman_with_car_score": round(float(spearmanr([a for a, _ in paired], [b for _, b in paired])[0]), 4),
            "clusters_covered_by_top": summary["clusters_covered_by_top"], "clusters": summary["clusters"],
            "car_clusters_covered_by_top": "148 of 161", "dedup_removed": dedup.get("removed")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.step:
        run_step(*args.step)
        sys.exit(0)
    if not ALPACA.exists():
        raise SystemExit(f"Alpaca-52k not found at {ALPACA} (the project's ../shared/data)")
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "timings.json"
    timings = json.loads(record.read_text()) if record.exists() else {}
    sizes = [int(n) for n in args.sizes.split(",")]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    out: dict[str, Any] = {"benchmark": "pipeline_scale", "comparisons": [], "machine": f"{os.cpu_count()} cores"}
    for scorer in args.scorers.split(","):
        for n in sizes:
            config = write_config(folder, n, scorer, args.comet_epochs)
            runs.setdefault(scorer, {})[n] = run_pipeline(config, timings, record)
            # at every size: Spearman on the CaR rows the sample holds; rows selected in common only mean
            # CaR's figure at the full 52,002 (n1=1000, n2=1)
            out.setdefault(f"fidelity_{scorer}", {})[n] = fidelity(config, runs[scorer][n])
    table = []
    for scorer, by_size in runs.items():
        stages = list(dict.fromkeys(row["label"] for rows in by_size.values() for row in rows))
        for stage in stages:
            ran = [(n, row) for n, rows in by_size.items() for row in rows
                   if row["label"] == stage and row["status"] == "ran"]
            for n, rows in by_size.items():
                row = next((r for r in rows if r["label"] == stage), None)
                if row is not None:
                    table.append({"scorer": scorer, "stage": stage, "n": n, "seconds": row["seconds"],
                                  "cpu_seconds": row.get("cpu_seconds"), "load_before": row.get("load_before"),
                                  "rows_per_s": round(n / row["seconds"], 1) if row["seconds"] else None,
                                  "peak_mb": row["peak_mb"], "status": row["status"]})
            out.setdefault("growth_exponents", {}).setdefault(scorer, {})[stage] = growth(
                [(n, row["seconds"]) for n, row in ran])
            out.setdefault("growth_exponents_cpu", {}).setdefault(scorer, {})[stage] = growth(
                [(n, row["cpu_seconds"]) for n, row in ran if row.get("cpu_seconds") is not None])
    out["stages"] = table
    return out
