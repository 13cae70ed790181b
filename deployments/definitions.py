"""Every deployment, the work pool and the `gpu` limit, declared once in code.

`register_all()` applies them to the Prefect API in the current settings (idempotent: re-running updates the
deployments in place). A flow whose module is not in this checkout yet (e.g. the self-instruct flow) is
reported as missing and skipped; it registers on the next `sftflow serve` once it exists.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.settings import STAGE_LOGGER

ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = "process"
GPU_TAG = "gpu"  # stage tasks tagged `gpu` (IQS scoring, training) run one at a time across all runs
GPU_SLOTS = 1
NIGHTLY_CRON = "0 2 * * *"
IQS_DEPLOYMENT = "iqs-training"
# A flow run whose process died without a word (worker killed, node lost) stops sending heartbeats; after
# HEARTBEAT_GRACE_S of silence an automation marks it Crashed, so it can be retried. 30 s is Prefect's minimum.
HEARTBEAT_S = 30
HEARTBEAT_GRACE_S = 90
ZOMBIE_AUTOMATION = "crash flow runs that stopped sending heartbeats"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # "path/to/module.py:flow_function", relative to the project root
    description: str
    cron: str | None = None
    # the run form's defaults, from the pipeline config `sftflow serve` was given (None: the form starts empty)
    parameters: Callable[[Any], dict[str, Any]] | None = None
    after_deployment: str | None = None  # run when a flow run of this deployment completes
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def module(self) -> str:
        return self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        return self.entrypoint.split(":")[1]

    def available(self) -> bool:
        """Whether this checkout has the flow (stage branches land one by one)."""
        if not (ROOT / self.entrypoint.split(":")[0]).is_file():
            return False
        return hasattr(importlib.import_module(self.module), self.function)


def pipeline_parameters(config: Any) -> dict[str, Any]:
    return {"config": config.model_dump(mode="json")}


def iqs_parameters(config: Any) -> dict[str, Any]:
    """The pipeline's own IQS section: the model trained here is the one the triggered pipeline run finds."""
    return {"iqs": config.iqs.model_dump(mode="json"), "store": config.store}


FORM_BUDGET = 200  # a CPU-feasible ablation: 200 rows a selector, one epoch each (about 2 minutes a chain in bf16)


def ablation_parameters(config: Any) -> dict[str, Any]:
    """The form of the selection ablation: the pipeline config trained one epoch over each selection, and the
    ablation's own defaults."""
    from flows.ablation import DEFAULT_SEEDS, DEFAULT_SELECTORS

    one_epoch = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": None,
                                                                                     "epochs": 1.0})})
    return {"config": one_epoch.model_dump(mode="json"), "budget": FORM_BUDGET, "selectors": list(DEFAULT_SELECTORS),
            "seeds": DEFAULT_SEEDS}


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(IQS_DEPLOYMENT, "flows/iqs_training.py:iqs_training",
                   "Train an IQS (instruction quality scorer) model from revision pairs; on demand.",
                   parameters=iqs_parameters, tags=("iqs",)),
    DeploymentSpec("sft-pipeline", "flows/pipeline.py:sft_pipeline",
                   "The whole pipeline on demand; also started when an iqs-training run completes "
                   "(a new IQS model), with these default parameters.",
                   parameters=pipeline_parameters, after_deployment=IQS_DEPLOYMENT, tags=("pipeline",)),
    DeploymentSpec("nightly-refresh", "flows/pipeline.py:sft_pipeline",
                   "Nightly re-run of the pipeline: changed sources re-run ingest and what follows, "
                   "everything else is a cache hit.", cron=NIGHTLY_CRON, parameters=pipeline_parameters,
                   tags=("pipeline", "nightly")),
    DeploymentSpec("selection-ablation", "flows/ablation.py:selection_ablation",
                   "Did the selection help? Every selector x seed selects the same number of rows, trains the "
                   "same adapter and is evaluated against random on held-out rows; on demand.",
                   parameters=ablation_parameters, tags=("ablation",)),
    DeploymentSpec("self-instruct", "flows/self_instruct.py:self_instruct",
                   "Generate instructions from seed tasks (self-instruct); on demand. The run form asks for the "
                   "seed tasks file and the endpoint.", tags=("self-instruct",)),
)


