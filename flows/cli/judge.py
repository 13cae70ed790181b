"""`sftflow judge --validate FILE [--judge NAME] [--model KEY] [--config YAML] [--set judge.FIELD=V]... [--json]`:
a judge's report card against public verdicts: its agreement with the annotator on the decisive pairs of FILE
(AlpacaEval's layout: prompts by id, or an `instruction` field), beside "the longer answer wins" and "the first
answer wins", counting only prompts the judge never trained on (`--all-prompts`: every prompt).
`sftflow judge ANSWERS BASELINE`: two answer sets of the store (generate outputs) compared by the judge."""
from __future__ import annotations

import argparse
from typing import Any

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("judge", help="a judge's report card against public GPT-4 verdicts (--validate), or two "
                                          "answer sets of the store compared")
    parser.add_argument("answers", nargs="*", metavar="KEY", help="ANSWERS BASELINE: two generate outputs")
    parser.add_argument("--validate", metavar="FILE", help="verdicts in AlpacaEval's layout to validate against")
    parser.add_argument("--judge", help="reward (default), openai, hf_reward")
    parser.add_argument("--model", metavar="KEY", help="the reward judge's trained model (default: trained as the "
                                                       "config's judge section says, or found in the store)")
    parser.add_argument("--prompts", metavar="FILE", help="the prompts by id, when the verdicts carry none "
                                                          "(default: AlpacaEval's prompt set)")
    parser.add_argument("--all-prompts", action="store_true",
                        help="also the prompts the judge trained on (by default they are left out)")
    parser.add_argument("--config", metavar="YAML", help="pipeline YAML whose judge section to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--store", help="store URL (default: $SFTFLOW_HOME/store)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def judge_config(config: Any, name: str | None) -> Any:
    """The config's judge section, switched to `name` (its defaults) when that is another judge."""
    from tasks import judges

    if name is None or name == config.judge.judge:
        return config.judge
    return judges.parse_config({"judge": name})


def trained_model(store: Any, params: Any, key: str | None) -> str | None:
    """The judge's model: `key`, else judge.train's output for these parameters (trained now if need be)."""
    from flows.plan import run_alone
    from tasks import judges
    from tasks.stages import get

    if judges.get(params.judge).train is None:
        return None
    if key:
        from flows.cli.export import resolve

        return resolve(store, key)
    return run_alone(get("judge.train"), params, {}, store).ref.key


def handle(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from storage.store import Store
    from tasks.errors import BadInputError

    config = load_config(args.config, args.overrides)
    store = Store(args.store or config.store)
    params = judge_config(config, args.judge)
    if args.validate:
        result = validate(store, params, args.validate, args.model, args.prompts, args.all_prompts)
        emit(result, args.json, card_text(result))
        return 0
    if len(args.answers) != 2:
        raise BadInputError("give two answer sets (ANSWERS BASELINE: generate outputs of the store), or --validate "
                            "FILE", field="KEY")
    from flows.plan import run_alone
    from tasks.stages import get

    inputs = {"answers": args.answers[0], "baseline": args.answers[1]}
    model = trained_model(store, params, args.model)
    if model:
        inputs["judge_model"] = model
    result = run_alone(get("judge"), params, inputs, store)
    stats = result.stats
    emit({"key": result.ref.key, "status": result.status, **stats}, args.json,
         f"{args.answers[0]} against {args.answers[1]}: win rate {stats['win_rate']} ({stats['wins']} wins, "
         f"{stats['ties']} ties, {stats['losses']} losses); judged by {stats['judged_by']}\nverdicts: "
         f"{result.ref.key}")
    return 0


def validate(store: Any, params: Any, path: str, model: str | None, prompts: str | None,
             all_prompts: bool) -> dict[str, Any]:
    """The report card of the judge `params` on the decisive pairs of a verdict file."""
    import numpy as np

    from tasks import judges
    from tasks.judges.base import JudgeInputs
    from tasks.judges.reward import bundled_prompts
    from tasks.scorers.reward import read_model
    from tasks.verdicts import agreement_of, decisive_pairs, read_answers, report_card

    answers = read_answers(path, prompts or bundled_prompts())
    key = trained_model(store, params, model)
    trained_on = read_model(store, key).trained_on if key else (lambda prompt_id: False)
    pairs = decisive_pairs(answers, path, keep=(lambda i: True) if all_prompts else (lambda i: not trained_on(i)))
    comparing = judges.get(params.judge).open(JudgeInputs(store, params, store.ref(key) if key else None))
    verdicts = comparing.compare([p.first.instruction for p in pairs], [p.first.text for p in pairs],
                                 [p.second.text for p in pairs]) if pairs else None
    card = report_card(pairs, None)
    consistent = verdicts.consistent if verdicts is not None else None
    return {"file": path, "judge": params.judge, "judged_by": comparing.description, "judge_model": key,
            "prompts": "every prompt" if all_prompts else "prompts the judge never trained on",
            "pairs": card["pairs"], "agreement": agreement_of(pairs, verdicts.verdict) if pairs else None,
            "longer_wins": card["longer_wins"], "first_wins": card["first_wins"],
            "order_consistency": None if consistent is None else round(float(np.mean(consistent)), 4)}


def card_text(result: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    return (f"{result['judged_by']} on {result['pairs']:,} decisive pairs of {result['file']} "
            f"({result['prompts']}): agreement {pct(result['agreement'])}; the longer answer wins "
            f"{pct(result['longer_wins'])}; the first answer wins {pct(result['first_wins'])}"
            + (f"; verdicts surviving a swap of order {pct(result['order_consistency'])}"
               if result["order_consistency"] is not None else ""))
