"""LoRA training speed on SmolLM2-135M-Instruct, and what the fast path does to the model: the train stage's
default path (`precision: auto` = whichever of fp32 and bf16 autocast this machine measured faster,
length-grouped batches, vocabulary logits only at scored positions, the batch run as micro-batches sized to
about a gigabyte of activations) against the path before it (fp32, random batches, every position's logits,
the whole batch at once) at the same batch size, length, steps and rows (CaR's selected Alpaca rows, ChatML,
format-stage tokenization). Each variant runs in a fresh process: a warm-up step, then `--steps` timed
optimizer steps; tokens/s counts unpadded tokens; the peak is the process's. Quality: the mean loss on
held-out CaR rows after training (taken in fp32 for every variant); the precision gate compares bf16 with fp32
under the same batches (within 0.01 nats). Options: each change alone, and full fine-tuning (`--full`).
The training set is 800 rows, so that length grouping works as on a real selection (the sampler sorts
mega-batches of up to 50 batches); the timed steps are the first ones, and the padding share of a whole epoch
of each batch order is reported beside them. Seconds are per 1,000 unpadded tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import isolated, smollm2_folder

CAR_SELECTION = Path(__file__).resolve().parents[2] / "shared" / "data" / "car" / "CaR_selected_result.json"
FALLBACK = [("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep enough.")]
TRAIN_ROWS, HELD_OUT = 800, 100  # CaR rows to train on, and the rows after them, scored after training
# (name, precision, length-grouped batches, logits only where scored, method): the default path, the path
# before it, each change alone; "lora-nodrop": the default path without LoRA's dropout (train.lora_dropout 0,
# another recipe, not a default: drawing the dropout masks is a fifth of a bf16 step on this CPU)
# (name, precision, length-grouped batches, logits only where scored, method, micro-batches): `auto` is what
# this machine measured fastest (tasks/calibrate.py); micro-batches: the rows the train stage keeps alive at once
# (tasks/train/memory.py), None: the whole batch at once
DEFAULT = ("auto precision, length-grouped batches, scored-position logits, micro-batches (default)", "auto", True,
           True, "lora", "sized")
BEFORE = ("fp32, random batches, every position's logits, whole batch (before)", "fp32", False, False, "lora", None)
OPTIONS = (("fp32, length-grouped batches, scored-position logits, micro-batches", "fp32", True, True, "lora",
            "sized"),
           ("bf16 autocast, length-grouped batches, scored-position logits, micro-batches", "bf16", True, True, "lora",
            "sized"),
           ("auto precision, the default path with the whole batch at once", "auto", True, True, "lora", None),
           ("auto precision, random batches", "auto", False, True, "lora", "sized"),
           ("the default path with train.lora_dropout 0 (another recipe)", "auto", True, True, "lora-nodrop",
            "sized"))
FULL = ("full fine-tuning, fp32, random batches", "fp32", False, False, "full", None)
QUALITY_GATE_NATS = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per row (truncated)")
    parser.add_argument("--store", help="store holding (or receiving) the converted SmolLM2")
    parser.add_argument("--full", action="store_true", help="also full fine-tuning (about 4x the memory)")


def training_pairs(n: int) -> list[tuple[str, str]]:
    if not CAR_SELECTION.is_file():
        return FALLBACK * n
    rows = json.loads(CAR_SELECTION.read_text())[:n]
    from tasks.text import alpaca_user_content

    return [(alpaca_user_content(r["instruction"], r.get("input", "")), r["output"]) for r in rows]


def measure(model_dir: str, precision: str, grouped: bool, scored_loss: bool, method: str, micro: str | None,
            steps: int, batch_size: int, max_length: int) -> dict[str, Any]:
    """One run in this (fresh) process: load, 1 warm-up step, `steps` timed optimizer steps, held-out loss."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from storage.schema import make_record
    from tasks.collate import SFTCollator
    from tasks.device import use_available_cores
    from tasks.evaluate.loss import check_rows, eval_precision, row_losses
    from tasks.stages.train import PRECISION, TrainConfig
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder
    from tasks.train.data import prepare
    from tasks.train.loop import fit
    from tasks.train.memory import micro_batch_rows
    from tasks.train.model import load_base, trainable_parameters, wrap

    use_available_cores()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_train = max(TRAIN_ROWS, batch_size * (steps + 1))
    records = [make_record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                           system=None, uri="car", fmt="alpaca", row=i)
               for i, (q, a) in enumerate(training_pairs(n_train + HELD_OUT))]
    encoder = ConversationEncoder(tokenizer, get_template("chatml"), max_length=max_length)
    table = encoder.encode(records[:n_train]).table
    held_out = encoder.encode(records[n_train:]).table
    params = TrainConfig(method="lora", max_steps=steps + 1, batch_size=batch_size, max_length=max_length,
                         eval_share=0.0, save_steps=10_000, sample_prompts=[], learning_rate=2e-4,
                         precision=precision, group_by_length=grouped, warmup_ratio=0.0,
                         lora_dropout=0.0 if method == "lora-nodrop" else TrainConfig().lora_dropout)
    device = PRECISION.resolve(params)
    prepared = prepare(table, source="car", vocab_size=len(tokenizer), limit=max_length, truncate=True,
                       eval_share=0.0, eval_max_rows=1, seed=0)
    torch.manual_seed(0)
    lora = method.startswith("lora")
    model = load_base(Path(model_dir), "lora", device, False) if lora else \
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=device.load_dtype).to(device.device)
    if lora:
        model = wrap(model, params)
    trainable, _ = trainable_parameters(model)
    step_times: list[float] = []

    def progress(total: int | None, desc: str):
        last = [time.perf_counter()]

        def advance(n: int) -> None:
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
        return advance

    rows = micro_batch_rows(params, model.config, device, max(len(x) for x in prepared.train.input_ids), None)[0] \
        if micro else None
    with tempfile.TemporaryDirectory() as work:
        result = fit(model, SFTCollator(tokenizer.pad_token_id), prepared, params, device, Path(work), progress,
                     scored_loss=scored_loss, micro_batch_rows=rows)
    timed = step_times[1:]  # the first step includes allocator and autograd warm-up
    seconds = sum(timed)
    tokens_per_step = result.tokens / max(1, result.steps)
    vocab_size = len(tokenizer)
    held_rows = check_rows(held_out, source="held-out", vocab_size=vocab_size, max_positions=None)
    held_loss = row_losses(model, held_rows, precision=eval_precision("fp32")).mean_loss
    return {"seconds_per_step": seconds / max(1, len(timed)),
            "tokens_per_s": tokens_per_step * len(timed) / seconds if seconds else None,
            "padding_share": round(1 - result.tokens / result.padded_tokens, 4) if result.padded_tokens else 0.0,
            "epoch_padding_share": epoch_padding_share([len(x) for x in prepared.train.input_ids], batch_size,
                                                       grouped),
            "held_out_loss": held_loss, "trainable_parameters": trainable, "device": device.device,
            "precision": device.name, "tokens_per_step": tokens_per_step, "micro_batch_rows": rows}


