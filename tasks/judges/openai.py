"""`openai`: an OpenAI-compatible chat endpoint as a pairwise judge (OpenAI, vLLM, Ollama, a llama.cpp server),
in AlpacaEval 2.0's wording (its `alpaca_eval_clf_gpt4_turbo` annotator: the instruction, two outputs labelled
`m` and `M`, reply with the identifier of the better one). Every pair is asked in both orders; the orders
agreeing give the verdict, disagreeing a tie (and the share that agreed is reported). The key comes from an
environment variable (or a Prefect Secret) and never reaches a log, an error or the store. Every reply is
cached in the step's scratch folder as it arrives, so a run cut short asks only what it had not asked.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from storage.params import NOT_IN_KEY
from tasks.judges.base import Comparing, Judge, JudgeConfig, JudgeInputs, Verdicts

SYSTEM = ("You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) "
          "based on the quality of their responses to a given instruction. This process will be used to create a "
          "leaderboard reflecting the most accurate and human-preferred answers.")
TEMPLATE = """I require a leaderboard for various large language models. I'll provide you with prompts given to \
these models and their corresponding outputs. Your task is to assess these responses, and select the model that \
produces the best output from a human perspective.

## Instruction

{{
    "instruction": \"\"\"{instruction}\"\"\",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a \
unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": \"\"\"{output_m}\"\"\"
    }},
    {{
        "model_identifier": "M",
        "output": \"\"\"{output_big_m}\"\"\"
    }}
}}

## Task

Evaluate the models on the basis of the quality and relevance of their results, and select the model that \
generated the best result. Reply with the identifier of the best model. Our evaluation will only take into \
account the first character of your answer, so make sure it contains only one of the identifiers and nothing \
else (no quotation marks, no spaces, no new lines, ...).
"""
CACHE_FILE = "verdicts.jsonl"


class OpenAIJudgeConfig(JudgeConfig):
    judge: Literal["openai"] = "openai"
    base_url: str = Field("https://api.openai.com/v1", description="an OpenAI-compatible endpoint (vLLM, Ollama, "
                                                                   "a llama.cpp server: http://127.0.0.1:8080/v1)")
    model: str = Field("gpt-4-turbo", description="the judge model's name at the endpoint")
    api_key_env: str = Field("OPENAI_API_KEY", json_schema_extra=NOT_IN_KEY,
                             description="environment variable holding the key (never logged or stored)")
    api_key_secret: str | None = Field(None, json_schema_extra=NOT_IN_KEY,
                                       description="or a Prefect Secret block holding it")
    max_tokens: int = Field(2, ge=1, description="the reply's length: its first character is the verdict")
    concurrency: int = Field(4, ge=1, json_schema_extra=NOT_IN_KEY, description="requests in flight")
    timeout_s: float = Field(120.0, gt=0, json_schema_extra=NOT_IN_KEY)
    max_retries: int = Field(5, ge=0, json_schema_extra=NOT_IN_KEY,
                             description="retries of a failed request (429, 5xx, timeouts), with back-off")
    backoff_s: float = Field(1.0, ge=0, json_schema_extra=NOT_IN_KEY)


def parse(reply: str) -> str | None:
    """'m' (the first output), 'M' (the second), or None: the first character, as AlpacaEval reads it."""
    first = reply.strip()[:1]
    return first if first in ("m", "M") else None


def _key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class ReplyCache:
    """Replies by a hash of the request, appended to a file as they arrive (a cut run resumes from it)."""

    def __init__(self, folder: Path | None):
        self.path = Path(folder) / CACHE_FILE if folder is not None else None
        self.replies: dict[str, str] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.replies[record["key"]] = record["reply"]
        self._lock = threading.Lock()

    def add(self, key: str, reply: str) -> None:
        with self._lock:
            self.replies[key] = reply
            if self.path is not None:
                with self.path.open("a") as handle:
                    handle.write(json.dumps({"key": key, "reply": reply}) + "\n")


def open_judge(inputs: JudgeInputs) -> Comparing:
    from tasks.self_instruct.backends import api_key_from_env
    from tasks.self_instruct.openai_http import OpenAIChatBackend

    p: OpenAIJudgeConfig = inputs.params
    backend = OpenAIChatBackend(p.base_url, p.model, api_key_from_env(p.api_key_env, p.base_url), temperature=0.0,
                                max_tokens=p.max_tokens, concurrency=p.concurrency, timeout_s=p.timeout_s,
                                max_retries=p.max_retries, backoff_s=p.backoff_s)
    cache = ReplyCache(inputs.scratch)
    facts = {"requests": 0, "cached_replies": 0, "retries": 0}

    def ask(texts: list[str]) -> list[str]:
        todo = [t for t in dict.fromkeys(texts) if _key(t) not in cache.replies]
        facts["cached_replies"] += len(texts) - len(todo)
        for start in range(0, len(todo), p.concurrency):  # cached a few at a time: a cut run loses only these
            chunk = todo[start:start + p.concurrency]
            for text, completion in zip(chunk, backend.complete([SYSTEM + "\n\n" + t for t in chunk])):
                if completion.error:  # the endpoint answered with something unusable: a failed comparison
                    raise RuntimeError(f"the judge endpoint gave no usable reply: {completion.error}")
                cache.add(_key(text), completion.text)
            facts["requests"] += len(chunk)
        facts["retries"] = backend.retries
        return [cache.replies[_key(t)] for t in texts]

    def compare(prompts: list[str], first: list[str], second: list[str]) -> Verdicts:
        triples = list(zip(prompts, first, second))
        forward = [TEMPLATE.format(instruction=q, output_m=a, output_big_m=b) for q, a, b in triples]
        swapped = [TEMPLATE.format(instruction=q, output_m=b, output_big_m=a) for q, a, b in triples]
        replies = ask(forward + swapped)
        verdicts, consistent, detail = [], [], []
        for one, two in zip(replies[:len(prompts)], replies[len(prompts):]):
            picks = (parse(one), parse(two))
            first_wins = [pick == ("m" if order == 0 else "M") for order, pick in enumerate(picks)]
            if None in picks:
                verdicts.append(np.nan)
                consistent.append(False)
            elif first_wins[0] == first_wins[1]:
                verdicts.append(1.0 if first_wins[0] else 0.0)
                consistent.append(True)
            else:
                verdicts.append(0.5)
                consistent.append(False)
            detail.append(json.dumps({"forward": one[:40], "swapped": two[:40]}))
        verdict = np.asarray(verdicts)
        return Verdicts(verdict.copy(), verdict, consistent=np.asarray(consistent), detail=detail)

    return Comparing(compare, f"{p.model} at {p.base_url} (AlpacaEval 2.0's pairwise wording, both orders)", facts)


def check(params: OpenAIJudgeConfig) -> None:
    """The key is there before any answer is generated (a Prefect Secret block is read when the step runs)."""
    from tasks.self_instruct.backends import api_key_from_env

    if params.api_key_secret is None:
        api_key_from_env(params.api_key_env, params.base_url)


JUDGE = Judge("openai", OpenAIJudgeConfig, open_judge, check=check,
              description="an OpenAI-compatible chat endpoint, AlpacaEval 2.0's pairwise wording, both orders")
