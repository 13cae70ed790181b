"""An OpenAI-compatible chat-completions client (httpx): concurrent requests, retries with backoff on 429 and
5xx (honoring Retry-After), and an API key that never reaches a log line or an error message."""
from __future__ import annotations

import email.utils
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tasks.self_instruct.backends import Completion

log = logging.getLogger("sftflow.self_instruct")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
CHARS_PER_TOKEN = 4


class BackendError(RuntimeError):
    """The endpoint refused the request for a reason a retry cannot fix (bad key, unknown model, …)."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (a number, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIChatBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_tokens: int = 3072, stop: list[str] | None = None, concurrency: int = 5,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        self.base_url, self.model = base_url.rstrip("/"), model
        self._api_key = api_key
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if stop:
            self.sampling["stop"] = stop[:4]  # the API accepts at most 4 stop sequences
        self.concurrency, self.max_retries = max(1, concurrency), max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self.retries = 0
        self.waits: list[float] = []  # seconds slept before each retry, for stats and tests
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatBackend(base_url={self.base_url!r}, model={self.model!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def complete(self, prompts: list[str]) -> list[Completion]:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s) as client:
            if len(prompts) == 1 or self.concurrency == 1:
                return [self._request(client, p) for p in prompts]
            with ThreadPoolExecutor(min(self.concurrency, len(prompts))) as pool:
                return list(pool.map(lambda p: self._request(client, p), prompts))

    def _request(self, client: httpx.Client, prompt: str) -> Completion:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "n": 1, **self.sampling}
        attempt = 0
        while True:
            reason, wait = None, None
            try:
                response = client.post("/chat/completions", json=payload)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {self._redact(str(exc))}"
            else:
                if response.status_code < 400:
                    return self._completion(response, prompt)
                if response.status_code not in RETRY_STATUS:
                    raise BackendError(f"{response.status_code} from {self.base_url}/chat/completions: "
                                       f"{self._redact(response.text[:300])}")
                reason = f"HTTP {response.status_code}"
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if attempt == self.max_retries:
                raise BackendError(f"{reason} from {self.base_url}/chat/completions after "
                                   f"{self.max_retries + 1} attempts")
            wait = min(self.max_backoff_s, wait if wait is not None else self.backoff_s * 2 ** attempt)
            log.warning("%s from %s; retry %d/%d in %.1fs", reason, self.base_url, attempt + 1, self.max_retries,
                        wait)
            with self._lock:
                self.retries += 1
                self.waits.append(wait)
            time.sleep(wait)
            attempt += 1

    def _completion(self, response: httpx.Response, prompt: str) -> Completion:
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            detail = f"unusable answer ({type(exc).__name__}: {exc}): {self._redact(response.text[:200])}"
            log.warning("%s", detail)
            return Completion("", None, error=detail)
        usage: dict[str, Any] = body.get("usage") or {}
        # servers that send no usage still count against the token budget: about 4 characters a token
        return Completion(text, choice.get("finish_reason"),
                          int(usage.get("prompt_tokens") or math.ceil(len(prompt) / CHARS_PER_TOKEN)),
                          int(usage.get("completion_tokens") or math.ceil(len(text) / CHARS_PER_TOKEN)))