def epoch_padding_share(lengths: list[int], batch_size: int, grouped: bool, seed: int = 0) -> float:
    """The padding share of one epoch in the Trainer's batch order: length-grouped, or random."""
    import numpy as np
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    order = get_length_grouped_indices(lengths, batch_size, generator=generator) if grouped else \
        torch.randperm(len(lengths), generator=generator).tolist()
    batches = [np.asarray(lengths)[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    return round(1 - sum(b.sum() for b in batches) / sum(b.max() * len(b) for b in batches), 4)


def row(name: str, wall: float, peak: float, result: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "s_per_step": round(result["seconds_per_step"], 3),
            "s_per_1k_tokens": round(1000 / result["tokens_per_s"], 3),
            "unpadded_tokens_per_s": round(result["tokens_per_s"], 1), "padding_share": result["padding_share"],
            "epoch_padding_share": result["epoch_padding_share"],
            "held_out_loss": round(result["held_out_loss"], 5), "precision": result["precision"],
            "micro_batch_rows": result["micro_batch_rows"], "peak_rss_mb": round(peak), "process_s": round(wall, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder, convert_s, status = smollm2_folder(args.store)
    shape = (args.steps, args.batch_size, args.max_length)
    measured = {}
    for name, precision, grouped, scored, method, micro in (DEFAULT, BEFORE, *OPTIONS, *((FULL,) if args.full
                                                                                          else ())):
        wall, peak, result = isolated(measure, folder, precision, grouped, scored, method, micro, *shape)
        measured[name] = row(name, wall, peak, result)
    ours, before = measured[DEFAULT[0]], measured[BEFORE[0]]
    fp32, bf16 = measured[OPTIONS[0][0]], measured[OPTIONS[1][0]]
    gate = abs(bf16["held_out_loss"] - fp32["held_out_loss"])  # bf16 must hold it to be auto's candidate
    comparison = {"name": f"SmolLM2-135M LoRA, batch {args.batch_size} x <= {args.max_length}, {args.steps} steps: "
                          f"{DEFAULT[0]} vs {BEFORE[0]}",
                  "ours_s": ours["s_per_1k_tokens"], "baseline_s": before["s_per_1k_tokens"],
                  "ours_tokens_per_s": ours["unpadded_tokens_per_s"],
                  "baseline_tokens_per_s": before["unpadded_tokens_per_s"],
                  "tokens_per_s_ratio": round(ours["unpadded_tokens_per_s"] / before["unpadded_tokens_per_s"], 2),
                  "ours_padding_share": ours["padding_share"], "baseline_padding_share": before["padding_share"],
                  "ours_epoch_padding_share": ours["epoch_padding_share"],
                  "baseline_epoch_padding_share": before["epoch_padding_share"],
                  "ours_held_out_loss": ours["held_out_loss"], "baseline_held_out_loss": before["held_out_loss"],
                  "bf16_vs_fp32_same_batches_nats": round(gate, 5),
                  "held_out_loss_vs_before_nats": round(abs(ours["held_out_loss"] - before["held_out_loss"]), 5),
                  "precision_gate": "held" if gate <= QUALITY_GATE_NATS else "MISSED"}
    return {"benchmark": "train", "comparisons": [comparison],
            "options": [measured[name] for name in measured if name not in (DEFAULT[0], BEFORE[0])],
            "precision": ours["precision"], "steps_timed": args.steps, "base_model_seconds": round(convert_s, 1),
            "base_model_status": status, "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M")}
