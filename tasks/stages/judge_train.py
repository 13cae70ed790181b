"""`judge.train`: the model a judge reads, trained once as a store artifact: the reward judge's Bradley-Terry model
on AlpacaEval's public GPT-4 verdicts (tasks/scorers/reward.py), with its report card. Keyed on the verdict files'
content and the training settings."""
from __future__ import annotations

from typing import Any

from storage.stage import Call, Stage, StageContext, StageOutput
from tasks import judges
from tasks.errors import BadInputError


def trains(params: Any) -> bool:
    return judges.get(params.judge).train is not None


def plan(config: Any) -> list[Call]:
    params = config.judge
    return [Call(params)] if trains(params) and not getattr(params, "model", None) else []


def fingerprint(params: Any) -> dict[str, Any]:
    """The verdict files' checksums."""
    return params.input_checksums() if hasattr(params, "input_checksums") else {}


def build(ctx: StageContext) -> StageOutput:
    if not trains(ctx.params):
        raise BadInputError(f"judge {ctx.params.judge!r} has no model to train", field="judge.judge")
    return judges.get(ctx.params.judge).train(ctx)


STAGE = Stage("judge.train", "1", build, params=judges.section_type(), section="judge", output="judge_model",
              tags=("model",), fingerprint=fingerprint, plan=plan,
              description="train the model a judge reads: the reward model on public GPT-4 verdicts")
