"""CaR's Instruction Quality Scorer as a COMET model: a source-only regression metric.

Stock COMET has no such class (`ReferencelessRegression` needs `src` and `mt`). `InstructionMetric` encodes
only `src` ("Instruction: … [Input: …] Response: …") and regresses a score (0 raw, 1 expert-revised). It is
registered in `comet.models.str2model` on import, so `comet.load_from_checkpoint` finds it.

Traps handled here (see the GUIDE): `__init__` calls `super()` literally, or Lightning loses the
hyperparameters; Lightning 2.6 leaves the pretrained encoder in eval mode (dropout off) unless the model is
put in train mode when an epoch starts.
"""
from __future__ import annotations

import multiprocessing

import pandas as pd
import torch
from comet.models import str2model
from comet.models.regression.regression_metric import RegressionMetric
from comet.models.utils import Prediction, Target
from comet.modules import FeedForward
from torch.utils.data import DataLoader, RandomSampler, Sampler
from transformers.modeling_layers import GradientCheckpointingLayer

CLASS_IDENTIFIER = "instruction_metric"
TRAIN_SUBSET_ROWS = 200
# the attention maps a layer keeps for the backward pass, in fp32 copies of rows x heads x length²: scores,
# probabilities, dropout's mask and output; measured: 8 rows x 508 tokens of MiniLM-L6 kept 2.1 GB of them
ATTENTION_COPIES = 3.5


