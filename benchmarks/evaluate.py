"""Rows per second of the evaluation loss pass (tasks.evaluate.loss) on SmolLM2-135M-Instruct: ours (rows
sorted by length, batched, vocabulary logits only where a supervised token is predicted) at several batch
sizes against a plain per-row loop of `model(input_ids, labels=labels).loss` (baseline), in the same process
on the same rows: a seeded sample of Alpaca-52k (../shared/data) formatted as the format stage does (ChatML,
all assistant tokens, truncated at max_length). Every pass is repeated; each row's mean loss must agree with
the loop's (max |difference| reported). CUDA (bf16) when a GPU is visible, else the CPU (fp32).
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.common import smollm2_folder, timed_cpu

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca" / "alpaca_data_52k.json.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200, help="Alpaca rows in the sample")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--store", help="store holding (or receiving) the converted SmolLM2")


def alpaca_sample(n: int, seed: int = 0) -> list[dict[str, Any]]:
    from storage.schema import make_record
    from tasks.text import alpaca_user_content

    if not ALPACA.is_file():
        raise SystemExit(f"benchmark data not found: {ALPACA} (the project's ../shared/data)")
    rows = [r for r in json.loads(gzip.decompress(ALPACA.read_bytes())) if r["output"].strip()]
    chosen = random.Random(seed).sample(range(len(rows)), n)
    return [make_record(messages=[{"role": "user", "content": alpaca_user_content(rows[i]["instruction"],
                                                                                  rows[i]["input"])},
                                  {"role": "assistant", "content": rows[i]["output"]}],
                        system=None, uri=str(ALPACA), fmt="alpaca", row=i) for i in chosen]


def plain_loop(model: Any, rows: Any) -> list[float]:
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        return [float(model(input_ids=torch.from_numpy(x)[None].to(device),
                            labels=torch.from_numpy(y)[None].to(device)).loss)
                for x, y in zip(rows.input_ids, rows.labels)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.evaluate import loss
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    folder, convert_s, status = smollm2_folder(args.store)
    encoded = ConversationEncoder(AutoTokenizer.from_pretrained(folder), get_template("chatml"),
                                  max_length=args.max_length).encode(alpaca_sample(args.rows))
    vocab_size, limit = loss.model_limits(folder)
    rows = loss.check_rows(encoded.table, source="alpaca sample", vocab_size=vocab_size, max_positions=limit)
    model = loss.load_for_eval(folder)
    loss.row_losses(model, rows, batch_size=8)  # warm-up: allocator, threads, kernels
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    passes: dict[str, list[tuple[float, float]]] = {}  # variant -> (wall s, CPU s) per repeat
    differences: dict[int, float] = {}  # batch size -> largest |row mean - the loop's|
    for _ in range(args.repeats):  # round robin: drifting load on the machine hits every variant alike
        wall, cpu, means = timed_cpu(plain_loop, model, rows)
        passes.setdefault("loop", []).append((wall, cpu))
        reference = np.array(means)
        for batch_size in batch_sizes:
            wall, cpu, result = timed_cpu(lambda b=batch_size: loss.row_losses(model, rows, batch_size=b))
            passes.setdefault(f"batch {batch_size}", []).append((wall, cpu))
            difference = float(np.abs(result.loss_mean - reference).max())
            differences[batch_size] = max(differences.get(batch_size, 0.0), difference)
    n = len(rows)
    base_wall = min(w for w, _ in passes["loop"])
    comparisons = []
    for batch_size in batch_sizes:
        timings = passes[f"batch {batch_size}"]
        ours = min(w for w, _ in timings)
        comparisons.append({
            "name": f"loss pass, {n} rows, batch {batch_size}", "ours_s": round(ours, 2),
            "ours_rows_per_s": round(n / ours, 2), "ours_walls_s": [round(w, 2) for w, _ in timings],
            "ours_cpu_s": [round(c, 1) for _, c in timings], "baseline": "per-row loop, model(labels=).loss",
            "baseline_s": round(base_wall, 2), "baseline_rows_per_s": round(n / base_wall, 2),
            "baseline_walls_s": [round(w, 2) for w, _ in passes["loop"]],
            "max_abs_diff_row_mean": differences[batch_size]})
    lengths = [len(x) for x in rows.input_ids]
    return {"benchmark": "evaluate", "comparisons": comparisons, "device": str(next(model.parameters()).device),
            "dtype": str(next(model.parameters()).dtype), "rows": n, "quarantined": encoded.quarantine.num_rows,
            "tokens": sum(lengths), "scored_tokens": int(rows.scored.sum()), "max_length": args.max_length,
            "mean_length": round(sum(lengths) / n, 1), "base_model_seconds": round(convert_s, 1),
            "base_model_status": status, "finished": time.strftime("%H:%M:%S")}
