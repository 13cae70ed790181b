"""Stage logs reach the flow run's logs in the Prefect API (the UI's Logs tab), read back with the Prefect client."""
from __future__ import annotations

import asyncio
import logging

import pyarrow as pa
from prefect import flow

from flows.execute import publish_table, run_plan
from flows.plan import Plan
from storage.stage import Stage, StageOutput
from storage.store import Store

log = logging.getLogger("sftflow.test")  # a stage module's own logger, below `sftflow`


def build_counted(ctx):
    ctx.log.info("counted: %d rows", ctx.params["n"])
    log.warning("counted: %d rows look odd", 1)
    return StageOutput(table=pa.table({"x": list(range(ctx.params["n"]))}))


COUNTED = Stage("counted", "1", build_counted, params=dict, retries=0)


@flow
def logging_flow(store: str) -> dict:
    plan = Plan(Store(store))
    plan.add(COUNTED, {"n": 3})
    return publish_table(run_plan(plan.compute_keys()), "logs", "logs-run")


async def flow_run_logs(flow_run_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def test_stage_logs_reach_the_flow_runs_logs(prefect_api, store):
    from prefect.logging.handlers import APILogHandler

    # a worker's flow process: Prefect's logging set-up, the root logger at WARNING, no handler of ours
    assert logging.getLogger().getEffectiveLevel() >= logging.WARNING
    state = logging_flow(store=store.url, return_state=True)
    assert state.is_completed(), state
    APILogHandler().flush()  # the handler sends in batches; this waits for them
    logs = asyncio.run(flow_run_logs(state.state_details.flow_run_id))
    lines = {(entry.level, entry.name, entry.message) for entry in logs}
    key = state.result()["stages"][0]["key"]
    assert (logging.INFO, "sftflow", f"counted: published {key} (3 rows) in ") in {
        (level, name, message[:len(f"counted: published {key} (3 rows) in ")]) for level, name, message in lines}
    assert (logging.INFO, "sftflow", "counted: 3 rows") in lines
    assert (logging.WARNING, "sftflow.test", "counted: 1 rows look odd") in lines
    assert all(entry.task_run_id for entry in logs if entry.name.startswith("sftflow"))  # under the stage's task run
