"""`comet`: CaR's Instruction Quality Scorer, a COMET regression model trained on expert revisions.

Training defaults follow CaR's instruction_score.yaml except the encoder (the bundled MiniLM, offline) and its
learning rate (3e-5: better on MiniLM). `iqs.model: hf:GyQAQ/Instruction-quality-scoring` imports CaR's own
published checkpoint instead (tasks/iqs/hub.py). Scoring is batched and length-sorted (tasks/iqs/score.py).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.device import RESOLVED_IN_KEY, PrecisionSetting
from tasks.errors import BadInputError
from tasks.iqs.training import model_info, train_on_revisions
from tasks.scorers.base import TRAIN_PRECISION, Scorer, ScorerInputs, Scores, Scoring
from tasks.scorers.trained import TRAINING, RevisionTrained
from tasks.text import table_texts

# bf16 scoring against fp32 on CaR's 254 validation pairs (python -m benchmarks iqs): the gate is accuracy
# within 0.5 points and Kendall tau to the fp32 scores >= 0.99
AUTO_BF16 = True
PART_ROWS = 4096  # rows per part: under a minute in bf16 on 2 CPU cores, what a crash can cost


class CometConfig(RevisionTrained):
    scorer: Literal["comet"] = "comet"
    encoder: str | None = Field(None, json_schema_extra=TRAINING,
                                description="local path or hub name of the encoder; bundled MiniLM if empty")
    encoder_model: str = Field("BERT", json_schema_extra=TRAINING,
                               description="COMET encoder class: BERT (MiniLM), XLM-RoBERTa (CaR), ...")
    epochs: int = Field(3, ge=1, json_schema_extra=TRAINING,
                        description="maximum epochs (early stopping on validation pairwise accuracy)")
    patience: int = Field(1, ge=0, json_schema_extra=TRAINING, description="epochs without improvement before "
                                                                          "stopping")
    limit_train_batches: int | float = Field(1.0, gt=0, json_schema_extra=TRAINING,
                                             description="share (float) or number (int) of training batches per "
                                                         "epoch, for quick runs")
    train_batch_size: int = Field(8, ge=1, json_schema_extra=TRAINING)
    accumulate_grad_batches: int = Field(2, ge=1, json_schema_extra=TRAINING)
    encoder_learning_rate: float = Field(3e-5, gt=0, json_schema_extra=TRAINING,
                                         description="CaR: 1e-6 (xlm-roberta-large)")
    learning_rate: float = Field(1.5e-5, gt=0, json_schema_extra=TRAINING)
    layerwise_decay: float = Field(0.95, json_schema_extra=TRAINING)
    nr_frozen_epochs: float = Field(0.3, ge=0, json_schema_extra=TRAINING,
                                    description="epochs (or share of the first) with a frozen encoder")
    hidden_sizes: list[int] = Field(default_factory=lambda: [2048, 1024], json_schema_extra=TRAINING)
    dropout: float = Field(0.1, json_schema_extra=TRAINING)
    pool: Literal["avg", "max", "cls", "default"] = Field("avg", json_schema_extra=TRAINING)
    layer_transformation: Literal["sparsemax", "softmax"] = Field("sparsemax", json_schema_extra=TRAINING)
    pair_loss_weight: float = Field(0.0, ge=0, json_schema_extra=TRAINING,
                                    description="weight of a pairwise margin ranking loss added to MSE")
    pair_margin: float = Field(0.5, ge=0, json_schema_extra=TRAINING)
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="scoring precision: auto = bf16 autocast where the GPU or the CPU has bf16 units and bf16 holds "
                    "its gate (python -m benchmarks iqs), else fp32; int8 (CPU) is faster and may swap close pairs")
    train_precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="training precision: auto = bf16 mixed precision where the GPU or the CPU has bf16 units, "
                    "else fp32 (the weights and the optimizer state stay fp32)")
    length_grouped: bool = Field(True, json_schema_extra=TRAINING,
                                 description="training batches of similar length (about half the padding); "
                                             "false: random batches, as stock COMET")

    def comet_hparams(self) -> dict[str, Any]:
        """InstructionMetric arguments (pretrained_model None = the bundled MiniLM)."""
        return {"encoder_model": self.encoder_model, "pretrained_model": self.encoder,
                "encoder_learning_rate": self.encoder_learning_rate, "learning_rate": self.learning_rate,
                "layerwise_decay": self.layerwise_decay, "nr_frozen_epochs": self.nr_frozen_epochs,
                "hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout, "pool": self.pool,
                "layer_transformation": self.layer_transformation, "batch_size": self.train_batch_size,
                "pair_loss_weight": self.pair_loss_weight, "pair_margin": self.pair_margin,
                "length_grouped": self.length_grouped}


def fit(train_rows: Any, valid_rows: Any, ctx: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from tasks.iqs.comet_model import load_model, train_model
    from tasks.iqs.score import score_texts, token_lengths

    p: CometConfig = ctx.params
    limit = p.limit_train_batches
    per_epoch = min(train_rows.num_rows, limit * p.train_batch_size) if isinstance(limit, int) else \
        int(train_rows.num_rows * limit)
    folder = ctx.scratch / "model"
    training = train_model(train_rows, valid_rows, p.comet_hparams(), folder,
                           precision=TRAIN_PRECISION.planned(p, ctx.fingerprint), epochs=p.epochs,
                           accumulate_grad_batches=p.accumulate_grad_batches, patience=p.patience, seed=p.seed,
                           limit_train_batches=p.limit_train_batches,
                           advance=ctx.progress(p.epochs * per_epoch, "iqs.train"))
    model = load_model(folder)
    lengths = token_lengths(model, train_rows.column("src").to_pylist())
    training["train_rows_truncated"] = int((lengths > model.encoder.max_positions - 2).sum())

    def score(texts: list[str]) -> Any:
        return score_texts(model, texts, normalize=p.normalize_whitespace, batch_size=p.batch_size).scores

    return score, {"model": folder}, training


def open_model(inputs: ScorerInputs) -> Scoring:
    from tasks.iqs.comet_model import load_model
    from tasks.iqs.score import ready_for, score_texts

    store, key = inputs.store, inputs.iqs_model.key
    info = model_info(store, key)
    if info["scorer"] != "comet":
        raise BadInputError(f"model {key} was trained with scorer {info['scorer']!r}: it has no COMET "
                            "checkpoint; set iqs.scorer=probe or train a comet model", field="iqs.scorer")
    precision = inputs.precision
    model = ready_for(load_model(store.local_path(key, "files", "model")), precision)

    def score(rows: Any) -> Scores:
        result = score_texts(model, table_texts(rows), normalize=info["normalize_whitespace"],
                             batch_size=inputs.params.batch_size, precision=precision)
        return Scores(result.scores, truncated=result.truncated)

    return Scoring(score, model=key, facts=precision.stats())




def train(ctx: Any) -> Any:
    """iqs.train for comet: a model trained on the revisions, or a published checkpoint (`iqs.model: hf:…`)."""
    from tasks.iqs.hub import import_checkpoint, is_hub_model

    return import_checkpoint(ctx) if is_hub_model(ctx.params.model) else train_on_revisions(ctx, fit)


SCORER = Scorer("comet", CometConfig, open_model, train=train, part_rows=PART_ROWS, precision=lambda p: p.precision,
                precisions=("auto", "fp32", "bf16", "int8"), precision_kind="encoder-inference",
                auto_bf16=AUTO_BF16,
                description="CaR's IQS: a COMET regression model trained on expert-revised pairs")
