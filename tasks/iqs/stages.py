"""The two IQS stages: "iqs.train" (revision files → model artifact) and "iqs" (conversations → scores).

A model artifact's files:
    model/          the COMET checkpoint directory (scorer comet only; see tasks/iqs/train.py)
    probe.json      the MiniLM logistic-regression probe (always: it is also the baseline to beat)
    model.json      scorer, data key, hyperparameters, whitespace normalization
    metrics.json    validation pairs: pairwise accuracy, Kendall tau, baselines; training history
The training pairs are published beside it as the companion dataset `<key>-data` (src, score, split, pair).
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from storage.stage import StageContext, StageDef, StageOutput, companion_key
from storage.store import DatasetRef, Store
from tasks.digest import file_sha256
from tasks.errors import BadInputError
from tasks.iqs.evaluate import comparison_rows, evaluate_pairs
from tasks.iqs.probe import Probe, encode, fit_probe
from tasks.iqs.report import markdown_table, score_histogram_png, training_curve_png
from tasks.iqs.revisions import RevisionPair, load_pairs, regression_rows, split_pairs
from tasks.iqs.score import rank, score_texts, token_lengths
from tasks.text import table_texts


# -- training ---------------------------------------------------------------------------------------------
def revision_checksums(params: Any) -> dict[str, str]:
    """The key of iqs.train covers the content of its revision files, not only their names."""
    sums = {}
    for path in [*params.revisions, *params.validation_revisions]:
        try:
            sums[path] = file_sha256(path)
        except OSError as exc:
            raise BadInputError(f"cannot read revision file: {exc.strerror}", file=path) from exc
    return sums


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


def build_train(ctx: StageContext) -> StageOutput:
    from tasks.iqs.train import load_model, train_model

    p = ctx.params
    if p.scorer == "none":
        raise BadInputError("iqs.scorer is none: there is no IQS model to train", field="iqs.scorer")
    train_pairs, valid_pairs, stats = prepare_pairs(p)
    data = data_table(train_pairs, valid_pairs, p.normalize_whitespace)
    train_rows = regression_rows(train_pairs, p.normalize_whitespace)
    valid_rows = regression_rows(valid_pairs, p.normalize_whitespace)
    work = Path(tempfile.mkdtemp(prefix="iqs-train-"))
    files: dict[str, Any] = {}

    ctx.log.info("iqs.train: embedding %d training rows for the probe", train_rows.num_rows)
    probe = fit_probe(encode(train_rows.column("src").to_pylist()), train_rows.column("score").to_numpy(), p.probe_c)
    files["probe.json"] = probe.to_json()

    training: dict[str, Any] = {}
    if p.scorer == "comet":
        limit = p.limit_train_batches
        per_epoch = min(train_rows.num_rows, limit * p.train_batch_size) if isinstance(limit, int) else \
            int(train_rows.num_rows * limit)
        total = p.epochs * per_epoch
        training = train_model(train_rows, valid_rows, p.comet_hparams(), work / "model", epochs=p.epochs,
                               accumulate_grad_batches=p.accumulate_grad_batches, patience=p.patience,
                               seed=p.seed, limit_train_batches=p.limit_train_batches,
                               advance=ctx.progress(total, "iqs.train"))
        model = load_model(work / "model")
        lengths = token_lengths(model, train_rows.column("src").to_pylist())
        training["train_rows_truncated"] = int((lengths > model.encoder.max_positions - 2).sum())
        scorer = comet_scorer(model, p.normalize_whitespace, p.batch_size)
        files["model"] = work / "model"
    else:
        scorer = probe_scorer(probe)
    validation = evaluate_pairs(valid_pairs, scorer, probe_scorer(probe),
                                scorer_normalizes=p.normalize_whitespace or p.scorer == "probe")
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


def comet_scorer(model: Any, normalize: bool, batch_size: int):
    return lambda texts: score_texts(model, texts, normalize=normalize, batch_size=batch_size).scores


def probe_scorer(probe: Probe):
    return lambda texts: probe.scores(encode(texts))


# -- loading a model artifact ------------------------------------------------------------------------------
def model_info(store: Store, key: str) -> dict[str, Any]:
    try:
        return json.loads(store.read_file(key, "model.json"))
    except FileNotFoundError as exc:
        raise BadInputError(f"{key} in {store.url} is not an IQS model (no model.json)", field="model") from exc


def load_comet(store: Store, key: str, info: dict[str, Any]):
    """The COMET model of a stored IQS model (BadInputError when it was trained as a probe only)."""
    if info["scorer"] != "comet":
        raise BadInputError(f"model {key} was trained with scorer {info['scorer']!r}: it has no COMET "
                            "checkpoint; set iqs.scorer=probe or train a comet model", field="iqs.scorer")
    from tasks.iqs.train import load_model

    return load_model(store.local_path(key, "files", "model"))


def load_scorer(store: Store, key: str, scorer: str, batch_size: int = 32):
    """A score function over texts for a stored model; `scorer` is comet or probe."""
    info = model_info(store, key)
    if scorer == "probe":
        return probe_scorer(Probe.from_json(store.read_file(key, "probe.json")))
    return comet_scorer(load_comet(store, key, info), info["normalize_whitespace"], batch_size)


# -- scoring ----------------------------------------------------------------------------------------------
def embeddings_by_id(store: Store, ref: DatasetRef) -> Mapping[str, np.ndarray]:
    from tasks.embed import embedding_matrix

    table = store.read_table(ref.key, columns=["id", "embedding"])
    ids = table.column("id").to_pylist()
    return dict(zip(ids, embedding_matrix(table.column("embedding"), ids)))


def build_score(ctx: StageContext, conversations: DatasetRef, model: DatasetRef,
                embeddings: DatasetRef | None = None) -> StageOutput:
    p, store = ctx.params, ctx.store
    if p.scorer == "none":
        raise BadInputError("iqs.scorer is none: nothing to score with", field="iqs.scorer")
    info = model_info(store, model.key)
    comet_model, probe, vectors = None, None, None
    if p.scorer == "comet":
        comet_model = load_comet(store, model.key, info)
    else:
        probe = Probe.from_json(store.read_file(model.key, "probe.json"))
        vectors = embeddings_by_id(store, embeddings) if embeddings is not None else None

    advance = ctx.progress(conversations.rows, "iqs")
    ids: list[str] = []
    parts: list[np.ndarray] = []
    truncated = 0
    for shard in range(len(store.shard_names(conversations.key))):
        table = store.read_shard(conversations.key, shard, columns=["id", "messages", "meta"])
        shard_ids = table.column("id").to_pylist()
        if comet_model is not None:
            result = score_texts(comet_model, table_texts(table), normalize=info["normalize_whitespace"],
                                 batch_size=p.batch_size, advance=advance)
            scores, truncated = result.scores, truncated + result.truncated
        else:
            matrix = shard_embeddings(vectors, shard_ids, table, embeddings)
            if matrix.shape[1] != len(probe.weights):
                raise BadInputError(f"embeddings have {matrix.shape[1]} dimensions, the probe of {model.key} "
                                    f"{len(probe.weights)}: embed with the probe's model ({probe.encoder})",
                                    field="embedding")
            scores = probe.scores(matrix)
            advance(len(shard_ids))
        ids += shard_ids
        parts.append(scores)
    scores = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    out = pa.table({"id": pa.array(ids, pa.string()), "iqs_score": pa.array(scores.astype(np.float64)),
                    "iqs_rank": pa.array(rank(ids, scores), pa.int64())})
    stats = {"rows": len(ids), "scorer": p.scorer, "model": model.key, "truncated": truncated,
             "score_mean": float(scores.mean()) if len(ids) else None,
             "score_min": float(scores.min()) if len(ids) else None,
             "score_max": float(scores.max()) if len(ids) else None}
    files = {"score_histogram.png": score_histogram_png({"rows": scores}, f"IQS scores ({p.scorer})")} if ids else {}
    report = (f"## IQS scores\n\n{len(ids):,} rows scored with the {p.scorer} scorer of model `{model.key}`; "
              f"{truncated:,} text(s) longer than the encoder's limit were truncated.\n\n"
              f"mean {stats['score_mean']}, min {stats['score_min']}, max {stats['score_max']}")
    return StageOutput(table=out, files=files, stats=stats, report=report)


def shard_embeddings(vectors: Mapping[str, np.ndarray] | None, ids: list[str], table: pa.Table,
                     ref: DatasetRef | None) -> np.ndarray:
    """The embed stage's vectors for these ids, or (no embeddings input) the texts encoded here."""
    if vectors is None:
        return encode(table_texts(table))
    missing = [i for i in ids if i not in vectors]
    if missing:
        raise BadInputError(f"{len(missing)} conversation id(s) have no embedding in {ref.key}, e.g. "
                            f"{missing[0]!r}: the embeddings must come from the same conversations",
                            field="embedding")
    return np.stack([vectors[i] for i in ids])


TRAIN_STAGE = StageDef("iqs.train", "1", build_train, fingerprint=revision_checksums)
SCORE_STAGE = StageDef("iqs", "1", build_score)