class InstructionMetric(RegressionMetric):
    """Defaults follow CaR's instruction_score.yaml, except the encoder (set by tasks.iqs.comet_model).

    `pair_loss_weight` > 0 adds a pairwise margin ranking term: training batches then hold whole pairs
    (raw, revised) and the revision must score `pair_margin` above its raw text. `length_grouped` batches
    rows of similar length (less padding); False draws them at random, as stock COMET does.
    """

    def __init__(
        self,
        nr_frozen_epochs: float | int = 0.3,
        keep_embeddings_frozen: bool = True,
        optimizer: str = "AdamW",
        warmup_steps: int = 0,
        encoder_learning_rate: float = 1e-06,
        learning_rate: float = 1.5e-05,
        layerwise_decay: float = 0.95,
        encoder_model: str = "XLM-RoBERTa",
        pretrained_model: str = "xlm-roberta-large",
        pool: str = "avg",
        layer: str | int = "mix",
        layer_transformation: str = "sparsemax",
        layer_norm: bool = True,
        loss: str = "mse",
        dropout: float = 0.1,
        batch_size: int = 8,
        train_data: list[str] = [],  # noqa: B006 - Lightning stores these defaults as hyperparameters
        validation_data: list[str] = [],  # noqa: B006
        hidden_sizes: list[int] = [2048, 1024],  # noqa: B006
        activations: str = "Tanh",
        final_activation: str | None = None,
        pair_loss_weight: float = 0.0,
        pair_margin: float = 0.5,
        length_grouped: bool = True,
        class_identifier: str = CLASS_IDENTIFIER,
        load_pretrained_weights: bool = True,
        local_files_only: bool = False,
    ) -> None:
        super().__init__(
            nr_frozen_epochs=nr_frozen_epochs,
            keep_embeddings_frozen=keep_embeddings_frozen,
            optimizer=optimizer,
            warmup_steps=warmup_steps,
            encoder_learning_rate=encoder_learning_rate,
            learning_rate=learning_rate,
            layerwise_decay=layerwise_decay,
            encoder_model=encoder_model,
            pretrained_model=pretrained_model,
            pool=pool,
            layer=layer,
            layer_transformation=layer_transformation,
            layer_norm=layer_norm,
            loss=loss,
            dropout=dropout,
            batch_size=batch_size,
            train_data=train_data,
            validation_data=validation_data,
            hidden_sizes=hidden_sizes,
            activations=activations,
            final_activation=final_activation,
            load_pretrained_weights=load_pretrained_weights,
            local_files_only=local_files_only,
        )
        # RegressionMetric sized its estimator for six src/mt/ref features; ours sees one sentence embedding.
        self.estimator = FeedForward(
            in_dim=self.encoder.output_units,
            hidden_sizes=self.hparams.hidden_sizes,
            activations=self.hparams.activations,
            dropout=self.hparams.dropout,
            final_activation=self.hparams.final_activation,
            out_dim=1,
        )

    def on_train_epoch_start(self) -> None:
        self.train()  # Lightning keeps the encoder's eval mode from from_pretrained otherwise (no dropout)

    # the attention maps a training batch may keep (bytes, estimated) before its encoder recomputes them in the
    # backward pass instead; None: never. Not a hyperparameter: the gradients are the same either way.
    recompute_above: float | None = None
    recomputed_batches: int = 0

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """A long batch's encoder layers recompute their activations in the backward pass rather than keep them:
        the same gradients (dropout's RNG state is restored for the recomputation, non-reentrant checkpoints),
        about a third more time, and its attention maps no longer set the training's peak memory (8 x 508
        tokens of MiniLM-L6: 3.7 -> 1.7 GB peak RSS, measured)."""
        if self.recompute_above is None:
            return
        rows, length = batch[0]["src_input_ids"].shape
        config = self.encoder.model.config
        kept = rows * config.num_hidden_layers * config.num_attention_heads * length ** 2 * 4 * ATTENTION_COPIES
        on = kept > self.recompute_above
        layers = [m for m in self.encoder.model.modules() if isinstance(m, GradientCheckpointingLayer)]
        if on and layers and not hasattr(layers[0], "_gradient_checkpointing_func"):
            self.encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for layer in layers:
            layer.gradient_checkpointing = on
        self.recomputed_batches += on

    def prepare_sample(self, sample, stage: str = "train"):
        if sample and isinstance(sample[0], list | tuple):  # pair items (pairwise loss): flatten, raw first
            sample = [row for pair in sample for row in pair]
        src_inputs = self.encoder.prepare_sample([str(s["src"]) for s in sample])
        model_inputs = {"src_" + k: v for k, v in src_inputs.items()}
        if stage == "predict":
            return model_inputs
        return model_inputs, Target(score=torch.tensor([float(s["score"]) for s in sample], dtype=torch.float))

    def forward(self, src_input_ids: torch.Tensor, src_attention_mask: torch.Tensor, **kwargs) -> Prediction:
        sentemb = self.get_sentence_embedding(src_input_ids, src_attention_mask)
        return Prediction(score=self.estimator(sentemb).view(-1))

    def compute_loss(self, prediction: Prediction, target: Target) -> torch.Tensor:
        loss = self.loss(prediction.score, target.score)
        if self.hparams.pair_loss_weight > 0 and self.training:
            raw, revised = prediction.score[0::2], prediction.score[1::2]
            ranking = torch.nn.functional.relu(self.hparams.pair_margin - (revised - raw)).mean()
            loss = loss + self.hparams.pair_loss_weight * ranking
        return loss

    def on_validation_epoch_start(self) -> None:
        self._valid_scores: list[tuple[torch.Tensor, torch.Tensor]] = []

    def validation_step(self, batch, batch_nb: int, dataloader_idx: int = 0) -> None:
        """COMET's step (dataloader 0: a training subset, then the validation sets), keeping the first
        validation set's predictions for the pairwise accuracy."""
        batch_input, batch_target = batch
        score = self.forward(**batch_input).score
        if dataloader_idx == 0:
            self.train_metrics.update(score, batch_target["score"])
            return
        self.val_metrics[dataloader_idx - 1].update(score, batch_target["score"], None)
        if dataloader_idx == 1:
            self._valid_scores.append((score.detach().float().cpu(), batch_target["score"].cpu()))

    def on_validation_epoch_end(self, *args, **kwargs) -> None:
        super().on_validation_epoch_end(*args, **kwargs)
        if self._valid_scores:
            scores, labels = (torch.cat(t) for t in zip(*self._valid_scores))
            accuracy = pairwise_accuracy_of_rows(scores, labels)
            if accuracy is not None:
                self.log("val_pairwise_accuracy", accuracy, prog_bar=True)

    def read_training_data(self, path: str) -> list:
        rows = _read_rows(path)
        if self.hparams.pair_loss_weight > 0:  # rows come raw, revised, raw, revised, …
            return [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
        return rows

    def train_dataloader(self) -> DataLoader:
        """COMET's loader; with `length_grouped`, batches of similar length: about half the padding."""
        data = self.read_training_data(self.hparams.train_data[self.current_epoch % len(self.hparams.train_data)])
        return DataLoader(data, **batching(data, self.hparams.batch_size, self.hparams.get("length_grouped", True)),
                          collate_fn=lambda s: self.prepare_sample(s, stage="fit"),
                          num_workers=self.loader_workers())

    def val_dataloader(self) -> list[DataLoader]:
        loaders = super().val_dataloader()
        for loader in loaders:
            loader.num_workers = self.loader_workers()
        return loaders

    def loader_workers(self) -> int:
        """COMET's two loader processes per device, or none inside a daemonic process (a Dask worker), which
        may not start children."""
        return 0 if multiprocessing.current_process().daemon else 2 * self.trainer.num_devices

    def read_validation_data(self, path: str) -> list[dict]:
        return _read_rows(path)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in (None, "fit"):
            if self.hparams.pair_loss_weight > 0:  # validate on rows, not pairs
                self.train_subset = [row for pair in self.train_subset for row in pair]
            # COMET re-predicts up to 1,000 training rows every validation for its train_* log metrics;
            # TRAIN_SUBSET_ROWS are enough for those and save minutes an epoch on CPU
            self.train_subset = [self.train_subset[i] for i in range(min(TRAIN_SUBSET_ROWS, len(self.train_subset)))]


def batching(data: list, batch_size: int, length_grouped: bool) -> dict:
    """DataLoader arguments for training items (rows, or (raw, revised) pairs)."""
    if not length_grouped:
        return {"batch_size": batch_size, "sampler": RandomSampler(data)}
    lengths = [sum(len(r["src"]) for r in item) if isinstance(item, tuple) else len(item["src"]) for item in data]
    return {"batch_sampler": LengthBucketSampler(lengths, batch_size)}


class LengthBucketSampler(Sampler[list[int]]):
    """Shuffled batches of similar length: shuffle, sort within windows of 50 batches, shuffle the batches.
    A fresh order every epoch, drawn from torch's global generator (seeded by Lightning)."""

    def __init__(self, lengths: list[int], batch_size: int, window: int = 50):
        self.lengths, self.batch_size, self.window = lengths, batch_size, window

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        yield from (batches[i] for i in torch.randperm(len(batches)).tolist())


def pairwise_accuracy_of_rows(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Share of (raw, revised) row pairs where the revision scores higher; None unless rows are such pairs."""
    if len(labels) < 2 or len(labels) % 2 or not bool((labels[0::2] < labels[1::2]).all()):
        return None
    return float((scores[1::2] > scores[0::2]).float().mean())


def _read_rows(path: str) -> list[dict]:
    frame = pd.read_csv(path, keep_default_na=False)
    return [{"src": str(s), "score": float(v)} for s, v in zip(frame["src"], frame["score"])]


str2model[CLASS_IDENTIFIER] = InstructionMetric
