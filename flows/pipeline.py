"""The `sft-pipeline` flow: its recipe (flows/recipes.py) planned for a config and run.

Thin on purpose: the order is the recipe's, the wiring one rule (flows/plan.py), the running flows/execute.py and
flows/runner.py; every stage is cached by its store key.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from flows.config import PipelineConfig, RunnerConfig
from flows.execute import publish_table, run_plan
from flows.plan import Plan, plan_recipe
from flows.recipes import SFT
from flows.runner import normalized, planned, run_flow
from storage.store import Store
from tasks.errors import BadInputError

RUNNER_CLASSES = {"thread": "ThreadPoolTaskRunner", "dask": "DaskTaskRunner", "ray": "RayTaskRunner"}


def _run_name() -> str:
    config = flow_run.parameters.get("config")
    name = config.name if isinstance(config, PipelineConfig) else (config or {}).get("name", "sftflow")
    return f"{name}-{date.today().isoformat()}"


def plan_for(config: Any, from_stage: str | None = None, until_stage: str | None = None) -> Plan:
    """The checked plan of a run: bad wiring, missing packages or files and unknown stage names fail here."""
    plan = plan_recipe(SFT, config, Store(config.store))
    if until_stage:
        plan = plan.until(until_stage)
    if from_stage:
        plan.descendants(from_stage)  # names it, or fails
    return plan


@flow(name="sft-pipeline", flow_run_name=_run_name, persist_result=True)
def sft_pipeline(config: PipelineConfig, from_stage: str | None = None,
                 until_stage: str | None = None) -> dict[str, Any]:
    """The whole pipeline; `from_stage` forces a stage and every stage that reads its output, `until_stage` stops
    after a stage (running only what it needs)."""
    config = normalized(config)
    if type(FlowRunContext.get().task_runner).__name__ != RUNNER_CLASSES[config.runner.task_runner]:
        # started by a deployment or the UI, on the default runner: run the stages as a subflow on the one asked for
        runner = task_runner(config.runner, config.store)
        return sft_pipeline.with_options(task_runner=runner)(config=config, from_stage=from_stage,
                                                             until_stage=until_stage)
    plan = planned(sft_pipeline.name, lambda: plan_for(config, from_stage, until_stage), config,
                   from_stage=from_stage, until_stage=until_stage)
    run = run_plan(plan, from_stage)
    return publish_table(run, f"sft-pipeline: {config.name}", "sft-pipeline-run")


def task_runner(runner: RunnerConfig, store_url: str) -> Any:
    """The Prefect task runner for `runner`. A remote cluster needs a store every worker can reach."""
    if runner.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=runner.workers)
    if runner.address and Store(store_url).is_local:
        raise BadInputError(f"the store {store_url} is a local path, which the workers of the {runner.task_runner} "
                            f"cluster at {runner.address} cannot read: set store to an s3://, gs:// or shared "
                            "file system URL", field="store")
    if runner.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": runner.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise BadInputError("the ray task runner needs prefect-ray: pip install 'sftflow[ray]'",
                            field="runner.task_runner") from None

    return RayTaskRunner(address=runner.address) if runner.address else RayTaskRunner()


def run_pipeline(config: Any, from_stage: str | None = None, until_stage: str | None = None) -> dict[str, Any]:
    """Run the flow and return its stage table; raises PipelineFailed (with the table) when a stage failed."""
    config = normalized(config)
    return run_flow(sft_pipeline, lambda: plan_for(config, from_stage, until_stage), config,
                    task_runner(config.runner, config.store), from_stage=from_stage, until_stage=until_stage)
