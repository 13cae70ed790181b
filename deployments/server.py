"""A local Prefect server and a process worker, started in the background and stopped by pid.

State lives under `$SFTFLOW_HOME/serve/`: the server's SQLite database, one log and one pid file per process.
Each process leads its own process group, so stopping it also stops what it started (a worker's flow runs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from storage.home import sftflow_home

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("worker", "server")  # stop order: the worker first, so its runs are marked before the API goes


@dataclass(frozen=True)
class ServeDirs:
    root: Path

    @classmethod
    def default(cls) -> ServeDirs:
        return cls(sftflow_home() / "serve")

    @property
    def database(self) -> Path:
        return self.root / "prefect.db"

    def pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / f"{name}.log"


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/api"


def prefect_command(*args: str) -> list[str]:
    """The `prefect` CLI of this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "prefect", *args]


def child_environment(api: str | None, dirs: ServeDirs) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{dirs.database}"
    env["SFTFLOW_HOME"] = str(sftflow_home())
    # flow runs import this checkout's code (not another editable install of the package)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("PREFECT_API_URL", None)
    if api is not None:
        env["PREFECT_API_URL"] = api
    return env


def running_pid(dirs: ServeDirs, name: str) -> int | None:
    """The pid in `name`'s pid file if that process is alive and is still a prefect process."""
    path = dirs.pid_file(name)
    if not path.exists():
        return None
    pid = int(path.read_text().strip())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid  # no /proc (macOS): alive is the best we can check
    return pid if b"prefect" in cmdline else None  # a reused pid belongs to someone else


def spawn(dirs: ServeDirs, name: str, command: list[str], env: dict[str, str]) -> int:
    dirs.root.mkdir(parents=True, exist_ok=True)
    log = open(dirs.log_file(name), "ab")  # noqa: SIM115 - handed to the child, which outlives this process
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=ROOT, start_new_session=True)
    dirs.pid_file(name).write_text(str(process.pid))
    return process.pid


def wait_healthy(url: str, pid: int, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise RuntimeError(f"the Prefect server exited; see {log}") from None
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server did not answer at {url} within {timeout_s:.0f}s; see {log}")


def start_server(dirs: ServeDirs, host: str, port: int) -> dict[str, Any]:
    dirs.root.mkdir(parents=True, exist_ok=True)
    url = api_url(host, port)
    pid = running_pid(dirs, "server")
    if pid is None:
        command = prefect_command("server", "start", "--host", host, "--port", str(port))
        env = child_environment(None, dirs)
        env["PREFECT_UI_API_URL"] = url  # the UI's default is port 4200, whatever port the server is on
        pid = spawn(dirs, "server", command, env)
    wait_healthy(url, pid, dirs.log_file("server"))
    return {"api_url": url, "ui_url": url.removesuffix("/api"), "server_pid": pid}


def start_worker(dirs: ServeDirs, url: str, pool: str, heartbeat_s: int) -> int:
    pid = running_pid(dirs, "worker")
    if pid is None:
        env = child_environment(url, dirs)
        env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(heartbeat_s))  # the flow runs' heartbeats
        pid = spawn(dirs, "worker", prefect_command("worker", "start", "--pool", pool, "--type", "process"), env)
    return pid


def stop_process(dirs: ServeDirs, name: str, grace_s: float = 20.0) -> int | None:
    """SIGTERM the process group of `name` (SIGKILL after `grace_s`); the pid stopped, or None."""
    pid = running_pid(dirs, name)
    dirs.pid_file(name).unlink(missing_ok=True)
    if pid is None:
        return None
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return pid
        _reap(pid)
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return pid


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (tests start and stop in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_all(dirs: ServeDirs) -> dict[str, int | None]:
    return {name: stop_process(dirs, name) for name in PROCESSES}
