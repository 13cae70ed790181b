"""Turns a `StageDef` into a Prefect task: store-backed caching, retries, tags, progress and artifacts.

Written once; stage modules know nothing of Prefect (see storage/stage.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext

from flows.settings import STAGE_LOGGER
from storage.cache import StoreCachePolicy
from storage.stage import StageDef, run_stage, terminal_progress
from storage.store import DatasetRef, Store
from tasks.errors import BadInputError

RETRY_DELAYS_S = [2, 10, 30]
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


def stage_task(stage: StageDef, *, tags: tuple[str, ...] = (), retries: int = 2, timeout_seconds: float | None = None):
    """A Prefect task `fn(params, store, inputs, force=False) -> DatasetRef` for one stage."""

    def run(params: Any, store: str, inputs: Mapping[str, DatasetRef | None], force: bool = False) -> DatasetRef:
        result = run_stage(stage, params, inputs, Store(store), force=force, progress=prefect_progress)
        if result.report:
            create_markdown_artifact(result.report, key=f"{stage.name.replace('.', '-').replace('_', '-')}-report",
                                     description=f"{stage.name} report for {result.ref.key}")
        return result.ref

    run.__name__ = run.__qualname__ = stage.name.replace(".", "_")
    return task(
        run,
        name=stage.name,
        cache_policy=StoreCachePolicy(stage=stage),
        persist_result=True,
        retries=retries,
        retry_delay_seconds=RETRY_DELAYS_S[:retries] or 0,
        retry_condition_fn=retry_unless_bad_input,
        tags=set(tags),
        timeout_seconds=timeout_seconds,
    )
