"""The `iqs-training` flow: revision files → an IQS model artifact in the store (stage "iqs.train").

Deployed on its own (e.g. when new expert revisions arrive); the pipeline then uses the model by setting
`iqs.model` to the key this flow returns.
"""
from __future__ import annotations

import json
from typing import Any

from prefect import flow

from flows.execute import publish_table, run_plan
from flows.plan import plan_recipe
from flows.recipes import IQS_TRAINING
from storage.store import Store
from tasks import scorers

IQSSection = scorers.section_type()


@flow(name="iqs-training", persist_result=True)
def iqs_training(iqs: IQSSection, store: str | None = None, force: bool = False) -> dict[str, Any]:
    """Train (or find in the store) the IQS model for `iqs`; returns the stage table, `model` and its metrics."""
    plan = plan_recipe(IQS_TRAINING, None, Store(store), params={"iqs.train": iqs})
    run = run_plan(plan, "iqs.train" if force else None)
    report = publish_table(run, "iqs-training", "iqs-training-run")
    report["model"] = run.ref("iqs.train").key
    report["metrics"] = json.loads(plan.store.read_file(report["model"], "metrics.json"))["validation"]
    return report
