"""The `self-instruct` flow: generate instruction data from seed tasks into the store (one stage task).

Not part of `sft-pipeline`: its output is a dataset like any ingested source; export it with `output`
(Alpaca JSONL, or canonical parquet with lineage) and list that file as an ingest source of the pipeline.
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows.execute import publish_table, run_plan
from flows.plan import plan_recipe
from flows.recipes import SELF_INSTRUCT
from storage.store import Store
from tasks.stages.self_instruct import STAGE, SelfInstructConfig, summary


@flow(name="self-instruct", persist_result=True)
def self_instruct(config: SelfInstructConfig, store: str | None = None, output: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    """Generate `config.num_instructions` new instructions; the API key comes from `config.api_key_env`
    or the Prefect Secret block `config.api_key_secret`."""
    plan = plan_recipe(SELF_INSTRUCT, None, Store(store), params={STAGE.name: config})
    run = run_plan(plan, STAGE.name if force else None)  # its task puts the Secret block in the environment
    publish_table(run, "self-instruct", "self-instruct-run")
    row = run.rows[-1]
    return summary(plan.store, row.key, row.status, output)
