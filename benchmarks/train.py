"""LoRA training speed and memory on SmolLM2-135M-Instruct: our train loop with a LoRA adapter (ours) against
full fine-tuning of the same model through the same loop (baseline), on CaR's selected Alpaca rows
(ChatML, format-stage tokenization). Each runs in a fresh process; tokens/s counts unpadded tokens.
Runs on CUDA when a GPU is visible (bf16), else on the CPU (fp32).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import isolated, smollm2_folder

CAR_SELECTION = Path(__file__).resolve().parents[2] / "shared" / "data" / "car" / "CaR_selected_result.json"
FALLBACK = [("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep enough.")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per row (truncated)")
    parser.add_argument("--store", help="store holding (or receiving) the converted SmolLM2")
    parser.add_argument("--skip-full", action="store_true", help="LoRA only (full fine-tuning needs ~4x memory)")


def training_pairs(n: int) -> list[tuple[str, str]]:
    if not CAR_SELECTION.is_file():
        return FALLBACK * n
    rows = json.loads(CAR_SELECTION.read_text())[:n]
    from tasks.text import alpaca_user_content

    return [(alpaca_user_content(r["instruction"], r.get("input", "")), r["output"]) for r in rows]


def measure(model_dir: str, method: str, steps: int, batch_size: int, max_length: int) -> dict[str, Any]:
    """One run in this (fresh) process: load, 1 warm-up step, then `steps` timed optimizer steps."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from storage.schema import make_record
    from tasks.collate import SFTCollator
    from tasks.stages.train import TrainConfig
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder
    from tasks.train.data import prepare
    from tasks.train.loop import fit
    from tasks.train.model import pick_device, trainable_parameters, wrap

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    records = [make_record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                           system=None, uri="car", fmt="alpaca", row=i)
               for i, (q, a) in enumerate(training_pairs(batch_size * (steps + 1)))]
    table = ConversationEncoder(tokenizer, get_template("chatml"), max_length=max_length).encode(records).table
    params = TrainConfig(method="lora", max_steps=steps + 1, batch_size=batch_size, max_length=max_length,
                         eval_share=0.0, save_steps=10_000, sample_prompts=[], learning_rate=1e-4)
    device = pick_device("lora", "auto")
    prepared = prepare(table, source="car", vocab_size=len(tokenizer), limit=max_length, truncate=True,
                       eval_share=0.0, eval_max_rows=1, seed=0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=device.torch_dtype).to(device.kind)
    if method == "lora":
        model = wrap(model, params)
    trainable, _ = trainable_parameters(model)
    if device.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times: list[float] = []

    def progress(total: int | None, desc: str):
        last = [time.perf_counter()]

        def advance(n: int) -> None:
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
        return advance

    with tempfile.TemporaryDirectory() as work:
        result = fit(model, SFTCollator(tokenizer.pad_token_id), prepared, params, device, Path(work), progress)
    timed = step_times[1:]  # the first step includes allocator and autograd warm-up
    tokens_per_step = result.tokens / max(1, result.steps)
    seconds = sum(timed)
    return {"seconds_per_step": seconds / max(1, len(timed)),
            "tokens_per_s": tokens_per_step * len(timed) / seconds if seconds else None,
            "trainable_parameters": trainable, "device": device.kind, "precision": device.precision,
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.kind == "cuda" else None,
            "tokens_per_step": tokens_per_step}


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder, convert_s, status = smollm2_folder(args.store)
    shape = (args.steps, args.batch_size, args.max_length)
    wall, peak, lora = isolated(measure, folder, "lora", *shape)
    comparison: dict[str, Any] = {"name": f"SmolLM2-135M train step, batch {args.batch_size} x <= {args.max_length}",
                                  "ours_s": round(lora["seconds_per_step"], 3), "ours_tokens_per_s":
                                  round(lora["tokens_per_s"], 1), "ours_peak_rss_mb": round(peak),
                                  "ours_trainable": lora["trainable_parameters"]}
    if not args.skip_full:
        _, full_peak, full = isolated(measure, folder, "full", *shape)
        comparison.update({"baseline": "full fine-tuning", "baseline_s": round(full["seconds_per_step"], 3),
                           "baseline_tokens_per_s": round(full["tokens_per_s"], 1),
                           "baseline_peak_rss_mb": round(full_peak),
                           "baseline_trainable": full["trainable_parameters"]})
    return {"benchmark": "train", "comparisons": [comparison], "device": lora["device"],
            "precision": lora["precision"], "gpu_peak_mb": lora["gpu_peak_mb"],
            "tokens_per_step": round(lora["tokens_per_step"], 1), "steps_timed": args.steps,
            "base_model_seconds": round(convert_s, 1), "base_model_status": status,
            "lora_process_seconds": round(wall, 1)}
