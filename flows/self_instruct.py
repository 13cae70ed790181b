"""The `self-instruct` flow: generate instruction data from seed tasks into the store (one stage task).

Its output is a dataset like any ingested source; export it with `output` (Alpaca JSONL) and add that file
as an ingest source of the pipeline.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow

from flows import stages
from flows.config import SelfInstructConfig
from storage.store import Store
from tasks.self_instruct.records import write_alpaca_jsonl


@contextmanager
def api_key_from_secret(config: SelfInstructConfig) -> Iterator[None]:
    """With `api_key_secret`, the Prefect Secret block's value sits in `api_key_env` while the stage runs."""
    if not config.api_key_secret:
        yield
        return
    from prefect.blocks.system import Secret

    value = Secret.load(config.api_key_secret).get()
    previous = os.environ.get(config.api_key_env)
    os.environ[config.api_key_env] = str(value)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(config.api_key_env, None)
        else:
            os.environ[config.api_key_env] = previous


def summary(store: Store, key: str, status: str, output: str | None) -> dict[str, Any]:
    """The counts of a stored self_instruct dataset, and its Alpaca JSONL export when `output` is set."""
    manifest = store.manifest(key)
    result = {"key": key, "status": status, "rows": manifest["rows"], **manifest.get("stats", {}),
              "quarantine": manifest.get("companions", {}).get("quarantine"), "store": store.url}
    if output:
        write_alpaca_jsonl(store.read_table(key), output)
        result["output"] = output
    return result


@flow(name="self-instruct", persist_result=True)
def self_instruct(config: SelfInstructConfig, store: str | None = None, output: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    store_url = Store(store).url
    with api_key_from_secret(config):
        ref = stages.self_instruct(config, store_url, {}, force=force)
    return summary(Store(store_url), ref.key, "done", output)
