"""`judge`: two answer sets to the same prompts (generate's outputs), compared prompt by prompt by a judge
(tasks/judges/): the bundled reward model, an OpenAI-compatible endpoint, or a Hugging Face reward model.

Output: one row per prompt with both answers, their lengths, the judge's scores (a reward judge), the
probability that the first is better, the verdict (1 the first, 0 the second, 0.5 a tie, null undecided) and
whether both orders agreed (an order-swapping judge). Stats: the first set's win rate against the second
(ties count half), CaR's winning score (wins - losses) / n + 1, mean answer lengths, and the judge's report card
(a trained judge's agreement with GPT-4 on prompts it never trained on). Two sets answering different prompts
are bad input before any judging. Runs in row-range parts: an endpoint judge's cut run resumes from its parts
and its cached replies.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from storage.stage import Stage, StageContext, StageOutput, concat_parts
from storage.store import DatasetRef, Store, row_range
from tasks import judges
from tasks.calibrate import measured
from tasks.device import PrecisionUse
from tasks.errors import BadInputError
from tasks.judges.base import JudgeInputs

VERDICT_SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("prompt", pa.string()), ("first", pa.string()), ("second", pa.string()),
    ("first_chars", pa.int64()), ("second_chars", pa.int64()), ("first_score", pa.float64()),
    ("second_score", pa.float64()), ("p_first", pa.float64()), ("verdict", pa.float64()),
    ("consistent", pa.bool_()), ("detail", pa.string())])
SHOWN = 5  # side-by-side answers in the report


def precision_use(params: Any) -> PrecisionUse:
    return PrecisionUse(judges.get(params.judge).precision, "judge.precision", measure=measured("lm-inference"))


def reads(params: Any) -> frozenset[str]:
    return frozenset({"judge_model"}) if judges.get(params.judge).train is not None else frozenset()


def answer_rows(store: Store, key: str) -> tuple[dict[str, tuple[str, str]], str | None]:
    """prompt id → (prompt, answer) of a generate output, and the prompts dataset it answered."""
    table = store.read_table(key, columns=["prompt_id", "messages"])
    rows = {}
    for prompt_id, messages in zip(table.column("prompt_id").to_pylist(), table.column("messages").to_pylist()):
        prompt = next((m["content"] for m in messages if m["role"] == "user"), "")
        answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        rows[prompt_id] = (prompt, answer)
    return rows, store.manifest(key).get("stats", {}).get("prompts")


def build(ctx: StageContext, answers: DatasetRef, baseline: DatasetRef,
          judge_model: DatasetRef | None = None) -> StageOutput:
    params, store = ctx.params, ctx.store
    judge = judges.get(params.judge)
    first, first_prompts = answer_rows(store, answers.key)
    second, second_prompts = answer_rows(store, baseline.key)
    if first_prompts != second_prompts or first.keys() != second.keys():
        raise BadInputError(f"{answers.key} and {baseline.key} answer different prompts ({first_prompts} and "
                            f"{second_prompts}): a judge compares two answers to the same prompt", field="baseline")
    if judge.train is not None and judge_model is None:
        raise BadInputError(f"the {params.judge} judge reads a trained model: judge.train makes it, or give "
                            "judge.model", field="judge_model")
    ids = sorted(first)
    start, stop = row_range(len(ids), ctx.shard)
    ids = ids[start:stop]
    use = precision_use(params)
    precision = use.planned(params, ctx.fingerprint) if use.setting(params) is not None else None
    comparing = judge.open(JudgeInputs(store, params, judge_model, precision, ctx.scratch))
    prompts = [first[i][0] for i in ids]
    a, b = [first[i][1] for i in ids], [second[i][1] for i in ids]
    advance = ctx.progress(len(ids), f"judge ({params.judge})")
    verdicts = comparing.compare(prompts, a, b)
    advance(len(ids))
    n = len(ids)
    table = pa.table({
        "prompt_id": ids, "prompt": prompts, "first": a, "second": b,
        "first_chars": [len(t) for t in a], "second_chars": [len(t) for t in b],
        "first_score": _column(verdicts.score_first, n), "second_score": _column(verdicts.score_second, n),
        "p_first": _column(verdicts.p_first, n), "verdict": _column(verdicts.verdict, n),
        "consistent": pa.array(verdicts.consistent.tolist() if verdicts.consistent is not None else [None] * n,
                               pa.bool_()),
        "detail": verdicts.detail or [None] * n}, schema=VERDICT_SCHEMA)
    facts = {"judge": params.judge, "judged_by": comparing.description, "answers": answers.key,
             "baseline": baseline.key, "prompts": first_prompts, **comparing.facts}
    return StageOutput(table=table, stats={**facts, **summary(table)},
                       report=None if ctx.shard else report_markdown(table, facts))


def _column(values: np.ndarray | None, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.float64())
    return pa.array([None if np.isnan(v) else float(v) for v in np.asarray(values, np.float64)], pa.float64())


def summary(table: pa.Table) -> dict[str, Any]:
    """Win rate of the first set (ties half), wins, losses, ties, undecided, CaR's winning score, lengths."""
    verdict = np.asarray([np.nan if v is None else v for v in table.column("verdict").to_pylist()], np.float64)
    decided = verdict[~np.isnan(verdict)]
    wins, losses = int((decided == 1).sum()), int((decided == 0).sum())
    consistent = [c for c in table.column("consistent").to_pylist() if c is not None]
    n = len(decided)
    return {"rows": table.num_rows, "decided": n, "undecided": table.num_rows - n, "wins": wins, "losses": losses,
            "ties": n - wins - losses, "win_rate": round(float(decided.mean()), 4) if n else None,
            "winning_score": round((wins - losses) / n + 1, 4) if n else None,
            "first_mean_chars": round(float(np.mean(table.column("first_chars").to_numpy())), 1) if n else None,
            "second_mean_chars": round(float(np.mean(table.column("second_chars").to_numpy())), 1) if n else None,
            "order_consistency": round(sum(consistent) / len(consistent), 4) if consistent else None}


