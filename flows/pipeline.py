"""The `sft-pipeline` flow: ingest → embed → iqs → cluster → select → format → train.

Thin on purpose: it only wires stage tasks (flows/stages.py) together; every stage is cached by its store key.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from flows import stages
from flows.config import PipelineConfig, RunnerConfig
from flows.tracker import PipelineFailed, StageTracker, check_from_stage
from storage.store import Store
from tasks.base_model import BaseModelParams
from tasks.errors import BadInputError

# "iqs.train" (only when iqs.model is empty) sits before "iqs": `--from iqs` rescores without retraining.
ORDER = ("ingest", "embed", "iqs.train", "iqs", "cluster", "select", "base_model", "format", "train")
RUNNER_CLASSES = {"thread": "ThreadPoolTaskRunner", "dask": "DaskTaskRunner", "ray": "RayTaskRunner"}


def _run_name() -> str:
    config = flow_run.parameters.get("config")
    name = config.name if isinstance(config, PipelineConfig) else (config or {}).get("name", "sftflow")
    return f"{name}-{date.today().isoformat()}"


@flow(name="sft-pipeline", flow_run_name=_run_name, persist_result=True)
def sft_pipeline(config: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    store = Store(config.store).url
    if type(FlowRunContext.get().task_runner).__name__ != RUNNER_CLASSES[config.runner.task_runner]:
        # started by a deployment or the UI, on the default runner: run the stages as a subflow on the one asked for
        runner = task_runner(config.runner, store)
        return sft_pipeline.with_options(task_runner=runner)(config=config, from_stage=from_stage)
    tracker = StageTracker(store, ORDER, from_stage)
    sources = tracker.run_many("ingest", stages.ingest_source, [(src, {}) for src in config.ingest.sources])
    conversations = tracker.run("ingest", stages.ingest, config.ingest,
                                {f"source_{i:03d}": ref for i, ref in enumerate(sources)})
    embeddings = tracker.run("embed", stages.embed, config.embed, {"conversations": conversations})
    # the probe scorer reads the embed stage's vectors; comet reads the texts
    scored = run_iqs(tracker, config, store, conversations, embeddings if config.iqs.scorer == "probe" else None)
    clusters = tracker.run("cluster", stages.cluster, config.cluster, {"embeddings": embeddings})
    # without an IQS scorer the selection is a cluster-only diversity sample; a failed iqs stage skips select
    select_inputs = {"conversations": conversations, "clusters": clusters}
    if config.iqs.scorer != "none":
        select_inputs["scored"] = scored
    selection = tracker.run("select", stages.select, config.select, select_inputs)
    # the base model comes before format, which tokenizes with its tokenizer
    base_model = tracker.run("base_model", stages.base_model, BaseModelParams(reference=config.train.base_model), {})
    tokenized = tracker.run("format", stages.format, config.format, {"selection": selection, "base_model": base_model})
    tracker.run("train", stages.train, config.train, {"tokenized": tokenized, "base_model": base_model})
    return tracker.finish(f"sft-pipeline: {config.name}")


def run_iqs(tracker: StageTracker, config: PipelineConfig, store: str, conversations: Any,
            embeddings: Any = None) -> Any:
    """Train the IQS model unless `iqs.model` names one, then score the conversations (None: scorer none).

    The probe scorer reuses the embed stage's vectors when given them and embeds the texts itself otherwise.
    """
    if config.iqs.scorer == "none":
        return None
    if config.iqs.model:
        model = Store(store).ref(config.iqs.model)
    else:
        model = tracker.run("iqs.train", stages.iqs_train, config.iqs, {})
    inputs = {"conversations": conversations, "model": model}
    if embeddings is not None:
        inputs["embeddings"] = embeddings
    return tracker.run("iqs", stages.iqs, config.iqs, inputs)


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


def run_pipeline(config: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run the flow and return its stage table; raises PipelineFailed (with the table) when a stage failed."""
    check_from_stage(from_stage, ORDER)  # before a flow run (and Prefect's server) starts
    store_url = Store(config.store).url
    config = config.model_copy(update={"store": store_url})
    flow_fn = sft_pipeline.with_options(task_runner=task_runner(config.runner, store_url))
    state = flow_fn(config=config, from_stage=from_stage, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, PipelineFailed):
        raise result
    if isinstance(result, BaseException):
        raise result
    return result
