"""`judge`: an LLM rates each sample 1-5 with AlpaGasus' prompt (arXiv:2307.08701), through self-instruct's
backends: an OpenAI-compatible endpoint (concurrent requests, retries with backoff on 429/5xx, the key from an
environment variable or a Prefect Secret, never logged) or a local transformers model.

AlpaGasus asks for 0-5 on accuracy with the score on the first line; here 1-5 (`prompt` is any template with
{instruction}, {input} and {response}). The rating is the first number of the answer's first non-empty line,
when it lies in 1-5. Anything else (prose, out of range, an unusable response body) is unparseable: counted
(`judge_unparsed`), kept with its raw text (`judge_raw`, for every row) and a null `judge_rating`, and scored
-1, below every rating. A multi-turn conversation is judged as its turns before the last answer (the
instruction, "Role: text" joined) and that answer. Budgets: the scorer never sends more than
`requests_budget` requests; it stops (bad input) before a batch that would pass it, or once `tokens_budget`
tokens are spent.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY
from tasks.device import RESOLVED_IN_KEY, PrecisionSetting
from tasks.errors import BadInputError
from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring
from tasks.self_instruct.backends import make_backend
from tasks.text import joined_turns, single_turn_parts

UNPARSED_SCORE = -1.0
RATING = re.compile(r"\d+(?:\.\d+)?")
ALPAGASUS_PROMPT = (
    "We would like to request your feedback on the performance of an AI assistant in response to the "
    "instruction and the given input displayed following.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{response}\n\n"
    "Please rate according to the accuracy of the response to the instruction and the input. Each assistant "
    "receives a score on a scale of 1 to 5, where a higher score indicates a higher level of accuracy. Please "
    "first output a single line containing only the score. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias.")


# rows per part: about two minutes for a local 135M judge on 2 CPU cores, seconds for an endpoint. A tokens
# budget spans the whole run, so a run with one is one piece.
PART_ROWS = 128


class JudgeConfig(ScorerConfig):
    scorer: Literal["judge"] = "judge"
    backend: Literal["openai", "local"] = Field("openai", description="an OpenAI-compatible HTTP endpoint, or a "
                                                                      "local transformers model folder")
    base_url: str = Field("https://api.openai.com/v1", description="chat-completions endpoint base URL (openai)")
    model: str = Field("gpt-4o-mini", description="model name (openai) or a local Hugging Face model folder")
    prompt: str = Field(ALPAGASUS_PROMPT, description="the rating prompt: {instruction}, {input}, {response}")
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = Field(256, ge=1, description="completion tokens per rating (the first line is the score)")
    stop: list[str] = Field(default_factory=list, description="stop sequences")
    seed: int = Field(42, description="sampling seed (local backend)")
    api_key_env: str = Field("OPENAI_API_KEY", json_schema_extra=NOT_IN_KEY,
                             description="environment variable holding the API key")
    api_key_secret: str | None = Field(None, json_schema_extra=NOT_IN_KEY,
                                       description="Prefect Secret block holding the API key (put into "
                                                   "api_key_env while the stage runs)")
    request_batch_size: int = Field(5, ge=1, json_schema_extra=NOT_IN_KEY, description="concurrent requests")
    requests_budget: int | None = Field(1000, ge=1, json_schema_extra=NOT_IN_KEY,
                                        description="at most this many requests (one per row; none: no limit)")
    tokens_budget: int | None = Field(None, ge=1, json_schema_extra=NOT_IN_KEY,
                                      description="stop once prompt + completion tokens reach this")
    timeout_s: float = Field(120.0, json_schema_extra=NOT_IN_KEY, description="HTTP timeout per request")
    max_retries: int = Field(5, ge=0, json_schema_extra=NOT_IN_KEY,
                             description="retries on 429, 5xx and connection errors")
    backoff_s: float = Field(1.0, ge=0, json_schema_extra=NOT_IN_KEY,
                             description="first retry wait, doubled each time, unless the server sends Retry-After")
    device: str = Field("auto", json_schema_extra=NOT_IN_KEY, description="local backend: cpu, cuda or auto")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=RESOLVED_IN_KEY,
        description="local backend: auto = bf16 autocast where the GPU or the CPU has bf16 units, else fp32")

    @field_validator("prompt")
    @classmethod
    def _fills(cls, prompt: str) -> str:
        try:
            prompt.format(instruction="", input="", response="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"the prompt may use only {{instruction}}, {{input}} and {{response}} ({exc!r}); "
                             "write other braces twice") from None
        return prompt


def parse_rating(text: str) -> float | None:
    """The first number of the first non-empty line, if it is a rating from 1 to 5."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    found = RATING.search(line)
    value = float(found.group()) if found else None
    return value if value is not None and 1 <= value <= 5 else None


