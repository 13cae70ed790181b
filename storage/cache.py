"""A Prefect cache policy whose key is the store key and whose hits are checked against the store.

Prefect alone would return a persisted reference to a dataset that has since been deleted or damaged. Here
the key is computed from (stage, version, parameters, input keys); when the store does not hold a complete
dataset under it, the stale Prefect record is removed first, so the task runs and rebuilds it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy

from storage.stage import StageDef
from storage.store import Store

log = logging.getLogger("sftflow")


@dataclass
class StoreCachePolicy(CachePolicy):
    stage: StageDef | None = None

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
                    ) -> str | None:
        assert self.stage is not None
        key = self.stage.key(inputs["params"], inputs.get("inputs") or {})
        if not Store(inputs["store"]).verify(key):
            _forget_record(getattr(task_ctx, "result_store", None), key)
        return key


def _forget_record(result_store: Any, key: str) -> None:
    """Delete Prefect's persisted result for `key`, if there is one (local result storage)."""
    if result_store is None:
        return
    storage = result_store.result_storage
    resolve = getattr(storage, "_resolve_path", None)
    if resolve is None:
        return
    path = str(resolve(key))
    result_store.cache.pop(path, None)
    if os.path.exists(path):
        log.info("store has no complete dataset %s: dropping the stale Prefect cache record", key)
        os.remove(path)
