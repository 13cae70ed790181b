"""IQS: rows/s of the comet scorer's default path (sorted by token length, no Lightning Trainer, `iqs.precision:
auto`: bf16 autocast where the CPU or GPU has bf16 units) against COMET's stock `model.predict` on the same model
and rows, with what the precision does to the ranking beside the speed: pairwise accuracy on CaR's 254
validation pairs and Kendall tau of the scores to the exact fp32 path's (the gate: accuracy within 0.5 points
and tau >= 0.99). Options: every precision with its drift from fp32 (fp32 itself must equal stock predict within
1e-4). With --train: the default training run on CaR's expert revisions at each training precision, its time
per epoch and validation accuracy (long on CPU)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAR = ROOT.parent / "shared" / "data" / "car"
TOLERANCE = 1e-4
GATE_POINTS, GATE_TAU = 0.5, 0.99


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1000, help="rows to score")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="store key of a comet iqs.train model; default: train a tiny one first")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--train", action="store_true",
                        help="also run the default training on CaR's 2,032 pairs at each --train-precisions")
    parser.add_argument("--train-precisions", default="fp32,auto", help="iqs.train_precision values for --train")
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
    from flows.plan import run_alone
    from tasks.stages.iqs_train import STAGE as TRAIN_STAGE

    settings = [f"iqs.revisions=[{CAR / 'APE_score_train.csv'}]",
                f"iqs.validation_revisions=[{CAR / 'APE_score_valid.csv'}]"]
    if tiny:  # just a model to time scoring with
        settings += ["iqs.limit_train_batches=8", "iqs.epochs=1", "iqs.hidden_sizes=[64]"]
    config = load_config(None, settings + [o if o.startswith("iqs.") else f"iqs.{o}" for o in overrides])
    began = time.perf_counter()
    result = run_alone(TRAIN_STAGE, config.iqs, {}, store)
    return result, time.perf_counter() - began


def _training_runs(store, args: argparse.Namespace) -> list[dict]:
    import json

    runs = []
    for precision in args.train_precisions.split(","):
        result, seconds = _train(store, [*args.overrides, f"iqs.train_precision={precision}"], tiny=False)
        metrics = json.loads(store.read_file(result.ref.key, "metrics.json"))
        training = metrics["training"]
        runs.append({"train_precision": precision, "resolved": training.get("precision"), "model": result.ref.key,
                     "status": result.status, "wall_s": round(seconds, 1), "epochs": training.get("epochs_run"),
                     "seconds_per_epoch": training.get("seconds_per_epoch"),
                     "pairwise_accuracy": metrics["validation"].get("pairwise_accuracy"),
                     "kendall_tau": metrics["validation"].get("kendall_tau"), "history": training.get("history")})
    return runs


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from storage.store import Store
    from tasks.iqs.comet_model import load_model
    from tasks.iqs.score import scoring_precision
    from tasks.scorers.comet import AUTO_BF16

    store = Store(args.store)
    out: dict = {"benchmark": "iqs", "rows": args.rows, "load_average": os.getloadavg(),
                 "when": time.strftime("%Y-%m-%d %H:%M")}
    if args.train:
        out["training"] = _training_runs(store, args)
    key = args.model or (out["training"][-1]["model"] if args.train else _train(store, [], tiny=True)[0].ref.key)
    folder = store.local_path(key, "files", "model")
    texts = _texts(args.rows)
    model = load_model(folder)
    stock_s = float("inf")
    for _ in range(2):  # the better of two: warm-up inside the first
        began = time.perf_counter()
        stock = model.predict([{"src": t} for t in texts], batch_size=args.batch_size, gpus=0, progress_bar=False)
        stock_s = min(stock_s, time.perf_counter() - began)
    stock_scores = np.asarray(stock.scores, np.float32)
    measured = {name: _measure(folder, texts, scoring_precision(name, AUTO_BF16), args.batch_size)
                for name in ("fp32", "bf16", "int8")}
    exact = measured["fp32"]
    diff = float(np.max(np.abs(exact["scores"] - stock_scores)))
    if diff > TOLERANCE:
        raise AssertionError(f"our fp32 scores differ from comet's model.predict by {diff} (> {TOLERANCE})")
    rows = {name: _row(name, m, exact, stock_s, len(texts)) for name, m in measured.items()}
    default = scoring_precision("auto", AUTO_BF16)
    ours = rows[default.name]
    out["comparisons"] = [{"name": f"score {args.rows} rows, iqs.precision auto = {default.name} ({default.reason}) "
                                   f"vs stock model.predict (model {key})",
                           "ours_s": ours["seconds"], "baseline_s": round(stock_s, 2), "ours_rows_s": ours["rows_s"],
                           "baseline_rows_s": round(len(texts) / stock_s, 1),
                           **{k: v for k, v in ours.items() if k not in ("name", "seconds", "rows_s")},
                           "fp32_max_abs_diff_to_stock": diff}]
    out["options"] = [row for name, row in rows.items() if name != default.name]
    return out


def _measure(folder, texts: list[str], precision, batch_size: int) -> dict:
    """Scores of the timed rows (the better of two passes) and of the validation pairs at one precision."""
    from tasks.iqs.comet_model import load_model
    from tasks.iqs.revisions import read_pairs_csv
    from tasks.iqs.score import ready_for, score_texts

    model = ready_for(load_model(folder), precision)
    score_texts(model, texts[:64], batch_size=batch_size, precision=precision)  # warm-up
    seconds = float("inf")
    for _ in range(2):
        began = time.perf_counter()
        scores = score_texts(model, texts, normalize=False, batch_size=batch_size, precision=precision).scores
        seconds = min(seconds, time.perf_counter() - began)
    pairs = read_pairs_csv(CAR / "APE_score_valid.csv")
    pair_scores = score_texts(model, [p.raw for p in pairs] + [p.revised for p in pairs], batch_size=batch_size,
                              precision=precision).scores
    return {"seconds": seconds, "scores": scores, "pair_scores": pair_scores, "pairs": len(pairs)}


def _row(name: str, m: dict, exact: dict, stock_s: float, n: int) -> dict:
    import numpy as np
    from scipy.stats import kendalltau

    half = m["pairs"]
    wins = m["pair_scores"][half:] > m["pair_scores"][:half]
    exact_wins = exact["pair_scores"][half:] > exact["pair_scores"][:half]
    accuracy = float(wins.mean())
    tau = float(kendalltau(np.concatenate([m["scores"], m["pair_scores"]]),
                           np.concatenate([exact["scores"], exact["pair_scores"]])).statistic)
    points = 100 * (accuracy - float(exact_wins.mean()))
    held = abs(points) <= GATE_POINTS and tau >= GATE_TAU
    return {"name": f"iqs.precision={name}", "seconds": round(m["seconds"], 2), "rows_s": round(n / m["seconds"], 1),
            "vs_stock_predict": round(stock_s / m["seconds"], 2),
            "max_abs_diff_to_fp32": round(float(np.max(np.abs(m["scores"] - exact["scores"]))), 5),
            "pairwise_accuracy": round(accuracy, 4), "accuracy_points_vs_fp32": round(points, 2),
            "pairs_flipped_vs_fp32": int((wins != exact_wins).sum()), "kendall_tau_to_fp32": round(tau, 5),
            "gate": "held" if held else "MISSED"}
