"""`sftflow iqs train | eval | score`: the Instruction Quality Scorer on its own (the pipeline runs it too)."""
from __future__ import annotations

import argparse
import json
import sys

from flows.cli.output import emit, format_table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("iqs", help="train, evaluate and apply the Instruction Quality Scorer (CaR)")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="train an IQS model on expert revisions; prints validation metrics")
    train.add_argument("config", nargs="?", help="pipeline YAML whose iqs section to use")
    train.add_argument("--revisions", nargs="+", metavar="PATH", help="revision files (JSON/JSONL records or "
                       "src,score CSV pairs); overrides iqs.revisions")
    train.add_argument("--validation", nargs="+", metavar="PATH", help="validation pairs (iqs.validation_revisions)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="an iqs setting, e.g. --set epochs=1 (repeatable; the iqs. prefix is optional)")
    train.add_argument("--force", action="store_true", help="train again even if the store has this model")
    train.add_argument("--json", action="store_true")

    ev = verbs.add_parser("eval", help="pairwise accuracy on (raw, revised) pairs beside the baselines")
    ev.add_argument("--model", required=True, metavar="REF", help="store key of an iqs.train model")
    ev.add_argument("--pairs", required=True, metavar="CSV", help="CaR src,score pairs (or revision records)")
    ev.add_argument("--scorer", choices=["comet", "probe"], help="default: the model's own scorer")
    ev.add_argument("--json", action="store_true")

    score = verbs.add_parser("score", help="score a conversation dataset of the store")
    score.add_argument("dataset", metavar="DATASET", help="store key of a conversation table (ingest output)")
    score.add_argument("--model", required=True, metavar="REF", help="store key of an iqs.train model")
    score.add_argument("--scorer", choices=["comet", "probe"], help="default: the model's own scorer")
    score.add_argument("--embeddings", metavar="KEY", help="embed stage output to reuse (probe scorer)")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from storage.store import Store

    store = Store(args.store)
    return {"train": _train, "eval": _eval, "score": _score}[args.verb](args, store)


def _train(args: argparse.Namespace, store) -> int:
    from flows.config import load_config
    from storage.stage import run_stage
    from tasks.iqs import TRAIN_STAGE

    overrides = [o if o.startswith("iqs.") else f"iqs.{o}" for o in args.overrides]
    config = load_config(args.config, overrides)
    updates = {}
    if args.revisions:
        updates["revisions"] = [str(p) for p in args.revisions]
    if args.validation:
        updates["validation_revisions"] = [str(p) for p in args.validation]
    params = config.iqs.model_copy(update=updates)
    result = run_stage(TRAIN_STAGE, params, {}, store, force=args.force)
    metrics = json.loads(store.read_file(result.ref.key, "metrics.json"))
    out = {"model": result.ref.key, "status": result.status, "seconds": round(result.seconds, 1),
           "scorer": metrics["scorer"], "metrics": metrics["validation"], "training": metrics["training"],
           "data": metrics["data"]}
    emit(out, args.json, _comparison_text(metrics["validation"], metrics["scorer"]) +
         f"\nmodel: {result.ref.key} ({result.status}, {result.seconds:.0f}s)")
    return 0


def _eval(args: argparse.Namespace, store) -> int:
    from tasks.iqs.evaluate import evaluate_pairs
    from tasks.iqs.probe import Probe
    from tasks.iqs.revisions import read_revisions
    from tasks.iqs.stages import load_scorer, model_info, probe_scorer

    info = model_info(store, args.model)
    scorer_name = args.scorer or info["scorer"]
    pairs, _ = read_revisions(args.pairs)
    probe = probe_scorer(Probe.from_json(store.read_file(args.model, "probe.json")))
    result = evaluate_pairs(pairs, load_scorer(store, args.model, scorer_name), probe,
                            scorer_normalizes=info["normalize_whitespace"] or scorer_name == "probe")
    out = {"model": args.model, "scorer": scorer_name, **result}
    emit(out, args.json, _comparison_text(result, scorer_name) +
         f"\nkendall_tau={result['kendall_tau']:.4f}\npairwise_accuracy={result['pairwise_accuracy']:.4f}")
    return 0


def _score(args: argparse.Namespace, store) -> int:
    from flows.config import IQSConfig
    from storage.stage import run_stage
    from tasks.iqs import SCORE_STAGE
    from tasks.iqs.stages import model_info

    info = model_info(store, args.model)
    params = IQSConfig.model_validate({**info["hyperparameters"], "model": args.model,
                                       "scorer": args.scorer or info["scorer"], "batch_size": args.batch_size})
    inputs = {"conversations": store.ref(args.dataset), "model": store.ref(args.model)}
    if args.embeddings:
        inputs["embeddings"] = store.ref(args.embeddings)
    result = run_stage(SCORE_STAGE, params, inputs, store)
    top = store.read_table(result.ref.key).sort_by("iqs_rank").slice(0, 5).to_pylist()
    out = {"key": result.ref.key, "status": result.status, "rows": result.ref.rows,
           "seconds": round(result.seconds, 1), "stats": result.stats, "top": top}
    emit(out, args.json, format_table(top, ["iqs_rank", "iqs_score", "id"]) +
         f"\n{result.ref.rows:,} rows scored -> {result.ref.key} ({result.status}, {result.seconds:.0f}s)")
    print(f"truncated texts: {result.stats.get('truncated', 0)}", file=sys.stderr)
    return 0


def _comparison_text(result: dict, scorer_name: str) -> str:
    from tasks.iqs.evaluate import comparison_rows

    return (f"{result['pairs']} pairs, pairwise accuracy (raw / whitespace-normalized):\n" +
            format_table(comparison_rows(result, scorer_name), ["scorer", "raw", "normalized"]))
