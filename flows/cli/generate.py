"""`sftflow generate --model REF --prompt TEXT [--prompts FILE] [--no-adapter] [--json]`.

REF is a train artifact's store key (or a unique prefix), a base_model key, or a local model folder. Answers
use the chat template saved with the model, so `--no-adapter` shows the base model in the same format.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="answer prompts with a trained model (or its base, --no-adapter)")
    parser.add_argument("--model", required=True, metavar="REF", help="train/base_model store key, or a folder")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line")
    parser.add_argument("--system", help="a system prompt (default: the one training used, if any)")
    parser.add_argument("--no-adapter", action="store_true", help="the base model, same template")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast where the GPU or the CPU has bf16 units, else fp32")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def read_prompts(args: argparse.Namespace) -> list[str]:
    from tasks.errors import BadInputError

    prompts = list(args.prompt)
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise BadInputError("prompts file not found", file=str(path), field="--prompts")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise BadInputError("give --prompt TEXT or --prompts FILE", field="--prompt")
    return prompts


def handle(args: argparse.Namespace) -> int:
    from storage.store import Store
    from tasks.calibrate import measured
    from tasks.device import pick_device, resolve_precision
    from tasks.generate import answer, load_model

    prompts = read_prompts(args)
    precision = resolve_precision(args.precision, pick_device("auto"), field="--precision",
                                  measure=measured("lm-inference"))
    loaded = load_model(Store(args.store), args.model, adapter=not args.no_adapter)
    system = args.system if args.system is not None else loaded.system
    answers = answer(loaded.model, loaded.tokenizer, prompts, system=system, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, precision=precision)
    text = "\n\n".join(f"> {a['prompt']}\n{a['answer']}" for a in answers)
    emit({"model": loaded.description, "adapter": loaded.adapter, "answers": answers}, args.json,
         f"# {loaded.description}\n\n{text}")
    return 0
