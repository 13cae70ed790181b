"""`sftflow generate-instructions --seed-tasks PATH …`: Alpaca-style self-instruct into the store."""
from __future__ import annotations

import argparse
import sys

from flows.cli.output import emit

# CLI flag → SelfInstructConfig field (flags left out keep the config default)
FIELDS = ("seed_tasks", "prompt_file", "backend", "base_url", "model", "api_key_env", "api_key_secret",
          "num_instructions", "num_prompt_instructions", "request_batch_size", "temperature", "top_p", "max_tokens",
          "similarity_threshold", "requests_budget", "tokens_budget", "seed", "timeout_s", "max_retries", "backoff_s",
          "device", "precision")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate-instructions", help="generate instruction data from seed tasks (self-instruct)")
    p.add_argument("--seed-tasks", required=True, metavar="PATH", help="seed tasks JSONL (Alpaca's layout)")
    p.add_argument("--prompt-file", metavar="PATH", help="requirements text; prompt.txt next to the seed tasks "
                                                         "when left out")
    p.add_argument("--backend", choices=["openai", "local"], help="default: openai")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--model", help="model name (openai) or local model folder (local)")
    p.add_argument("--api-key-env", metavar="NAME", help="environment variable with the API key (OPENAI_API_KEY)")
    p.add_argument("--api-key-secret", metavar="BLOCK", help="Prefect Secret block with the API key")
    p.add_argument("--num-instructions", type=int, help="new instructions to keep (100)")
    p.add_argument("--num-prompt-instructions", type=int, help="seed tasks per prompt (3)")
    p.add_argument("--request-batch-size", type=int, help="requests per batch (5)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-tokens", type=int, help="completion tokens per request (3072)")
    p.add_argument("--similarity-threshold", type=float, help="ROUGE-L F1 above which an instruction is a "
                                                              "duplicate (0.7)")
    p.add_argument("--requests-budget", type=int, help="at most this many requests (200)")
    p.add_argument("--tokens-budget", type=int, help="stop once prompt + completion tokens reach this")
    p.add_argument("--seed", type=int)
    p.add_argument("--timeout-s", type=float)
    p.add_argument("--max-retries", type=int)
    p.add_argument("--backoff-s", type=float)
    p.add_argument("--device", help="local backend: cpu, cuda or auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="local backend: auto (bf16 autocast where "
                                                                         "the hardware has it) or fp32")
    p.add_argument("--store", help="store URL ($SFTFLOW_HOME/store by default)")
    p.add_argument("--force", action="store_true", help="generate again even if the store has this dataset")
    p.add_argument("--output", metavar="PATH", help="also write the kept tasks: Alpaca JSONL, or canonical "
                                                    "records (with lineage) for a .parquet path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handle)


def human(result: dict) -> str:
    dropped = ", ".join(f"{reason} {n}" for reason, n in result.get("dropped", {}).items()) or "none"
    lines = [f"self_instruct {result['status']}: {result['key']} ({result['rows']} rows)",
             f"requests {result.get('requests')}, generated {result.get('generated')}, kept {result.get('kept')}, "
             f"duplicates {result.get('duplicates')}, stopped: {result.get('stop_reason')}",
             f"dropped: {dropped}",
             f"tokens: {result.get('prompt_tokens')} prompt + {result.get('completion_tokens')} completion, "
             f"retries {result.get('retries')}",
             f"quarantine: {result.get('quarantine')}"]
    if result.get("output"):
        lines.append(f"wrote {result['output']} ({result['output_layout']})")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    from flows.plan import run_alone
    from storage.store import Store
    from tasks.stages.self_instruct import STAGE, SelfInstructConfig, summary

    config = SelfInstructConfig(**{f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None})
    store = Store(args.store)
    result = run_alone(STAGE, config, {}, store, force=args.force)  # with the Secret block in the env
    out = summary(store, result.ref.key, result.status, args.output)
    emit(out, args.json, human(out))
    if out.get("kept", 0) == 0 and result.status == "ran":
        print("no instruction was kept: see the quarantine dataset for why", file=sys.stderr)
    return 0
