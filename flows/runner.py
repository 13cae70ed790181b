"""The one runner of every flow: the store URL resolved once, the plan made once (before Prefect starts, so bad
input fails at once) and handed to the flow in the same process, and the plan shown without running anything
(`--plan`).

A flow started by a deployment or the UI has no plan handed to it: it makes its own (`planned`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flows.plan import Plan, Step
from storage.stage import reusable
from storage.store import Store

_HANDED: dict[str, Plan] = {}  # plans made by `run_flow`, taken once by the flow it starts


def normalized(config: Any) -> Any:
    """The config with its store as one absolute URL (the only place a default store is resolved)."""
    return config.model_copy(update={"store": Store(config.store).url})


def _token(flow_name: str, config: Any, arguments: dict[str, Any]) -> str:
    return json.dumps([flow_name, config.model_dump(mode="json"), arguments], sort_keys=True, default=str)


def planned(flow_name: str, make: Callable[[], Plan], config: Any, **arguments: Any) -> Plan:
    """The plan `run_flow` made for this flow and config (taken once), else a new one."""
    return _HANDED.pop(_token(flow_name, config, arguments), None) or make()


def run_flow(flow: Any, make: Callable[[], Plan], config: Any, task_runner: Any, **arguments: Any) -> Any:
    """Plan (checked: bad input raises here, before a flow run exists), hand the plan over, run the flow on
    `task_runner` and return its result (the exception it ended with, re-raised)."""
    token = _token(flow.name, config, arguments)
    _HANDED[token] = make()
    try:
        state = flow.with_options(task_runner=task_runner)(config=config, **arguments, return_state=True)
    finally:
        _HANDED.pop(token, None)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result


# -- the plan, shown ----------------------------------------------------------------------------------------
def _source(value: Step | str) -> dict[str, str]:
    return {"key": value.key, "from": value.label} if isinstance(value, Step) else {"key": value, "from": "given"}


def describe(plan: Plan, flow_name: str) -> dict[str, Any]:
    """Every step in order with its stage, key, whether the store holds its output, and its inputs by key."""
    return {"flow": flow_name, "store": plan.store.url, "steps": [
        {"label": step.label, "stage": step.stage.name, "key": step.key,
         "status": "cached" if reusable(step.stage, step.params, plan.store, step.key) else "to run",
         "inputs": {name: _source(value) for name, value in step.inputs.items()}} for step in plan.steps]}


def plan_text(description: dict[str, Any]) -> str:
    lines = [f"{description['flow']} (store {description['store']}): {len(description['steps'])} steps"]
    for step in description["steps"]:
        reads = ", ".join(f"{name}={source['from']}" for name, source in step["inputs"].items())
        lines.append(f"  {step['status']:<7} {step['label']:<32} {step['key']}" + (f"  ← {reads}" if reads else ""))
    return "\n".join(lines)


def drawing(plan: Plan) -> str:
    """The data flow of a plan, one line per stage: what it reads ─ stage ─▶ what it makes (fan-outs and row-range
    parts drawn once): the README's "What runs" block is this text for the demo config."""
    lines: dict[str, str] = {}
    for step in plan.steps:
        if step.shard is not None or step.stage.name in lines:
            continue  # a part is drawn as its stage, a fan-out once
        read = step.upstream[0].inputs if step.upstream and step.upstream[0].shard is not None else step.inputs
        reads = dict.fromkeys(value.stage.dataset if isinstance(value, Step) else "a stored dataset"
                              for value in read.values())
        calls = sum(1 for s in plan.steps if s.stage.name == step.stage.name and s.shard is None)
        made = step.stage.dataset + (" (one per source)" if calls > 1 else "")
        lines[step.stage.name] = f"{' + '.join(reads) or 'config'} ─ {step.stage.name} ─▶ {made}"
    return "\n".join(lines.values())
