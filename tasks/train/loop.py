"""The Trainer run: checkpoints in a working folder keyed by the stage key, so a retry resumes there."""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.device import Precision
from tasks.train.data import IGNORE_INDEX, Prepared, TokenDataset
from tasks.train.model import DEFAULT_LEARNING_RATE, PROMPT_LEARNING, prompt_learning

log = logging.getLogger("sftflow")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARK = "trainer_state.json"  # the Trainer writes it after the weights, optimizer and RNG states


@dataclass
class FitResult:
    log_history: list[dict[str, Any]]
    resumed_from_step: int | None
    steps: int
    seconds: float
    tokens: int  # non-padding tokens seen, those before a resume included (see counted_from_step)
    padded_tokens: int  # positions computed for them (rows x the batch's width)
    counted_from_step: int | None  # set when a resumed checkpoint kept no counts: tokens and seconds since then
    eval_loss_before: float | None
    eval_loss_after: float | None


class CountingCollator:
    """Wraps the collator and counts the real (unpadded) tokens and the positions of the batches trained on. A
    batch counts when its step trains it, not when it is made: the Trainer makes batches ahead of the step (one
    more than it trains at the end of a run, and past each checkpoint)."""

    def __init__(self, collator: Callable[[list[dict]], dict]):
        self.collator, self.tokens, self.padded_tokens = collator, 0, 0
        self.made: deque[tuple[int, int]] = deque()

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        self.made.append((sum(len(f["input_ids"]) for f in features),  # rows are truncated before
                          batch["input_ids"].numel()))
        return batch

    def trained(self) -> None:
        """The oldest batch made is the one being trained."""
        tokens, padded = self.made.popleft()
        self.tokens += tokens
        self.padded_tokens += padded


def scored_positions_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """The causal-LM loss of transformers' models (each label predicted from the position before it; summed
    over `num_items_in_batch`, the Trainer's count across gradient accumulation, else averaged), with vocabulary
    logits computed only at the positions whose label is scored: the prompt's and the padding's need none, and
    the projection to 49k tokens and its fp32 softmax are most of a small model's step."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    hidden = model.get_decoder()(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][scored])
    summed = F.cross_entropy(logits.float(), targets[scored], reduction="sum")
    return summed / (num_items_in_batch if num_items_in_batch is not None else scored.sum().clamp(min=1))


def _checkpoints(folder: Path) -> list[tuple[int, Path, bool]]:
    """(step, path, complete) of every checkpoint folder; complete = its trainer state was written."""
    if not folder.is_dir():
        return []
    return [(int(match.group(1)), path, (path / COMPLETE_MARK).is_file())
            for path in folder.iterdir() if (match := CHECKPOINT.match(path.name))]


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint. Read-only: a checkpoint being written is simply not complete yet."""
    complete = [(step, path) for step, path, done in _checkpoints(folder) if done]
    return max(complete)[1] if complete else None


def discard_incomplete_checkpoints(folder: Path) -> None:
    """Before resuming: remove what a kill during saving left half-written."""
    for _, path, done in _checkpoints(folder):
        if not done:
            shutil.rmtree(path, ignore_errors=True)


def epoch_rng_file(checkpoints: Path, epoch: int) -> Path:
    """torch's CPU RNG state as an epoch began: the epoch's batch order is drawn from it (see EpochOrder)."""
    return checkpoints / f"rng-epoch-{epoch}.pt"


def counts_file(checkpoints: Path, step: int) -> Path:
    """Tokens and seconds up to a checkpoint's step, written before the checkpoint itself, so a run resumed
    there reports the whole run's tokens and time, not only its own."""
    return checkpoints / f"counts-{step}.json"


def planned_steps(params: Any, train_rows: int) -> int:
    if params.max_steps:
        return params.max_steps
    per_epoch = math.ceil(math.ceil(train_rows / params.batch_size) / params.grad_accumulation)
    return max(1, math.ceil(per_epoch * params.epochs))


