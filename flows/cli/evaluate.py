"""`sftflow evaluate --model KEY [--against KEY|base] [--prompts SET,...] [--judge NAME] [--config YAML]
[--set k=v]... [--json]`: a trained adapter's answers judged against another adapter's or its base model's, on
prompt sets (AlpacaEval's 805 by default): both answer sets generated in the chat template the adapter was
trained with, then compared by the judge (the bundled reward judge, trained once on public GPT-4 verdicts).
Every step is cached in the store; the judge's report card is printed beside the win rate."""
from __future__ import annotations

import argparse
from typing import Any

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="judge a trained adapter's answers against another's or its base "
                                             "model's, with win rates and the judge's report card")
    parser.add_argument("--model", required=True, metavar="KEY", help="a train output (or a unique prefix)")
    parser.add_argument("--against", default="base", metavar="KEY",
                        help="another train output, or `base`: the base model alone (default)")
    parser.add_argument("--prompts", default="alpacaeval", metavar="SET,...",
                        help="named prompt sets (alpacaeval, vicuna, koala, wizardlm, sinstruct, lima) or files")
    parser.add_argument("--judge", help="reward (default), openai, hf_reward")
    parser.add_argument("--config", metavar="YAML", help="pipeline YAML whose generate and judge sections to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. --set generate.max_new_tokens=128 --set judge.base_url=http://127.0.0.1:8080/v1")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def evaluation_plan(store: Any, config: Any, model: str, against: str) -> tuple[Any, list[tuple[str, Any]]]:
    """The plan (prompt sets, both answer sets, the judge's model, the judge steps) and its judge steps by set."""
    from flows.cli.judge import judge_config
    from flows.plan import Plan
    from tasks import judges
    from tasks.artifacts import Adapter
    from tasks.errors import BadInputError
    from tasks.generate import resolve_key
    from tasks.stages import get
    from tasks.stages.generate import params_of

    def model_inputs(reference: str) -> tuple[dict[str, str], Any]:
        key = resolve_key(store, reference)
        if store.manifest(key)["stage"] != "train":
            raise BadInputError(f"{key} is a {store.manifest(key)['stage']} output, not a trained adapter",
                                field="--model")
        trained = Adapter.read(store, key)
        return {"adapter": key, "base_model": trained.base_model}, trained.tokenized

    first, data = model_inputs(model)
    second = {"base_model": first["base_model"]} if against == "base" else model_inputs(against)[0]
    rendering = config.model_copy(update={"format": config.format.model_copy(update={
        "template": data.template, "system": data.system})})  # the adapter answers as it was trained
    params = params_of(rendering)
    plan = Plan(store, memory_gb=config.resources.memory_gb)
    judge = judge_config(config, None)
    judges.get(judge.judge).check(judge)
    trained = plan.add(get("judge.train"), judge) if get("judge.train").plan(config) else getattr(judge, "model", None)
    judged = []
    for entry in config.generate.prompts:
        prompts = plan.add(get("prompts"), entry, label=f"prompts[{entry.label}]")
        answers = [plan.add(get("generate"), params, {"prompts": prompts, **inputs},
                            label=f"generate[{name}/{entry.label}]") for name, inputs in (("model", first),
                                                                                         ("against", second))]
        step = plan.add(get("judge"), judge, {"answers": answers[0], "baseline": answers[1],
                                              **({"judge_model": trained} if trained else {})},
                        label=f"judge[{entry.label}]")
        judged.append((entry.label, step))
    return plan.compute_keys(), judged


def handle(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.plan import run_in_order
    from storage.store import Store

    prompts = ",".join(s.strip() for s in args.prompts.split(",") if s.strip())
    overrides = [f"generate.prompts=[{prompts}]", *([f"judge.judge={args.judge}"] if args.judge else []),
                 *args.overrides]
    config = load_config(args.config, overrides)
    store = Store(args.store or config.store)
    plan, judged = evaluation_plan(store, config, args.model, args.against)
    results = run_in_order(plan)
    sets = []
    for name, step in judged:
        stats = results[step.label].stats
        sets.append({"prompt_set": name, "key": step.key, **{k: stats.get(k) for k in (
            "win_rate", "winning_score", "wins", "ties", "losses", "undecided", "first_mean_chars",
            "second_mean_chars", "judged_by", "card", "order_consistency")}})
    report = {"model": args.model, "against": args.against, "sets": sets}
    lines = [f"{args.model} against {args.against}:"]
    for row in sets:
        lines.append(f"  {row['prompt_set']}: win rate {row['win_rate']} ({row['wins']} wins, {row['ties']} ties, "
                     f"{row['losses']} losses), mean length {row['first_mean_chars']} against "
                     f"{row['second_mean_chars']} characters; verdicts {row['key']}")
    if sets:
        lines.append(f"judged by {sets[0]['judged_by']}")
        for annotator, card in (sets[0]["card"] or {}).items():
            lines.append(f"  report card on {annotator.rsplit('/', 1)[-1]}: agreement {card['agreement']}, the "
                         f"longer answer wins {card['longer_wins']}, the first answer wins {card['first_wins']} "
                         f"({card['pairs']} pairs of prompts it never trained on)")
    emit(report, args.json, "\n".join(lines))
    return 0
