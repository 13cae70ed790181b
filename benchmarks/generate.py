"""Answering a prompt set with SmolLM2-135M-Instruct: the generate stage's path (prompts of similar length
batched together, left-padded, the KV cache reused, in the precision `auto` resolves to) against
`model.generate` called one prompt at a time (the path before it: tasks.generate.answer), same prompts
(the first `--prompts` of AlpacaEval's 805, longest first as the stage sorts them), same greedy decoding and
`--max-new-tokens`, in one run. Tokens/s counts generated tokens; `answers_equal` how many of the batched
answers are the one-at-a-time answers token for token. The figure users size an ablation with: the time to
answer all 805 prompts, extrapolated from the measured tokens/s and the answers' mean length.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks.common import smollm2_folder

ALL_PROMPTS = 805


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=48, help="AlpacaEval prompts answered by each path")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-sizes", default="16,32,64", help="the batched path's sizes (32: the default)")
    parser.add_argument("--store", help="store holding (or receiving) the converted SmolLM2")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.device import pick_device, use_available_cores
    from tasks.generate import answer, generate_answers
    from tasks.prompts import PROMPT_SETS, read_prompts
    from tasks.stages.generate import PRECISION, GenerateConfig

    if not os.environ.get("SFTFLOW_PROMPT_SETS"):
        raise SystemExit("set SFTFLOW_PROMPT_SETS to the folder holding alpacaeval/prompts.jsonl.gz (../shared/data)")
    folder, _, _ = smollm2_folder(args.store)
    use_available_cores()
    precision = PRECISION.resolve(GenerateConfig())
    table = read_prompts(PROMPT_SETS["alpacaeval"].location(), "alpacaeval", limit=args.prompts).table
    prompts = [m[0]["content"] for m in table.column("messages").to_pylist()]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=precision.load_dtype).to(pick_device()).eval()
    generate_answers(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2, precision=precision)  # warm-up

    began = time.perf_counter()
    alone = answer(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, precision=precision)
    baseline_s = time.perf_counter() - began
    baseline_tokens = sum(a["new_tokens"] for a in alone)
    measured = {}
    for size in map(int, args.batch_sizes.split(",")):
        began = time.perf_counter()
        answers = generate_answers(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=size,
                                   precision=precision)
        seconds = time.perf_counter() - began
        tokens = sum(a.new_tokens for a in answers)
        measured[size] = {"name": f"batched, {size} prompts at a time", "seconds": round(seconds, 1),
                          "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                          "answers_equal": sum(a.text == b["answer"] for a, b in zip(answers, alone)),
                          "stopped": sum(a.finish_reason == "stop" for a in answers),
                          "mean_new_tokens": round(tokens / len(answers), 1)}
    ours = measured.get(GenerateConfig().batch_size) or next(iter(measured.values()))
    rate = ours["tokens_per_s"]
    comparison = {"name": f"{len(prompts)} AlpacaEval prompts, max_new_tokens {args.max_new_tokens}, "
                          f"{precision.name}: {ours['name']} vs model.generate one prompt at a time",
                  "ours_s": ours["seconds"], "baseline_s": round(baseline_s, 1), "ours_tokens_per_s": rate,
                  "baseline_tokens_per_s": round(baseline_tokens / baseline_s, 1),
                  "tokens_per_s_ratio": round(rate / (baseline_tokens / baseline_s), 2),
                  "answers_equal": f"{ours['answers_equal']} of {len(prompts)}"}
    minutes = ALL_PROMPTS * ours["mean_new_tokens"] / rate / 60
    return {"benchmark": "generate", "comparisons": [comparison],
            "options": [row for size, row in measured.items() if row is not ours],
            "precision": precision.name, "precision_reason": precision.reason,
            "minutes_for_805_prompts": round(minutes, 1), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M")}
