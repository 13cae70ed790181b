"""Scorers: every quality scorer's pairwise accuracy (raw and whitespace-normalized), Kendall tau and rows/s on
CaR's 254 validation pairs, in one run; the baseline of each row is the `length` scorer, measured in the same
run. probe is trained here on CaR's training pairs (an iqs.train run, about a minute); comet only with
--comet (16-20 min an epoch on 2 cores; --comet-batches for a shorter run); ifd with the bundled SmolLM2
through the base_model stage; judge only with --judge-url (an OpenAI-compatible endpoint, key in
$OPENAI_API_KEY or --judge-key-env) or --judge-local (the bundled SmolLM2-135M-Instruct as the judge, greedy);
combine blends probe and length by rank."""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAR = ROOT.parent / "shared" / "data" / "car"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--comet", action="store_true", help="also train and measure comet (long on CPU)")
    parser.add_argument("--comet-batches", type=int, help="comet: training batches per epoch (default: all)")
    parser.add_argument("--judge-url", help="OpenAI-compatible base URL for the judge (skipped without one)")
    parser.add_argument("--judge-model", default="gpt-4o-mini")
    parser.add_argument("--judge-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--judge-local", action="store_true",
                        help="judge with the bundled SmolLM2-135M-Instruct on this machine (the local backend)")
    parser.add_argument("--only", nargs="+", metavar="SCORER", help="measure only these scorers (length always)")


def _trained(store, scorer: str, settings: list[str]) -> str:
    from flows.config import load_config
    from flows.plan import run_alone
    from tasks.stages.iqs_train import STAGE

    config = load_config(None, [f"iqs.scorer={scorer}", f"iqs.revisions=[{CAR / 'APE_score_train.csv'}]",
                                f"iqs.validation_revisions=[{CAR / 'APE_score_valid.csv'}]", *settings])
    return run_alone(STAGE, config.iqs, {}, store).ref.key


def _configs(args: argparse.Namespace, store) -> dict[str, tuple[dict, str | None]]:
    """scorer label -> (its iqs config, the store key of its trained model)."""
    wanted = set(args.only or ["length", "random", "ifd", "probe", "combine", "comet", "judge"]) | {"length"}
    found: dict[str, tuple[dict, str | None]] = {"length": ({"scorer": "length"}, None)}
    if "random" in wanted:
        found["random"] = ({"scorer": "random"}, None)
    if "ifd" in wanted:
        found["ifd"] = ({"scorer": "ifd"}, None)
    if wanted & {"probe", "combine"}:
        probe = _trained(store, "probe", [])
        if "probe" in wanted:
            found["probe"] = ({"scorer": "probe"}, probe)
        if "combine" in wanted:
            found["combine (probe + length)"] = ({"scorer": "combine", "members": [
                {"scorer": "probe", "model": probe}, {"scorer": "length"}]}, None)
    if "comet" in wanted and args.comet:
        extra = [f"iqs.limit_train_batches={args.comet_batches}"] if args.comet_batches else []
        found["comet"] = ({"scorer": "comet"}, _trained(store, "comet", ["iqs.epochs=1", *extra]))
    if "judge" in wanted and args.judge_url:
        found["judge"] = ({"scorer": "judge", "base_url": args.judge_url, "model": args.judge_model,
                           "api_key_env": args.judge_key_env}, None)
    if "judge" in wanted and args.judge_local:
        from flows.plan import run_alone
        from tasks.stages import get
        from tasks.stages.base_model import BaseModelParams

        smollm = run_alone(get("base_model"), BaseModelParams(), {}, store).ref.key
        found["judge (local SmolLM2-135M)"] = ({"scorer": "judge", "backend": "local", "max_tokens": 8,
                                               "model": str(store.local_path(smollm, "files", "model")),
                                               "requests_budget": None}, None)
    return found


def run(args: argparse.Namespace) -> dict:
    from flows.cli.iqs import base_model_for
    from storage.store import Store
    from tasks import scorers
    from tasks.iqs.evaluate import evaluate_pairs
    from tasks.iqs.revisions import read_revisions, texts_table
    from tasks.iqs.training import model_info
    from tasks.scorers.base import ScorerInputs

    path = CAR / "APE_score_valid.csv"
    if not path.is_file():
        raise SystemExit(f"benchmark data not found: {path} (the project's ../shared/data)")
    store = Store(args.store)
    pairs, _ = read_revisions(path)
    rows: list[dict] = []
    for label, (data, model) in _configs(args, store).items():
        if model:
            data = {**model_info(store, model)["hyperparameters"], "model": model}
        params = scorers.parse_config(data)
        base_model = base_model_for(store, params)
        began = time.perf_counter()
        scoring = scorers.get(params.scorer).open(ScorerInputs(
            store, params, iqs_model=store.ref(model) if model else None,
            base_model=store.ref(base_model) if base_model else None))
        open_s = time.perf_counter() - began
        scored = {"rows": 0, "seconds": 0.0, "counts": Counter(), "ties": []}

        def score(texts: list[str], scoring=scoring, scored=scored):
            began = time.perf_counter()
            result = scoring.score(texts_table(texts))
            scored["seconds"] += time.perf_counter() - began
            scored["rows"] += len(texts)
            scored["counts"].update(result.counts)
            half = len(texts) // 2  # evaluate_pairs scores the raw texts, then their revisions, in one call
            scored["ties"].append(float(np.mean(result.values[:half] == result.values[half:])))
            return result.values

        result = evaluate_pairs(pairs, score)
        rows.append({"name": label, "pairwise_accuracy": round(result["pairwise_accuracy"], 4),
                     "pairwise_accuracy_normalized": round(result["pairwise_accuracy_normalized"], 4),
                     "kendall_tau": round(result["kendall_tau"], 4), "rows": scored["rows"],
                     "rows_per_s": round(scored["rows"] / scored["seconds"], 1), "ours_s": round(scored["seconds"], 2),
                     "open_s": round(open_s, 1), "model": scoring.model,
                     "tied_pairs": round(scored["ties"][0], 4),  # raw texts; a tie counts as a miss
                     **({"counts": dict(scored["counts"])} if scored["counts"] else {})})
    length_s = rows[0]["ours_s"]
    for row in rows:
        row["baseline_s"] = length_s  # the length scorer's time, the cheapest honest baseline
    skipped = [name for name, why in (("comet", not args.comet), ("judge", not (args.judge_url or args.judge_local)))
               if why]
    return {"benchmark": "scorers", "pairs": len(pairs), "comparisons": rows,
            "options": {"comet": args.comet, "comet_batches": args.comet_batches, "judge_url": args.judge_url,
                        "judge_local": args.judge_local, "only": args.only},
            "skipped": {name: "needs --comet" if name == "comet" else "needs --judge-url or --judge-local"
                        for name in skipped}}
