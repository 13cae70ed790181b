"""What every generation backend returns, and how the stage picks one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from tasks.errors import BadInputError


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None  # "stop", or "length" when the token limit cut the text off
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the endpoint answered, but not with a usable completion


class Backend(Protocol):
    name: str
    model: str
    retries: int

    def complete(self, prompts: list[str]) -> list[Completion]: ...


def api_key_from_env(name: str, base_url: str) -> str:
    key = os.environ.get(name)
    if not key:
        raise BadInputError(f"environment variable {name} is empty or not set; it must hold the API key for "
                            f"{base_url} (or name a Prefect Secret block with api_key_secret)", field="api_key_env")
    return key


def make_backend(params: Any, precision: Any = None) -> Backend:
    """The backend a SelfInstructConfig asks for (a local model in `precision`, as the plan resolved it)."""
    sampling = dict(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                    stop=list(params.stop))
    if params.backend == "openai":
        from tasks.self_instruct.openai_http import OpenAIChatBackend

        return OpenAIChatBackend(params.base_url, params.model, api_key_from_env(params.api_key_env, params.base_url),
                                 concurrency=params.request_batch_size, timeout_s=params.timeout_s,
                                 max_retries=params.max_retries, backoff_s=params.backoff_s, **sampling)
    from tasks.self_instruct.local_hf import LocalTransformersBackend

    return LocalTransformersBackend(params.model, seed=params.seed, device=params.device,
                                    precision=precision or params.precision, **sampling)
