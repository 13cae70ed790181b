"""`reward` (the default judge): the reward model sftflow trains on AlpacaEval's public GPT-4 verdicts
(tasks/scorers/reward.py), trained once as a store artifact by `judge.train`. It scores each answer alone; the
probability that one beats the other is the logistic of their score difference, and its report card (agreement
with GPT-4-turbo and GPT-4 on prompts it never trained on) comes with every comparison."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from tasks.judges.base import Comparing, Judge, JudgeInputs, Verdicts
from tasks.prompts import PROMPT_SETS, PROMPT_SETS_ENV
from tasks.scorers.reward import RewardConfig, features_of, read_model, train

ANNOTATIONS = ("alpacaeval/gpt4_turbo_preferences.jsonl.gz", "alpacaeval/gpt4_preferences_vs_davinci003.jsonl.gz")


def bundled_verdicts() -> list[str]:
    """AlpacaEval's annotations (GPT-4-turbo's, GPT-4's against text-davinci-003) where $SFTFLOW_PROMPT_SETS
    holds them."""
    folder = os.environ.get(PROMPT_SETS_ENV)
    found = [str(Path(folder) / name) for name in ANNOTATIONS] if folder else []
    return [path for path in found if Path(path).is_file()]


def bundled_prompts() -> str | None:
    location = PROMPT_SETS["alpacaeval"].location()
    return location if Path(location).is_file() else None


class RewardJudgeConfig(RewardConfig):
    judge: Literal["reward"] = "reward"
    verdicts: list[str] = Field(default_factory=bundled_verdicts, description=RewardConfig.model_fields[
        "verdicts"].description + "; empty: AlpacaEval's two annotation files under $SFTFLOW_PROMPT_SETS")
    prompts: str | None = Field(default_factory=bundled_prompts,
                                description="the prompts by id; empty: AlpacaEval's prompts (prompt set alpacaeval)")


def open_judge(inputs: JudgeInputs) -> Comparing:
    model = read_model(inputs.store, inputs.judge_model.key)

    def compare(prompts: list[str], first: list[str], second: list[str]) -> Verdicts:
        a = model.scores(features_of(prompts, first, model.features))
        b = model.scores(features_of(prompts, second, model.features))
        return Verdicts(1 / (1 + np.exp(-(a - b))), np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5)), a, b)

    return Comparing(compare, f"reward model {inputs.judge_model.key} ({model.features} features)",
                     {"card": model.card, "judge_model": inputs.judge_model.key})


JUDGE = Judge("reward", RewardJudgeConfig, open_judge, train=train,
              description="a reward model trained on AlpacaEval's GPT-4 verdicts (the bundled default)")