def judge_prompt(template: str, messages: list[dict[str, Any]], meta: str | None) -> str:
    parts = single_turn_parts(messages, meta)
    if parts is None:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        parts = (joined_turns(messages[:last]), "", messages[last]["content"] or "")
    instruction, input_text, response = parts
    return template.format(instruction=instruction, input=input_text, response=response)


def open_judge(inputs: ScorerInputs) -> Scoring:
    p: JudgeConfig = inputs.params
    if p.requests_budget is not None and inputs.rows is not None and inputs.rows > p.requests_budget:
        raise BadInputError(f"{inputs.rows} rows to rate, one request each, but iqs.requests_budget="
                            f"{p.requests_budget}: raise it or score fewer rows", field="iqs.requests_budget")
    backend = make_backend(p, inputs.precision)
    spent = {"judge_requests": 0, "judge_tokens": 0}

    def complete(prompts: list[str]) -> list[Any]:
        answers = []
        for start in range(0, len(prompts), p.request_batch_size):
            batch = prompts[start:start + p.request_batch_size]
            if p.requests_budget is not None and spent["judge_requests"] + len(batch) > p.requests_budget:
                raise BadInputError(f"{spent['judge_requests']} requests sent; the next {len(batch)} would pass "
                                    f"iqs.requests_budget={p.requests_budget}: raise it or score fewer rows",
                                    field="iqs.requests_budget")
            if p.tokens_budget is not None and spent["judge_tokens"] >= p.tokens_budget:
                raise BadInputError(f"{spent['judge_tokens']} tokens spent, iqs.tokens_budget={p.tokens_budget}: "
                                    "raise it or score fewer rows", field="iqs.tokens_budget")
            done = backend.complete(batch)
            spent["judge_requests"] += len(batch)
            spent["judge_tokens"] += sum(c.prompt_tokens + c.completion_tokens for c in done)
            answers += done
        return answers

    def score(rows: pa.Table) -> Scores:
        retries_before = backend.retries
        prompts = [judge_prompt(p.prompt, r["messages"], r["meta"])
                   for r in rows.select(["messages", "meta"]).to_pylist()]
        answers = complete(prompts)
        ratings = [None if c.error else parse_rating(c.text) for c in answers]
        values = np.array([UNPARSED_SCORE if r is None else r for r in ratings], np.float64)
        return Scores(values, columns={"judge_rating": pa.array(ratings, pa.float64()),
                                       "judge_raw": pa.array([c.error or c.text for c in answers], pa.string())},
                      counts={"judge_unparsed": sum(r is None for r in ratings), "judge_requests": len(answers),
                              "judge_retries": backend.retries - retries_before,
                              "judge_tokens": sum(c.prompt_tokens + c.completion_tokens for c in answers)})

    return Scoring(score, model=f"{backend.name} {backend.model}")


SCORER = Scorer("judge", JudgeConfig, open_judge,
                part_rows=lambda p: PART_ROWS if p.tokens_budget is None else None,
                precision=lambda p: p.precision if p.backend == "local" else None,
                description="an LLM rates each sample 1-5 (AlpaGasus' prompt) through an endpoint or a local model")