def fit(model: Any, collator: Callable, prepared: Prepared, params: Any, device: Precision, checkpoints: Path,
        progress: Callable[[int | None, str], Callable[[int], None]], scored_loss: bool = True) -> FitResult:
    """Train; `scored_loss=False` takes the model's own loss over every position's logits (the path before
    `scored_positions_loss`, kept for the benchmark's baseline)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    total = planned_steps(params, len(prepared.train))
    advance = progress(total, "train steps")

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
            advance(1)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and ("eval_loss" in logs or state.global_step % 10 == 0):
                log.info("train step %d/%d: %s", state.global_step, state.max_steps,
                         {k: round(v, 4) for k, v in logs.items() if isinstance(v, float)})

    has_eval = len(prepared.eval) > 0
    use_gc = device.device == "cuda" and params.gradient_checkpointing and params.method not in PROMPT_LEARNING
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=total,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accumulation,
        learning_rate=params.learning_rate or DEFAULT_LEARNING_RATE[params.method],
        lr_scheduler_type=params.lr_scheduler,
        warmup_ratio=params.warmup_ratio,
        logging_steps=1,
        eval_strategy="steps" if has_eval and params.eval_steps else "no",
        eval_steps=params.eval_steps,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=2,
        seed=params.seed,
        data_seed=params.seed,
        bf16=device.name == "bf16",  # autocast: the weights and the optimizer state stay fp32
        fp16=device.name == "fp16",
        # batches of rows of similar length (LengthGroupedSampler: sorted within shuffled mega-batches of 50
        # batches), so little of each batch is padding; packing has no padding to save
        group_by_length=params.group_by_length and not params.pack,
        gradient_checkpointing=use_gc,
        gradient_checkpointing_kwargs={"use_reentrant": False} if use_gc else None,
        optim="paged_adamw_8bit" if params.method == "qlora" else "adamw_torch",
        use_cpu=device.device == "cpu",
        report_to=[],
        remove_unused_columns=False,
        label_names=["labels"],  # a PeftModel's forward hides `labels`; without this there is no eval loss
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    counting = CountingCollator(collator)
    discard_incomplete_checkpoints(checkpoints)
    resume = latest_checkpoint(checkpoints)
    resumed_at = int(CHECKPOINT.match(resume.name).group(1)) if resume else None
    known = counts_file(checkpoints, resumed_at) if resume else None
    before_resume = json.loads(known.read_text()) if known and known.is_file() else {}
    began = time.perf_counter()

    def totals() -> dict[str, float]:
        return {"tokens": before_resume.get("tokens", 0) + counting.tokens,
                "padded_tokens": before_resume.get("padded_tokens", 0) + counting.padded_tokens,
                "seconds": before_resume.get("seconds", 0.0) + time.perf_counter() - began}

    class SaveCounts(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
            if control.should_save:  # the Trainer saves this step's checkpoint next
                checkpoints.mkdir(parents=True, exist_ok=True)
                counts_file(checkpoints, state.global_step).write_text(json.dumps(totals()))

    class EpochOrder(TrainerCallback):
        """The samplers draw an epoch's batch order from torch's global RNG when the epoch begins. A resumed run
        reaches that draw from a fresh seed (transformers restores the checkpoint's RNG only after it), so a
        resume mid-epoch would replay another order: rows seen twice, rows never seen. The state each epoch
        began with is kept beside the checkpoints and put back when a resumed run re-enters that epoch."""

        first = True

        def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
            import torch

            kept = epoch_rng_file(checkpoints, math.floor(state.epoch or 0))
            if resume is not None and self.first:
                if kept.is_file():
                    torch.set_rng_state(torch.load(kept))
            else:
                checkpoints.mkdir(parents=True, exist_ok=True)
                torch.save(torch.get_rng_state(), kept)
            self.first = False

    class ScoredPositionsTrainer(Trainer):
        def get_train_dataloader(self):  # noqa: ANN201 - the counting collator makes training batches only
            self.data_collator = counting
            try:
                return super().get_train_dataloader()
            finally:
                self.data_collator = collator

        def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001, ANN201
            counting.trained()
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            # evaluation wants the outputs; virtual tokens need the whole model's forward
            if return_outputs or prompt_learning(model) or not scored_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return scored_positions_loss(model, inputs, num_items_in_batch)

    trainer = ScoredPositionsTrainer(model=model, args=args, train_dataset=TokenDataset(prepared.train),
                      eval_dataset=TokenDataset(prepared.eval) if has_eval else None, data_collator=collator,
                      callbacks=[StepProgress(), SaveCounts(), EpochOrder()])
    trainer.remove_callback(PrinterCallback)  # it prints logs on stdout, where `--json` output goes
    before = None
    if has_eval and resume is None:
        before = trainer.evaluate()["eval_loss"]
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    total = totals()
    after = trainer.evaluate()["eval_loss"] if has_eval else None
    return FitResult(trainer.state.log_history, resumed_at, output.global_step, total["seconds"],
                     int(total["tokens"]), int(total["padded_tokens"]),
                     resumed_at if resume and not before_resume else None, before, after)
