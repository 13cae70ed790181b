"""Shared measuring helpers: wall time and peak memory of a call run in a fresh process."""
from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    began = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((seconds, peak_mb, result))


def isolated(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Run `fn(*args)` (a module-level function) in a spawned process: (seconds, peak RSS MB, result).

    The peak includes the interpreter and its imports, the same for ours and the baseline."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    seconds, peak_mb, result = queue.get()
    proc.join()
    return seconds, peak_mb, result


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - began, result


def timed_cpu(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds (every thread of this process) of `fn(*args)`: the CPU time is the work done,
    which other load on the machine hardly changes."""
    cpu, began = time.process_time(), time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - began, time.process_time() - cpu, result


def smollm2_folder(store_url: str | None) -> tuple[str, float, str]:
    """The bundled SmolLM2-135M-Instruct as a plain model folder in a store (converted once, ~25 s):
    (folder, seconds, the stage's status)."""
    from flows.plan import run_alone
    from storage.store import Store
    from tasks.stages.base_model import STAGE, BaseModelParams

    store = Store(store_url)
    began = time.perf_counter()
    ref = run_alone(STAGE, BaseModelParams(), {}, store)
    return str(store.local_path(ref.ref.key, "files", "model")), time.perf_counter() - began, ref.status
