"""`sftflow iqs train | eval | score`: the Instruction Quality Scorer on its own (the pipeline runs it too)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    ev.add_argument("--model", metavar="REF", help="store key of an iqs.train model (scorers that train)")
    ev.add_argument("--pairs", required=True, metavar="CSV", help="CaR src,score pairs (or revision records)")
    ev.add_argument("--scorer", choices=scorer_names(), help="default: the model's own scorer")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the scorer, e.g. --set drop_above=null (repeatable; iqs. prefix optional)")
    ev.add_argument("--json", action="store_true")

    score = verbs.add_parser("score", help="score a conversation dataset of the store")
    score.add_argument("dataset", metavar="DATASET", help="store key of a conversation table (ingest output)")
    score.add_argument("--model", metavar="REF", help="store key of an iqs.train model (scorers that train)")
    score.add_argument("--scorer", choices=scorer_names(), help="default: the model's own scorer")
    score.add_argument("--embeddings", metavar="KEY", help="embed stage output to reuse (probe scorer)")
    score.add_argument("--batch-size", type=int, help="rows per batch (default: the scorer's own)")
    score.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a setting of the scorer (repeatable; iqs. prefix optional)")
    score.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def scorer_names() -> list[str]:
    from tasks import scorers

    return list(scorers.registered())


def handle(args: argparse.Namespace) -> int:
    from storage.store import Store

    store = Store(args.store)
    return {"train": _train, "eval": _eval, "score": _score}[args.verb](args, store)


def _train(args: argparse.Namespace, store) -> int:
    from flows.config import load_config
    from flows.plan import run_alone
    from tasks.stages import get

    overrides = [o if o.startswith("iqs.") else f"iqs.{o}" for o in args.overrides]
    for name, paths in (("revisions", args.revisions), ("validation_revisions", args.validation)):
        if paths:
            overrides.append(f"iqs.{name}={json.dumps([str(Path(p).resolve()) for p in paths])}")
    params = load_config(args.config, overrides).iqs
    result = run_alone(get("iqs.train"), params, {}, store, force=args.force)
    metrics = json.loads(store.read_file(result.ref.key, "metrics.json"))
    out = {"model": result.ref.key, "status": result.status, "seconds": round(result.seconds, 1),
           "scorer": metrics["scorer"], "metrics": metrics["validation"], "training": metrics["training"],
           "data": metrics["data"]}
    emit(out, args.json, _comparison_text(metrics["validation"], metrics["scorer"]) +
         f"\nmodel: {result.ref.key} ({result.status}, {result.seconds:.0f}s)")
    return 0


def scorer_params(store, scorer: str | None, model: str | None, overrides: list[str], **updates) -> object:
    """The iqs section a scorer runs with: a trained model's own (from its model.json), else the defaults;
    then the `--set` overrides."""
    from flows.config import apply_overrides
    from tasks import scorers
    from tasks.errors import BadInputError
    from tasks.iqs.training import model_info

    if scorer is None and model is None:
        raise BadInputError("give --scorer NAME, or --model KEY of a trained IQS model", field="--scorer")
    data = model_info(store, model)["hyperparameters"] if model else {}
    data = {**data, **({"scorer": scorer} if scorer else {}), **updates}
    data = apply_overrides(data, [o.removeprefix("iqs.") for o in overrides])
    if model:
        data["model"] = model
    params = scorers.parse_config(data)
    if scorers.get(params.scorer).train is not None and not model:
        raise BadInputError(f"the {params.scorer} scorer is trained: give --model KEY (an iqs.train model)",
                            field="--model")
    return params


def base_model_for(store, params) -> str | None:
    """The base_model stage's key when the scorer reads a causal LM from it (ifd): converted here, once."""
    from flows.plan import run_alone
    from tasks import scorers
    from tasks.stages import get
    from tasks.stages.base_model import BaseModelParams

    if "base_model" not in scorers.get(params.scorer).inputs(params):
        return None
    return run_alone(get("base_model"), BaseModelParams(), {}, store).ref.key


def _eval(args: argparse.Namespace, store) -> int:
    from flows.secrets import secrets_in_env
    from tasks import scorers
    from tasks.iqs.evaluate import evaluate_pairs
    from tasks.iqs.revisions import read_revisions, texts_table
    from tasks.iqs.training import probe_texts, stored_probe
    from tasks.scorers.base import ScorerInputs

    params = scorer_params(store, args.scorer, args.model, args.overrides)
    model = store.ref(args.model) if args.model else None
    base_model = base_model_for(store, params)
    pairs, _ = read_revisions(args.pairs)
    has_probe = model is not None and any(f["name"] == "files/probe.json" for f in store.manifest(model.key)["files"])
    probe = probe_texts(stored_probe(store, model.key)) if has_probe else None
    with secrets_in_env(params):  # the judge's API key
        scorer = scorers.get(params.scorer)
        scoring = scorer.open(ScorerInputs(store, params, iqs_model=model, base_model=(
            store.ref(base_model) if base_model else None), precision=scorer.precision_use().resolve(params)))
        result = evaluate_pairs(pairs, lambda texts: scoring.score(texts_table(texts)).values, probe)
    out = {"model": args.model, "scorer": params.scorer, "scorer_model": scoring.model, **result}
    emit(out, args.json, _comparison_text(result, params.scorer) +
         f"\nkendall_tau={result['kendall_tau']:.4f}\npairwise_accuracy={result['pairwise_accuracy']:.4f}")
    return 0


def _score(args: argparse.Namespace, store) -> int:
    from flows.cli.stage import run
    from tasks.stages import get

    params = scorer_params(store, args.scorer, args.model, args.overrides,
                           **({"batch_size": args.batch_size} if args.batch_size else {}))
    inputs = {"conversations": args.dataset}
    if args.model:
        inputs["iqs_model"] = args.model
    if args.embeddings:
        inputs["embeddings"] = args.embeddings
    if base_model := base_model_for(store, params):
        inputs["base_model"] = base_model
    result = run(get("iqs"), params, inputs, store)
    top = store.read_table(result["key"]).sort_by("iqs_rank").slice(0, 5).to_pylist()
    out = {**result, "rows": result["rows_out"], "top": top}
    emit(out, args.json, format_table(top, ["iqs_rank", "iqs_score", "id"]) +
         f"\n{result['rows_out']:,} rows scored -> {result['key']} ({result['status']}, {result['seconds']:.0f}s)")
    print(f"truncated texts: {result['stats'].get('truncated', 0)}", file=sys.stderr)
    return 0


def _comparison_text(result: dict, scorer_name: str) -> str:
    from tasks.iqs.evaluate import comparison_rows

    return (f"{result['pairs']} pairs, pairwise accuracy (raw / whitespace-normalized):\n" +
            format_table(comparison_rows(result, scorer_name), ["scorer", "raw", "normalized"]))
