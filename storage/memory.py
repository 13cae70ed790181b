"""Memory: the budget a stage sizes its batches to, and the peak it reached.

The budget is `resources.memory_gb` when the config sets it, else the tightest limit this process runs under: a
cgroup's (a container, a systemd slice), a Dask worker's, or the machine's memory. A stage that sizes its
batches (train's micro-batches) reads it from its context; past it, the stage fails with a message naming what
to lower instead of meeting the OOM killer.

The peak is the process's resident memory, sampled while a stage builds (`PeakRSS`): what the stage needed,
plus whatever ran beside it in the same process (the thread runner builds two stages side by side; model stages
one at a time), and the GPU's peak allocated memory where torch uses one.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

GIB = 1024 ** 3
CGROUP_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def physical_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def cgroup_limit_gb() -> float | None:
    for path in CGROUP_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or the huge number cgroup v1 writes for no limit
            return int(text) / GIB
    return None


def dask_worker_limit_gb() -> float | None:
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):  # not inside a Dask worker
        return None
    return limit / GIB if limit else None


def budget_gb(setting: float | None = None) -> tuple[float, str]:
    """(gigabytes a stage may use, where that figure comes from)."""
    if setting:
        return setting, "resources.memory_gb"
    limits = [(value, name) for value, name in ((cgroup_limit_gb(), "the cgroup's limit"),
                                                (dask_worker_limit_gb(), "the Dask worker's limit"))
              if value is not None]
    return min(limits, default=(physical_gb(), "the machine's memory"))


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """The resident memory of a process (VmHWM: its peak so far), from /proc; None where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakRSS:
    """The process's peak resident memory while the block runs, sampled every `interval` seconds (a step's
    activations live for seconds: a sample misses nothing that matters), and the GPU's peak allocated memory."""

    def __init__(self, interval: float = 0.05, start_mb: float = 0.0):
        self.interval, self.peak_mb, self.gpu_peak_mb = interval, start_mb, None
        self.reset_gpu = not start_mb  # a continued measurement keeps the GPU's peak so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="peak-rss")

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, rss_mb() or 0.0)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRSS:
        if self.reset_gpu and (cuda := _cuda()) is not None:
            cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:  # also called directly, to read the peak so far; twice is harmless
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.peak_mb = round(max(self.peak_mb, rss_mb() or 0.0), 1)
        if (cuda := _cuda()) is not None:
            self.gpu_peak_mb = round(cuda.max_memory_allocated() / 2 ** 20, 1)

    def stats(self) -> dict[str, float]:
        return {"peak_rss_mb": self.peak_mb, **({"peak_gpu_mb": self.gpu_peak_mb} if self.gpu_peak_mb else {})}


def _cuda() -> object | None:
    """torch.cuda when torch is loaded already and sees a GPU (a stage that never imported torch used none)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None
