"""The `iqs-training` flow: revision files → an IQS model artifact in the store (stage "iqs.train").

Deployed on its own (e.g. when new expert revisions arrive); the pipeline then uses the model by setting
`iqs.model` to the key this flow returns.
"""
from __future__ import annotations

import json
from typing import Any

from prefect import flow

from flows import stages
from flows.config import IQSConfig
from flows.tracker import StageTracker
from storage.store import Store


@flow(name="iqs-training", persist_result=True)
def iqs_training(iqs: IQSConfig, store: str | None = None, force: bool = False) -> dict[str, Any]:
    """Train (or find in the store) the IQS model for `iqs`; returns the stage table, `model` and its metrics."""
    store_url = Store(store).url
    tracker = StageTracker(store_url, ("iqs.train",), "iqs.train" if force else None)
    model = tracker.run("iqs.train", stages.iqs_train, iqs, {})
    report = tracker.finish("iqs-training")
    report["model"] = model.key
    report["metrics"] = json.loads(Store(store_url).read_file(model.key, "metrics.json"))["validation"]
    return report
