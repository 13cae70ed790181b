"""The judge protocol: what a judge of answers declares, and what the `judge` stage gives it and takes back.

A judge compares two answers to the same prompt: `compare(prompts, first, second)` returns, per prompt, the
probability that the first answer is better and the verdict (1 the first, 0 the second, 0.5 a tie). A judge
that scores each answer alone (a reward model) gives both scores; one that reads both answers (an LLM) asks
in both orders and calls it a tie when the orders disagree. A comparison that fails (the endpoint refused or
timed out after its retries) fails the step, never counts as a loss or a tie; one the judge could not decide
(an LLM's reply names neither answer) is left out of the rates and counted.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.params import Section
from storage.store import DatasetRef, Store
from tasks.device import Precision


class JudgeConfig(Section):
    judge: str


@dataclass
class Verdicts:
    p_first: np.ndarray  # the probability that the first answer is better (nan: undecided)
    verdict: np.ndarray  # 1.0 the first, 0.0 the second, 0.5 a tie, nan undecided
    score_first: np.ndarray | None = None  # a reward judge's scores
    score_second: np.ndarray | None = None
    consistent: np.ndarray | None = None  # an order-swapping judge: both orders agreed
    detail: list[str] = field(default_factory=list)  # what the judge said, per prompt (LLM replies)


@dataclass
class Comparing:
    compare: Callable[[list[str], list[str], list[str]], Verdicts]  # prompts, first answers, second answers
    description: str  # which judge, which model
    facts: dict[str, Any] = field(default_factory=dict)  # its report card, what it cost


@dataclass(frozen=True)
class JudgeInputs:
    store: Store
    params: Any
    judge_model: DatasetRef | None = None  # a trained reward model (judge.train), for the judges that read one
    precision: Precision | None = None  # a local model's, as the plan resolved it
    scratch: Any = None  # the step's scratch folder: a judge that calls an endpoint caches every verdict there


@dataclass(frozen=True)
class Judge:
    name: str
    config: type[JudgeConfig]
    open: Callable[[JudgeInputs], Comparing]
    description: str = ""
    # the judge.train build of a judge that reads a trained model (judge_model); None: it reads none
    train: Callable[[Any], Any] | None = None
    # the precision setting of a local model, None where none runs (tasks/device.py)
    precision: Callable[[Any], str | None] = lambda params: None
    # what can be checked before anything runs (an endpoint's key in the environment); raises BadInputError
    check: Callable[[Any], None] = lambda params: None
