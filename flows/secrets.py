"""API keys from Prefect Secret blocks, handed to Prefect-free stage code through an environment variable."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
