"""Helpers for tests that run the real `sft-pipeline` flow and read what happened from the Prefect API."""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_sources(shared_data: Path, folder: Path, count: int = 3, rows: int = 20) -> list[str]:
    """`count` small Alpaca JSON files cut from the shared LLaMA-Factory demo set."""
    records = json.loads((shared_data / "llama-factory" / "alpaca_en_demo.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"part{i}.json"
        path.write_text(json.dumps(records[i * rows:(i + 1) * rows]))
        paths.append(str(path))
    return paths


def pipeline_config(store_url: str | None, sources: list[str], base_model: Path, **sections: Any) -> Any:
    """The whole pipeline, kept quick: no IQS model (selection by clusters alone), the session's tiny LM as the
    base model, one training step."""
    from flows.config import PipelineConfig

    data = {"name": "orchestration-test", "store": store_url, "ingest": {"sources": [{"path": p} for p in sources]},
            "iqs": {"scorer": "none"}, "format": {"max_length": 128},
            "train": {"base_model": str(base_model), "max_steps": 1, "sample_prompts": ["Hi"],
                      "sample_max_new_tokens": 2}}
    data.update(sections)
    return PipelineConfig.model_validate(data)


def run_flow(config: Any, from_stage: str | None = None, task_runner: Any = None,
             until_stage: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Run the flow in this process; (flow run id, the stage report)."""
    from flows.execute import PipelineFailed
    from flows.pipeline import sft_pipeline

    flow_fn = sft_pipeline.with_options(task_runner=task_runner) if task_runner is not None else sft_pipeline
    state = flow_fn(config=config, from_stage=from_stage, until_stage=until_stage, return_state=True)
    result = state.result(raise_on_failure=False)
    report = result.report if isinstance(result, PipelineFailed) else result
    if isinstance(report, BaseException):
        raise report
    return state.state_details.flow_run_id, report


def task_states(flow_run_id: Any, attempt: int | None = None) -> dict[str, list[str]]:
    """Task name -> state names of its task runs in one attempt of the flow run (default: the latest),
    as the Prefect API reports them (e.g. {"ingest.source": ["Cached", "Completed"], "ingest": ["Failed"]})."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # the flow run has ended, but the server may record a task's final state a moment later
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if all(run.state is not None and run.state.is_final() for run in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    attempt = attempt or max(run.flow_run_run_count for run in runs)
    states: dict[str, list[str]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.dynamic_key):
        if run.flow_run_run_count == attempt:
            states[_task_name(run.name)].append(run.state.name)
    return {name: sorted(values) for name, values in states.items()}


def _task_name(run_name: str) -> str:
    """Prefect names task runs `<task name>-<3 hex chars>`."""
    return run_name.rsplit("-", 1)[0]


def api_env(api_url: str) -> dict[str, str]:
    """The environment for a subprocess that talks to `api_url` and imports this checkout."""
    env = dict(os.environ, PREFECT_API_URL=api_url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


PYTHON = sys.executable
