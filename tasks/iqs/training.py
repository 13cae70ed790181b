"""Training an IQS model on expert revisions (the `iqs.train` build of the comet and probe scorers).

A model artifact's files:
    model/          the COMET checkpoint directory (scorer comet only; see tasks/iqs/comet_model.py)
    probe.json      the MiniLM logistic-regression probe on `probe_feature` (always: it is also the baseline to beat)
    model.json      scorer, data key, hyperparameters, whitespace normalization
    metrics.json    validation pairs: pairwise accuracy, Kendall tau, baselines; training history
The training pairs are published beside it as the companion dataset `<key>-data` (src, score, split, pair).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from storage.stage import StageContext, StageOutput, companion_key
from storage.store import Store
from tasks.errors import BadInputError
from tasks.iqs import hub
from tasks.iqs.evaluate import comparison_rows, evaluate_pairs
from tasks.iqs.probe import Probe, encode, fit_probe
from tasks.iqs.report import markdown_table, training_curve_png
from tasks.iqs.revisions import RevisionPair, load_pairs, regression_rows, split_pairs


def prepare_pairs(params: Any) -> tuple[list[RevisionPair], list[RevisionPair], dict[str, int]]:
    if not params.revisions:
        raise BadInputError("no revision files: set iqs.revisions (or iqs.model to a trained model)",
                            field="iqs.revisions")
    pairs, stats = load_pairs(params.revisions, params.min_distance, params.filter_prepared_pairs)
    if params.validation_revisions:
        valid, vstats = load_pairs(params.validation_revisions, params.min_distance, params.filter_prepared_pairs)
        stats.update({f"validation_{k}": v for k, v in vstats.items()})
        return pairs, valid, stats
    train, valid = split_pairs(pairs, params.valid_fraction, params.seed)
    if not train or not valid:
        raise BadInputError(f"{len(pairs)} revision pair(s) are too few to hold out a validation share of "
                            f"{params.valid_fraction}: add pairs or name iqs.validation_revisions",
                            field="iqs.revisions")
    return train, valid, stats


def data_table(train: list[RevisionPair], valid: list[RevisionPair], normalize: bool) -> pa.Table:
    parts = []
    for split, pairs in (("train", train), ("valid", valid)):
        rows = regression_rows(pairs, normalize)
        parts.append(rows.append_column("split", pa.array([split] * rows.num_rows))
                     .append_column("pair", pa.array(np.repeat(np.arange(len(pairs)), 2)))
                     .append_column("origin", pa.array([p.origin for p in pairs for _ in (0, 1)])))
    return pa.concat_tables(parts)


def train_on_revisions(ctx: StageContext, fit_model: Any = None) -> StageOutput:
    """Fit the probe (always) and, given `fit_model(train_rows, valid_rows, ctx) -> (score_fn, files, training)`,
    a model of the scorer's own; validate on the held-out pairs beside the baselines."""
    p = ctx.params  # a RevisionTrained scorer config (tasks/scorers/trained.py)
    if hub.is_hub_model(p.model):
        raise BadInputError(f"iqs.model {p.model} is a COMET checkpoint: the {p.scorer} scorer cannot use it "
                            "(iqs.scorer: comet can)", field="iqs.model")
    train_pairs, valid_pairs, stats = prepare_pairs(p)
    data = data_table(train_pairs, valid_pairs, p.normalize_whitespace)
    train_rows = regression_rows(train_pairs, p.normalize_whitespace)
    valid_rows = regression_rows(valid_pairs, p.normalize_whitespace)
    ctx.log.info("iqs.train: embedding %d training rows for the probe", train_rows.num_rows)
    probe = fit_probe(encode(train_rows.column("src").to_pylist(), p.probe_feature),
                      train_rows.column("score").to_numpy(), p.probe_feature, p.probe_c)
    files: dict[str, Any] = {"probe.json": probe.to_json()}
    training: dict[str, Any] = {}
    scorer = probe_texts(probe)
    if fit_model is not None:
        scorer, model_files, training = fit_model(train_rows, valid_rows, ctx)
        files.update(model_files)
    validation = evaluate_pairs(valid_pairs, scorer, probe_texts(probe),
                                scorer_normalizes=p.normalize_whitespace or fit_model is None)
    metrics = {"scorer": p.scorer, "validation": validation, "training": training, "data": stats}
    files["metrics.json"] = json.dumps(metrics, indent=2)
    files["model.json"] = json.dumps({
        "scorer": p.scorer, "data_key": companion_key(ctx.key, "data"),
        "normalize_whitespace": p.normalize_whitespace, "hyperparameters": p.model_dump(mode="json")}, indent=2)
    if training.get("history"):
        files["validation_curve.png"] = training_curve_png(training["history"])
    report = (f"## IQS model ({p.scorer})\n\n{len(train_pairs)} training pairs, {len(valid_pairs)} validation "
              f"pairs.\n\n" + markdown_table(comparison_rows(validation, p.scorer), ["scorer", "raw", "normalized"]))
    summary = {"scorer": p.scorer, "train_pairs": len(train_pairs), "valid_pairs": len(valid_pairs),
               **{k: v for k, v in validation.items() if not isinstance(v, dict)}, **stats}
    return StageOutput(files=files, stats=summary, companions={"data": data}, report=report)


def probe_texts(probe: Probe):
    """The probe as a score function over CaR texts."""
    return lambda texts: probe.scores(encode(texts, probe.feature))


def model_info(store: Store, key: str) -> dict[str, Any]:
    """model.json of an iqs.train artifact."""
    try:
        return json.loads(store.read_file(key, "model.json"))
    except FileNotFoundError as exc:
        raise BadInputError(f"{key} in {store.url} is not an IQS model (no model.json)", field="model") from exc


def stored_probe(store: Store, key: str) -> Probe:
    return Probe.from_json(store.read_file(key, "probe.json"))