def gather(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    output = concat_parts(ctx, **part)
    table = pa.concat_tables([ctx.store.read_table(part[name].key) for name in sorted(part)])
    first = ctx.store.manifest(part[sorted(part)[0]].key)["stats"]
    facts = {k: first[k] for k in ("judge", "judged_by", "answers", "baseline", "prompts", "card") if k in first}
    return StageOutput(table=output.table, stats={**facts, **summary(table)}, report=report_markdown(table, facts))


def report_markdown(table: pa.Table, facts: dict[str, Any]) -> str:
    found = summary(table)
    lines = [f"# judge: `{facts['answers']}` against `{facts['baseline']}`", "",
             f"Judged by {facts['judged_by']}.", "",
             f"Win rate of the first set: **{_pct(found['win_rate'])}** over {found['decided']} prompts "
             f"({found['wins']} wins, {found['losses']} losses, {found['ties']} ties; ties count half"
             + (f"; {found['undecided']} undecided, left out" if found["undecided"] else "") + "); CaR's winning "
             f"score {found['winning_score']}. Mean answer length {found['first_mean_chars']} against "
             f"{found['second_mean_chars']} characters."]
    if found["order_consistency"] is not None:
        lines += ["", f"Verdicts that survived swapping the order: {_pct(found['order_consistency'])}."]
    for annotator, card in (facts.get("card") or {}).items():
        lines += ["", f"Report card on {annotator.rsplit('/', 1)[-1]} ({card['pairs']:,} pairs of prompts it "
                      f"never trained on): agreement {_pct(card['agreement'])}, the longer answer wins "
                      f"{_pct(card['longer_wins'])}, the first answer wins {_pct(card['first_wins'])}."]
    rows = table.slice(0, SHOWN).to_pylist()
    if rows:
        lines += ["", "## Side by side", ""]
        for row in rows:
            lines += [f"**{_short(row['prompt'], 200)}**", "", f"- first: {_short(row['first'], 400)}",
                      f"- second: {_short(row['second'], 400)}", f"- verdict: {row['verdict']}", ""]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _short(text: str, limit: int) -> str:
    flat = " ".join((text or "").split())
    return (flat[:limit] + "…") if len(flat) > limit else flat or "(empty)"


STAGE = Stage("judge", "1", build, params=judges.section_type(), section="judge", output="verdicts",
              tags=("model",), plan=lambda config: [], reads=reads, shard_input="answers", gather=gather,
              part_rows=lambda p: 256, fingerprint=lambda p: precision_use(p).key(p),
              description="two answer sets to the same prompts compared by a judge: win rate, report card")
