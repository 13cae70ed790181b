"""`sftflow ablate CONFIG [--budget N] [--selectors car,random,car:probe,...] [--seeds S] [--learning-rates R,...]
[--set k=v]... [--from STAGE] [--plan] [--json]`: the selection-ablation flow (flows/ablation.py)."""
from __future__ import annotations

import argparse

from flows.cli.output import emit, format_table
from flows.cli.run import COLUMNS


def register(sub: argparse._SubParsersAction) -> None:
    from flows.ablation import DEFAULT_SEEDS, DEFAULT_SELECTORS

    parser = sub.add_parser("ablate", help="did the selection help? every selector x seed trained and evaluated "
                                           "against random on held-out rows")
    parser.add_argument("config", help="pipeline YAML (its eval section names the held-out rows and sets)")
    parser.add_argument("--budget", type=int, help="rows every selector selects (default: select.budget, else "
                                                   "train.max_steps x batch_size x grad_accumulation)")
    parser.add_argument("--selectors", default=",".join(DEFAULT_SELECTORS),
                        help=f"comma-separated, must include random (default: {','.join(DEFAULT_SELECTORS)}); "
                             "NAME:SCORER runs a selector's rule on another scorer, e.g. car:probe; "
                             "NAME@tokens=N under a token budget instead of rows, NAME@tokens=ARM as many tokens "
                             "as another arm's selection, e.g. random@tokens=car")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="training seeds (and random samples)")
    parser.add_argument("--learning-rates", type=learning_rates, metavar="R,...",
                        help="train every selector at each of these learning rates, each compared with random at "
                             "the same rate (default: train.learning_rate)")
    parser.add_argument("--prompts", metavar="SET,...",
                        help="also answer these prompt sets with every adapter and the base model and judge each arm's "
                             "answers against random's: named sets (alpacaeval, vicuna, koala, wizardlm, sinstruct, "
                             "lima) or files")
    parser.add_argument("--judge", help="the judge of those answers: reward (default: trained once on AlpacaEval's "
                                        "GPT-4 verdicts), openai (an endpoint: --set judge.base_url=...), hf_reward")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.holdout_rows=100 (repeatable)")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE",
                        help="force this stage and every stage that reads its output to run again")
    parser.add_argument("--plan", action="store_true",
                        help="print the steps the run would execute (keys, inputs, cached or to run); run nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def learning_rates(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, e.g. 2e-4,6.7e-5 (got {text!r})") from None


def handle(args: argparse.Namespace) -> int:
    import sys

    from flows.ablation import grid, run_ablation
    from flows.config import load_config
    from flows.execute import PipelineFailed

    judging = [*([f"generate.prompts=[{args.prompts}]"] if args.prompts else []),
               *([f"judge.judge={args.judge}"] if args.judge else [])]
    config = load_config(args.config, judging + args.overrides)
    arms = grid([s.strip() for s in args.selectors.split(",") if s.strip()], args.seeds, args.learning_rates)
    if args.plan:
        from flows.ablation import ablation_plan, selection_ablation
        from flows.runner import describe, normalized, plan_text

        description = describe(ablation_plan(normalized(config), args.budget, arms=arms).plan, selection_ablation.name)
        emit(description, args.json, plan_text(description))
        return 0
    try:
        result = run_ablation(config, args.budget, arms, args.from_stage)
    except PipelineFailed as exc:
        failures = "".join(f"\n{row['stage']} failed: {row['error']}" for row in exc.report["stages"] if row["error"])
        emit(exc.report, args.json, format_table(exc.report["stages"], COLUMNS) + failures)
        print("ablation failed; fix the cause and run again: finished steps come back from the store",
              file=sys.stderr)
        return 1
    report = result["report"]
    emit(result, args.json, format_table(result["stages"], COLUMNS) + f"\n\n{report['sentence']}\n\nreport: "
         f"{report['files']['report.md']}")
    return 0
