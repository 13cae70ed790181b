"""Turns a `Stage` into a Prefect task: store-backed caching, retries, tags, progress and artifacts.

Written once; stage modules know nothing of Prefect (see storage/stage.py). The task gets the step's store key,
computed when the plan was built (flows/plan.py), and the cache policy uses it as Prefect's cache key. Prefect
alone would return a persisted result for a dataset that has since been deleted or damaged: when the store does
not hold a complete dataset under the key (or the files an export stage wrote are gone: storage.stage.reusable),
the stale Prefect record is dropped first, so the task runs and rebuilds it.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from flows.secrets import secrets_in_env
from flows.settings import STAGE_LOGGER
from storage.stage import Stage, StageResult, figures_markdown, reusable, run_stage, terminal_progress
from storage.store import DatasetRef, Store
from tasks.errors import BadInputError

RETRY_DELAYS_S = [2, 10, 30]
MODEL_TAG = "model"
# transformers builds a model under accelerate's init_empty_weights, which patches torch.nn.Module for the whole
# process: two threads loading models at once corrupt each other ("Cannot copy out of meta tensor"), and a thread
# can leave the patch behind for every later load. Stages tagged `model` therefore run one at a time in a process
# (the thread runner); separate worker processes (Dask, Ray) still run them side by side.
MODEL_STAGES = threading.Lock()
log = logging.getLogger("sftflow")


@dataclass
class StoreCachePolicy(CachePolicy):
    stage: Stage | None = None

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
                    ) -> str | None:
        key = inputs["key"]
        if not reusable(self.stage, inputs["params"], Store(inputs["store"]), key):
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


# Prefect ships the `sftflow` logger's records to the run's logs (flows/settings.py), but a worker's flow process
# leaves that logger at the root's WARNING: without a level of its own, no published key or count would get there.
if logging.getLogger(STAGE_LOGGER).level == logging.NOTSET:
    logging.getLogger(STAGE_LOGGER).setLevel(logging.INFO)


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Transient errors are retried; bad input would fail the same way again, so it is not."""
    try:
        state.result()
    except BadInputError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient (I/O, OOM, a lost worker)
        return True
    return True


def prefect_progress(total: int | None, description: str) -> Callable[[int], None]:
    """A terminal bar plus a Prefect progress artifact, updated at most once a second."""
    advance_bar = terminal_progress(total, description)
    if TaskRunContext.get() is None or not total:
        return advance_bar
    artifact_id = create_progress_artifact(0.0, description=description)
    done, last = 0, 0.0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        advance_bar(n)
        now = time.monotonic()
        if now - last >= 1.0 or done >= total:
            last = now
            update_progress_artifact(artifact_id, min(100.0, 100.0 * done / total))

    return advance


def one_at_a_time(stage: Stage) -> Any:
    """The process's model lock for a stage tagged `model` (a module function: the task closure that calls it
    is pickled for Dask workers, and a lock cannot be)."""
    return MODEL_STAGES if MODEL_TAG in stage.tags else contextlib.nullcontext()


def artifact_key(stage: Stage) -> str:
    return f"{stage.name.replace('.', '-').replace('_', '-')}-report"


@functools.cache
def stage_task(stage: Stage) -> Any:
    """The Prefect task `fn(params, store, inputs, key, force=False, shard=None, fingerprint=None, memory_gb=None)
    -> StageResult` of one stage (`fingerprint`: what the key was computed from, recorded in the manifest;
    `memory_gb`: the budget the build sizes its batches to)."""

    def run(params: Any, store: str, inputs: Mapping[str, DatasetRef | None], key: str, force: bool = False,
            shard: tuple[int, int] | None = None, fingerprint: dict[str, Any] | None = None,
            memory_gb: float | None = None) -> StageResult:
        with one_at_a_time(stage), secrets_in_env(params):  # e.g. the judge scorer's API key
            result = run_stage(stage, params, inputs, Store(store), key=key, force=force, progress=prefect_progress,
                               shard=shard, fingerprint=fingerprint, memory_gb=memory_gb)
        if result.report:
            figures = figures_markdown(result.figures, inline=True)  # data URIs: the UI renders them
            create_markdown_artifact(result.report + (f"\n\n{figures}" if figures else ""), key=artifact_key(stage),
                                     description=f"{stage.name} report for {result.ref.key}")
        result.report, result.figures = None, {}  # the persisted result stays small
        return result

    run.__name__ = run.__qualname__ = stage.name.replace(".", "_")
    return task(
        run,
        name=stage.name,
        cache_policy=StoreCachePolicy(stage=stage),
        persist_result=True,
        retries=stage.retries,
        retry_delay_seconds=RETRY_DELAYS_S[:stage.retries] or 0,
        retry_condition_fn=retry_unless_bad_input,
        tags=set(stage.tags),
    )
