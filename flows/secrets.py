"""API keys from Prefect Secret blocks, handed to Prefect-free stage code through an environment variable."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from pydantic import BaseModel

from tasks.env import temporary_env


@contextmanager
def secret_in_env(block_name: str | None, env_name: str) -> Iterator[None]:
    """While the block is used, `env_name` holds the Secret block's value; the old value comes back after.
    Without a block name, nothing changes (the variable is expected to be set already)."""
    if not block_name:
        yield
        return
    from prefect.blocks.system import Secret

    with temporary_env(env_name, str(Secret.load(block_name).get())):
        yield


def secrets_of(params: Any) -> list[tuple[str, str]]:
    """(Secret block, environment variable) of every section in `params` that names a block (`api_key_secret`),
    nested ones included (a combine scorer's judge member)."""
    found = []
    if isinstance(params, BaseModel):
        if getattr(params, "api_key_secret", None):
            found.append((params.api_key_secret, params.api_key_env))
        for name in type(params).model_fields:
            found += secrets_of(getattr(params, name))
    elif isinstance(params, (list, tuple)):
        for value in params:
            found += secrets_of(value)
    return found


@contextmanager
def secrets_in_env(params: Any) -> Iterator[None]:
    """While a stage runs with `params`, each Secret block they name is in its environment variable."""
    with ExitStack() as stack:
        for block, env in secrets_of(params):
            stack.enter_context(secret_in_env(block, env))
        yield
