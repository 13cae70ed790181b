"""Rows per second of the evaluation loss pass (tasks.evaluate.loss) on SmolLM2-135M-Instruct: the evaluate
stage's default path (`precision: auto`: bf16 autocast where the CPU or GPU has bf16 units, vocabulary logits
only at the scored positions, rows sorted by length, its default batch of 16; the weights held in bf16, as nothing
trains) against the path before it (fp32, every
position's logits, batch 8), in the same process on the same rows: a seeded sample of Alpaca-52k
(../shared/data) formatted as the format stage does (ChatML, all assistant tokens, truncated at max_length).
Quality: the set's mean loss against the fp32 path's (the gate: within 0.005 nats). Options: other batch sizes,
and a plain per-row loop of `model(input_ids, labels=labels).loss`, which the fp32 path must equal per row.
Every pass is repeated (round robin) and the fastest kept.
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
    parser.add_argument("--batch-sizes", default="8,32", help="other batch sizes of the default precision")
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
    import os

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
    default, exact = loss.eval_precision("auto"), loss.eval_precision("fp32")
    # each precision's model as the evaluate stage loads it (bf16 on a CPU: its Linear weights cast once)
    models = {precision.name: loss.load_for_eval(folder, None, precision) for precision in (exact, default)}
    model = models["fp32"]
    variants = {"before": (exact, 8, True), "default": (default, loss.DEFAULT_BATCH_SIZE, False),
                **{f"{default.name} batch {b}": (default, b, False) for b in map(int, args.batch_sizes.split(","))
                   if b != loss.DEFAULT_BATCH_SIZE}}
    for precision, batch_size, every in variants.values():  # warm-up: allocator, threads, kernels
        loss.row_losses(models[precision.name], rows, batch_size=batch_size, precision=precision,
                        every_position=every)
    passes: dict[str, list[float]] = {}
    results: dict[str, Any] = {}
    for _ in range(args.repeats):  # round robin: drifting load on the machine hits every variant alike
        wall, _, means = timed_cpu(plain_loop, model, rows)
        passes.setdefault("loop", []).append(wall)
        results["loop"] = np.array(means)
        for name, (precision, batch_size, every) in variants.items():
            wall, _, result = timed_cpu(lambda p=precision, b=batch_size, e=every: loss.row_losses(
                models[p.name], rows, batch_size=b, precision=p, every_position=e))
            passes.setdefault(name, []).append(wall)
            results[name] = result
    n = len(rows)
    best = {name: min(walls) for name, walls in passes.items()}
    reference = results["before"]

    def row(name: str) -> dict[str, Any]:
        found = results[name]
        means = found if name == "loop" else found.loss_mean
        out = {"name": name, "seconds": round(best[name], 2), "rows_per_s": round(n / best[name], 2),
               "walls_s": [round(w, 2) for w in passes[name]],
               "max_abs_diff_row_mean_to_fp32": float(np.abs(means - reference.loss_mean).max())}
        if name != "loop":
            out["mean_loss"] = round(found.mean_loss, 5)
            out["mean_loss_diff_to_fp32"] = round(found.mean_loss - reference.mean_loss, 5)
        return out

    ours = row("default")
    gate = abs(ours["mean_loss_diff_to_fp32"])
    comparisons = [{"name": f"loss pass, {n} rows: evaluate.precision auto = {default.name} ({default.reason}), "
                            f"batch {loss.DEFAULT_BATCH_SIZE} vs fp32, batch 8 (before)",
                    "ours_s": ours["seconds"], "baseline_s": round(best["before"], 2),
                    "ours_rows_per_s": ours["rows_per_s"], "baseline_rows_per_s": round(n / best["before"], 2),
                    "ours_mean_loss": ours["mean_loss"], "baseline_mean_loss": round(reference.mean_loss, 5),
                    "mean_loss_diff_nats": ours["mean_loss_diff_to_fp32"],
                    "gate": "held" if gate <= 0.005 else "MISSED"}]
    lengths = [len(x) for x in rows.input_ids]
    return {"benchmark": "evaluate", "comparisons": comparisons,
            "options": [row(name) for name in passes if name not in ("default",)],
            "device": default.device, "rows": n, "quarantined": encoded.quarantine.num_rows,
            "tokens": sum(lengths), "scored_tokens": int(rows.scored.sum()), "max_length": args.max_length,
            "mean_length": round(sum(lengths) / n, 1), "base_model_seconds": round(convert_s, 1),
            "base_model_status": status, "load_average": os.getloadavg(), "finished": time.strftime("%H:%M:%S")}
