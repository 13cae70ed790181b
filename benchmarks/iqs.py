"""IQS: rows/s of our scoring (sorted by token length, no Lightning Trainer) against COMET's stock
`model.predict` on the same model and rows (scores must agree within 1e-4); with --train, the validation
pairwise accuracy and wall time of the default training run on CaR's expert revisions (long on CPU).

Options: the faster CPU precisions (`iqs.precision` bf16 and int8), each with its largest score difference to
fp32 on the timed rows and, on CaR's 254 validation pairs, its pairwise accuracy and the pairs whose winner
differs from fp32's (a fast path is only as good as the ranking it keeps)."""
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
    out["options"] = _precisions(store.local_path(key, "files", "model"), texts, ours.scores, stock_s, args)
    return out


def _pair_winners(model, pairs, precision: str, batch_size: int):
    import numpy as np

    from tasks.iqs.score import score_texts

    scores = score_texts(model, [p.raw for p in pairs] + [p.revised for p in pairs], batch_size=batch_size,
                         precision=precision).scores
    return np.asarray(scores[len(pairs):] > scores[:len(pairs)])


def _precisions(folder, texts, exact, stock_s: float, args: argparse.Namespace) -> list[dict]:
    """bf16 and int8 against fp32 (the exact path): speed over COMET's stock predict, score drift, pair flips."""
    import numpy as np

    from tasks.iqs.revisions import read_pairs_csv
    from tasks.iqs.score import quantize_for_precision, score_texts
    from tasks.iqs.train import load_model

    pairs = read_pairs_csv(CAR / "APE_score_valid.csv")
    exact_wins = _pair_winners(load_model(folder), pairs, "fp32", args.batch_size)
    rows = [{"name": "fp32 (default on the CPU)", "pairwise_accuracy": round(float(exact_wins.mean()), 4)}]
    for precision in ("bf16", "int8"):
        model = quantize_for_precision(load_model(folder), precision)
        score_texts(model, texts[:64], batch_size=args.batch_size, precision=precision)  # warm-up
        began = time.perf_counter()
        fast = score_texts(model, texts, normalize=False, batch_size=args.batch_size, precision=precision)
        seconds = time.perf_counter() - began
        wins = _pair_winners(model, pairs, precision, args.batch_size)
        rows.append({"name": f"iqs.precision={precision}", "seconds": round(seconds, 2),
                     "rows_s": round(len(texts) / seconds, 1), "vs_stock_predict": round(stock_s / seconds, 2),
                     "max_abs_diff_to_fp32": round(float(np.max(np.abs(fast.scores - exact))), 5),
                     "pairwise_accuracy": round(float(wins.mean()), 4),
                     "pairs_flipped_vs_fp32": int((wins != exact_wins).sum())})
    return rows
