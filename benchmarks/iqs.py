"""IQS: rows/s of our scoring (sorted by token length, no Lightning Trainer) against COMET's stock
`model.predict` on the same model and rows (scores must agree within 1e-4); with --train, the validation
pairwise accuracy and wall time of the default training run on CaR's expert revisions (long on CPU)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAR = ROOT.parent / "shared" / "data" / "car"
TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1000, help="rows to score")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="store key of a comet iqs.train model; default: train a tiny one first")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--train", action="store_true",
                        help="also run the default training on CaR's 2,032 pairs (16-20 min an epoch on 2 cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="iqs settings for --train")


def _texts(n: int) -> list[str]:
    import csv

    from tasks.iqs.revisions import normalize_whitespace

    path = CAR / "APE_score_train.csv"
    if not path.is_file():
        raise SystemExit(f"benchmark data not found: {path} (the project's ../shared/data)")
    with path.open(newline="") as fh:
        rows = [normalize_whitespace(r["src"]) for r in csv.DictReader(fh)]
    return (rows * (n // len(rows) + 1))[:n]


def _train(store, overrides: list[str], tiny: bool):
    from flows.config import load_config
    from storage.stage import run_stage
    from tasks.stages.iqs_train import STAGE as TRAIN_STAGE

    settings = [f"iqs.revisions=[{CAR / 'APE_score_train.csv'}]",
                f"iqs.validation_revisions=[{CAR / 'APE_score_valid.csv'}]"]
    if tiny:  # just a model to time scoring with
        settings += ["iqs.limit_train_batches=8", "iqs.epochs=1", "iqs.hidden_sizes=[64]"]
    config = load_config(None, settings + [o if o.startswith("iqs.") else f"iqs.{o}" for o in overrides])
    began = time.perf_counter()
    result = run_stage(TRAIN_STAGE, config.iqs, {}, store)
    return result, time.perf_counter() - began


def run(args: argparse.Namespace) -> dict:
    import json

    import numpy as np

    from storage.store import Store
    from tasks.iqs.score import score_texts
    from tasks.iqs.train import load_model

    store = Store(args.store)
    out: dict = {"benchmark": "iqs", "rows": args.rows}
    if args.train:
        result, seconds = _train(store, args.overrides, tiny=False)
        metrics = json.loads(store.read_file(result.ref.key, "metrics.json"))
        out["training"] = {"model": result.ref.key, "status": result.status, "wall_s": round(seconds, 1),
                           **{k: v for k, v in metrics["validation"].items()},
                           "history": metrics["training"].get("history")}
    key = args.model or (out.get("training", {}).get("model")) or _train(store, [], tiny=True)[0].ref.key
    model = load_model(store.local_path(key, "files", "model"))
    texts = _texts(args.rows)
    score_texts(model, texts[:64], batch_size=args.batch_size)  # warm-up for both

    began = time.perf_counter()
    ours = score_texts(model, texts, normalize=False, batch_size=args.batch_size)
    ours_s = time.perf_counter() - began
    began = time.perf_counter()
    stock = model.predict([{"src": t} for t in texts], batch_size=args.batch_size, gpus=0, progress_bar=False)
    stock_s = time.perf_counter() - began
    diff = float(np.max(np.abs(ours.scores - np.asarray(stock.scores, np.float32))))
    if diff > TOLERANCE:
        raise AssertionError(f"our scores differ from comet's model.predict by {diff} (> {TOLERANCE})")
    out["comparisons"] = [{"name": f"score {args.rows} rows (model {key})", "ours_s": round(ours_s, 2),
                           "baseline_s": round(stock_s, 2), "ours_rows_s": round(args.rows / ours_s, 1),
                           "baseline_rows_s": round(args.rows / stock_s, 1), "max_abs_diff": diff,
                           "truncated": ours.truncated}]
    return out
