"""The `self-instruct` flow: generate instruction data from seed tasks into the store (one stage task).

Not part of `sft-pipeline`: its output is a dataset like any ingested source; export it with `output`
(Alpaca JSONL, or canonical parquet with lineage) and list that file as an ingest source of the pipeline.
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows.stage import stage_task
from storage.store import Store
from tasks.stages.self_instruct import STAGE, SelfInstructConfig, summary


@flow(name="self-instruct", persist_result=True)
def self_instruct(config: SelfInstructConfig, store: str | None = None, output: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    """Generate `config.num_instructions` new instructions; the API key comes from `config.api_key_env`
    or the Prefect Secret block `config.api_key_secret`."""
    store_url = Store(store).url
    key = STAGE.key(config, {})
    result = stage_task(STAGE)(config, store_url, {}, key, force=force)  # the task puts the Secret in the env
    return summary(Store(store_url), result.ref.key, result.status, output)
