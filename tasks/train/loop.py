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

from transformers import Trainer, TrainerCallback

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


# -- the steps of a training run, in order ---------------------------------------------------------------------
def training_arguments(params: Any, device: Precision, checkpoints: Path, total_steps: int, has_eval: bool) -> Any:
    """The Trainer's arguments: the configured batch, schedule and precision, checkpoints every `save_steps`."""
    from transformers import TrainingArguments

    use_gc = device.device == "cuda" and params.gradient_checkpointing and params.method not in PROMPT_LEARNING
    return TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=total_steps,
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


@dataclass
class Resume:
    """Where a run starts: the newest complete checkpoint (None: from the start) and the counts kept beside it."""

    checkpoint: Path | None
    step: int | None
    counts: dict[str, float]

    @classmethod
    def find(cls, checkpoints: Path) -> Resume:
        discard_incomplete_checkpoints(checkpoints)
        checkpoint = latest_checkpoint(checkpoints)
        if checkpoint is None:
            return cls(None, None, {})
        step = int(CHECKPOINT.match(checkpoint.name).group(1))
        known = counts_file(checkpoints, step)
        return cls(checkpoint, step, json.loads(known.read_text()) if known.is_file() else {})


class RunCounts:
    """Tokens, positions and seconds of the whole run: those before a resume plus this process's."""

    def __init__(self, counting: CountingCollator, resume: Resume):
        self.counting, self.before, self.began = counting, resume.counts, time.perf_counter()

    def start(self) -> None:
        self.began = time.perf_counter()

    def totals(self) -> dict[str, float]:
        return {"tokens": self.before.get("tokens", 0) + self.counting.tokens,
                "padded_tokens": self.before.get("padded_tokens", 0) + self.counting.padded_tokens,
                "seconds": self.before.get("seconds", 0.0) + time.perf_counter() - self.began}


class StepProgress(TrainerCallback):
    """The progress bar and a log line every 10 steps (and at each evaluation)."""

    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        self.advance(1)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if logs and ("eval_loss" in logs or state.global_step % 10 == 0):
            log.info("train step %d/%d: %s", state.global_step, state.max_steps,
                     {k: float(f"{v:.4g}") for k, v in logs.items() if isinstance(v, float)})  # 3e-05, not 0.0


class SaveCounts(TrainerCallback):
    """The run's counts written beside each checkpoint, just before the Trainer saves it."""

    def __init__(self, checkpoints: Path, counts: RunCounts):
        self.checkpoints, self.counts = checkpoints, counts

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        if control.should_save:  # the Trainer saves this step's checkpoint next
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            counts_file(self.checkpoints, state.global_step).write_text(json.dumps(self.counts.totals()))


class EpochOrder(TrainerCallback):
    """The samplers draw an epoch's batch order from torch's global RNG when the epoch begins. A resumed run
    reaches that draw from a fresh seed (transformers restores the checkpoint's RNG only after it), so a resume
    mid-epoch would replay another order: rows seen twice, rows never seen. The state each epoch began with is
    kept beside the checkpoints and put back when a resumed run re-enters that epoch."""

    def __init__(self, checkpoints: Path, resuming: bool):
        self.checkpoints, self.resuming = checkpoints, resuming

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        import torch

        kept = epoch_rng_file(self.checkpoints, math.floor(state.epoch or 0))
        if self.resuming:
            if kept.is_file():
                torch.set_rng_state(torch.load(kept))
        else:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save(torch.get_rng_state(), kept)
        self.resuming = False  # only the first epoch a resumed run enters was begun before


def micro_batches(inputs: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """A batch as pieces of at most `rows` rows, each cut to its own longest row (padding is on the right)."""
    size = inputs["input_ids"].shape[0]
    pieces = []
    for start in range(0, size, rows):
        piece = {name: value[start:start + rows] if hasattr(value, "shape") else value
                 for name, value in inputs.items()}
        if "attention_mask" in piece:
            width = int(piece["attention_mask"].sum(dim=1).max())
            piece = {name: value[:, :width] if hasattr(value, "shape") and value.dim() == 2 else value
                     for name, value in piece.items()}
        pieces.append(piece)
    return pieces


class ScoredPositionsTrainer(Trainer):
    """The Trainer with batches counted as they train (training batches only) and, by default, the loss of
    `scored_positions_loss`; `scored_loss=False` keeps the model's own loss (the benchmark's baseline). A batch
    of more than `micro_batch_rows` rows runs as micro-batches whose gradients add up to the batch's (each
    loss summed over its scored tokens and divided by the whole batch's): the same step, with the activations
    of a few rows alive at a time instead of every row's."""

    def __init__(self, *args: Any, counting: CountingCollator, scored_loss: bool = True,
                 micro_batch_rows: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counting, self.scored_loss, self.micro_batch_rows = counting, scored_loss, micro_batch_rows

    def get_train_dataloader(self):  # noqa: ANN201 - the counting collator makes training batches only
        plain, self.data_collator = self.data_collator, self.counting
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = plain

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001, ANN201
        self.counting.trained()
        rows = self.micro_batch_rows
        if not rows or inputs["input_ids"].shape[0] <= rows or not self.scored_loss or prompt_learning(model):
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:  # one batch, no accumulation: its own scored tokens
            num_items_in_batch = (inputs["labels"][:, 1:] != IGNORE_INDEX).sum()
        return sum(super(ScoredPositionsTrainer, self).training_step(model, piece, num_items_in_batch)
                   for piece in micro_batches(inputs, rows))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        # evaluation wants the outputs; virtual tokens need the whole model's forward
        if return_outputs or prompt_learning(model) or not self.scored_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return scored_positions_loss(model, inputs, num_items_in_batch)


def fit(model: Any, collator: Callable, prepared: Prepared, params: Any, device: Precision, checkpoints: Path,
        progress: Callable[[int | None, str], Callable[[int], None]], scored_loss: bool = True,
        micro_batch_rows: int | None = None) -> FitResult:
    """Train: the arguments, where to resume, the Trainer with its callbacks, the loss before (a fresh run) and
    after; `scored_loss=False` takes the model's own loss over every position's logits (the path before
    `scored_positions_loss`, kept for the benchmark's baseline); `micro_batch_rows`: rows trained at once."""
    from transformers import PrinterCallback

    total = planned_steps(params, len(prepared.train))
    has_eval = len(prepared.eval) > 0
    resume = Resume.find(checkpoints)
    counting = CountingCollator(collator)
    counts = RunCounts(counting, resume)
    trainer = ScoredPositionsTrainer(
        model=model, args=training_arguments(params, device, checkpoints, total, has_eval),
        train_dataset=TokenDataset(prepared.train), eval_dataset=TokenDataset(prepared.eval) if has_eval else None,
        data_collator=collator, counting=counting, scored_loss=scored_loss,
        micro_batch_rows=micro_batch_rows,
        callbacks=[StepProgress(progress(total, "train steps")), SaveCounts(checkpoints, counts),
                   EpochOrder(checkpoints, resuming=resume.checkpoint is not None)])
    trainer.remove_callback(PrinterCallback)  # it prints logs on stdout, where `--json` output goes
    before = trainer.evaluate()["eval_loss"] if has_eval and resume.checkpoint is None else None
    counts.start()
    output = trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume.checkpoint else None)
    total_counts = counts.totals()
    after = trainer.evaluate()["eval_loss"] if has_eval else None
    return FitResult(trainer.state.log_history, resume.step, output.global_step, total_counts["seconds"],
                     int(total_counts["tokens"]), int(total_counts["padded_tokens"]),
                     resume.step if resume.checkpoint and not resume.counts else None, before, after)