def completed_run_trigger(deployment_name: str) -> Any:
    """Fires on the completion of any flow run of the deployment `deployment_name`."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"after {deployment_name} completes",
        expect={"prefect.flow-run.Completed"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": deployment_name},
    )


def ensure_work_pool(client: Any, name: str = WORK_POOL) -> None:
    """Create our `process` pool; any other pool (kubernetes, docker…) must have been created with its type."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from tasks.errors import BadInputError

    if name != WORK_POOL:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            raise BadInputError(f"work pool {name!r} does not exist: create it first, e.g. `prefect work-pool "
                                f"create {name} --type kubernetes`", field="pool") from None
        return
    try:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    except ObjectAlreadyExists:
        pass


def ensure_gpu_limit(client: Any) -> None:
    client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=GPU_SLOTS)  # an upsert


def ensure_zombie_automation(grace_s: float = HEARTBEAT_GRACE_S) -> None:
    """Prefect's documented zombie detection: no heartbeat and no end state for `grace_s` → Crashed."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    ends = {f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")}
    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *ends},
        match={"prefect.resource.id": ["prefect.flow-run.*"]}, for_each={"prefect.resource.id"},
        posture=Posture.Proactive, threshold=1, within=timedelta(seconds=grace_s))
    action = ChangeFlowRunState(state=StateType.CRASHED,
                                message=f"no heartbeat for {grace_s:.0f}s: the worker or its machine went away")
    try:
        Automation.read(name=ZOMBIE_AUTOMATION).delete()
    except ValueError:
        pass  # not there yet
    Automation(name=ZOMBIE_AUTOMATION, trigger=trigger, actions=[action]).create()


def register_all(config: Any, pool: str = WORK_POOL, heartbeat_grace_s: float = HEARTBEAT_GRACE_S
                 ) -> dict[str, Any]:
    """Create the work pool and the gpu limit, then every available deployment. `config` (a PipelineConfig)
    fills the default parameters, which the UI shows as the run form."""
    from prefect import get_client
    from prefect.schedules import Cron

    with get_client(sync_client=True) as client:
        ensure_work_pool(client, pool)
        ensure_gpu_limit(client)
    ensure_zombie_automation(heartbeat_grace_s)
    registered, missing = [], []
    for spec in DEPLOYMENTS:
        if not spec.available():
            missing.append(f"{spec.name} ({spec.entrypoint} not in this checkout)")
            continue
        flow = getattr(importlib.import_module(spec.module), spec.function)
        source = flow.from_source(source=str(ROOT), entrypoint=spec.entrypoint)
        with contextlib.redirect_stdout(sys.stderr):  # Prefect prints a table; stdout carries our --json
            source.deploy(
                name=spec.name,
                work_pool_name=pool,
                description=spec.description,
                parameters=spec.parameters(config) if spec.parameters else None,
                schedules=[Cron(spec.cron, timezone="UTC")] if spec.cron else None,
                triggers=[completed_run_trigger(spec.after_deployment)] if spec.after_deployment else None,
                tags=list(spec.tags),
                # the stage logs reach the run's Logs tab on any worker, not only one `sftflow serve` started
                job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
                                       "PREFECT_LOGGING_EXTRA_LOGGERS": STAGE_LOGGER}},
                build=False,
                push=False,
                print_next_steps=False,
                ignore_warnings=True,
            )
        registered.append(f"{flow.name}/{spec.name}")
    return {"work_pool": pool, "concurrency_limits": {GPU_TAG: GPU_SLOTS}, "deployments": registered,
            "missing": missing, "crash_after_silent_s": heartbeat_grace_s}
