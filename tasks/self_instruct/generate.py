"""Alpaca's generation loop: sample seed tasks into a prompt, ask the backend, parse, filter, de-duplicate,
until enough instructions are kept or a budget (requests, tokens) is spent."""
from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.self_instruct.backends import Backend
from tasks.self_instruct.parse import parse_response
from tasks.self_instruct.prompt import Task, encode_prompt
from tasks.self_instruct.rouge import RougeDeduplicator

log = logging.getLogger("sftflow.self_instruct")


@dataclass(frozen=True)
class Settings:
    num_instructions: int = 100
    num_prompt_instructions: int = 3
    request_batch_size: int = 5
    similarity_threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    requests_budget: int | None = 200
    tokens_budget: int | None = None
    seed: int = 42


@dataclass(frozen=True)
class Outcome:
    """One generated task (kept, or dropped with `reason`) and where it came from."""

    reason: str | None  # None: kept
    text: str  # the instruction, or the raw text when it did not parse
    task: Task | None
    request: int
    seed_task_ids: tuple[str, ...]
    max_rouge_l: float | None = None
    most_similar: str | None = None


@dataclass
class GenerationResult:
    kept: list[Outcome] = field(default_factory=list)
    dropped: list[Outcome] = field(default_factory=list)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    stop_reason: str = ""

    def counts(self) -> dict[str, Any]:
        dropped = Counter(o.reason for o in self.dropped)
        return {
            "requests": self.requests,
            "generated": len(self.kept) + len(self.dropped) - dropped["bad_response"],
            "kept": len(self.kept),
            "dropped": dict(sorted(dropped.items())),
            "duplicates": dropped["duplicate"],
            "bad_responses": dropped["bad_response"],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "stop_reason": self.stop_reason,
        }


def _budget_spent(settings: Settings, result: GenerationResult) -> str | None:
    if settings.requests_budget is not None and result.requests >= settings.requests_budget:
        return "requests_budget"
    if settings.tokens_budget is not None and result.prompt_tokens + result.completion_tokens >= settings.tokens_budget:
        return "tokens_budget"
    return None


def generate_instructions(seed_tasks: list[Task], requirements: str, backend: Backend, settings: Settings,
                          advance: Callable[[int], None] | None = None) -> GenerationResult:
    """Kept tasks are de-duplicated against the seed instructions and every task kept before them.

    Budgets are checked before each batch of requests, so the last batch may pass the token budget by at most
    one batch; the request budget is never exceeded. The last batch may keep a few more than asked for."""
    rng = random.Random(settings.seed)
    pool = RougeDeduplicator([t.instruction for t in seed_tasks], settings.similarity_threshold)
    result = GenerationResult()
    k = min(settings.num_prompt_instructions, len(seed_tasks))
    while len(result.kept) < settings.num_instructions:
        spent = _budget_spent(settings, result)
        if spent:
            result.stop_reason = spent
            break
        size = settings.request_batch_size
        if settings.requests_budget is not None:
            size = min(size, settings.requests_budget - result.requests)
        samples = [rng.sample(seed_tasks, k) for _ in range(size)]
        completions = backend.complete([encode_prompt(requirements, s) for s in samples])
        before = len(result.kept)
        for offset, (sample, completion) in enumerate(zip(samples, completions)):
            request, ids = result.requests + offset, tuple(t.id or "" for t in sample)
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            if completion.error is not None:
                result.dropped.append(Outcome("bad_response", completion.error, None, request, ids))
                continue
            tasks, drops = parse_response(completion.text, k, completion.finish_reason, settings.min_words,
                                          settings.max_words)
            result.dropped += [Outcome(d.reason, d.text, d.task, request, ids) for d in drops]
            for task, verdict in zip(tasks, pool.add([t.instruction for t in tasks])):
                outcome = Outcome(None if verdict.kept else "duplicate", task.instruction, task, request, ids,
                                  verdict.max_rouge_l, verdict.most_similar)
                (result.kept if verdict.kept else result.dropped).append(outcome)
        result.requests += size
        result.retries = backend.retries
        if advance:
            advance(len(result.kept) - before)
        log.info("self-instruct: %d requests, %d kept, %d dropped", result.requests, len(result.kept),
                 len(result.dropped))
    else:
        result.stop_reason = "done"
    return result
