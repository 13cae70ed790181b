"""`sftflow serve [--host H] [--port P] [CONFIG.yaml] [--json]` / `sftflow serve --stop`: a local Prefect server
with the work pool, the `gpu` limit, the deployments and a worker; `--stop` stops them by pid.

A command of the `sftflow` CLI from the deployments layer: flows/cli finds it through the `sftflow.commands`
entry point (pyproject.toml), so flows never imports deployments."""
from __future__ import annotations

import argparse

from flows.cli.output import emit


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="start a local Prefect server, register the deployments, start a worker")
    parser.add_argument("config", nargs="?", help="pipeline YAML whose values become the deployments' default "
                                                  "parameters (the UI's run form); the demo config when empty")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--api", metavar="URL", help="register with this existing Prefect server instead of "
                                                     "starting one (e.g. a team server; the pool must exist there)")
    parser.add_argument("--pool", default=None, help="work pool name (default: process)")
    parser.add_argument("--crash-after", type=float, default=None, metavar="SECONDS",
                        help="mark a run Crashed after this long without a heartbeat (default 90; heartbeats "
                             "every 30 s)")
    parser.add_argument("--no-worker", action="store_true", help="start the server and register, but no worker")
    parser.add_argument("--stop", action="store_true", help="stop the worker and the server started by serve")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from deployments.server import ServeDirs, start_server, start_worker, stop_all

    dirs = ServeDirs.default()
    if args.stop:
        stopped = stop_all(dirs)
        text = "\n".join(f"{name}: {'stopped pid ' + str(pid) if pid else 'not running'}"
                         for name, pid in stopped.items())
        emit({"stopped": stopped}, args.json, text)
        return 0

    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.definitions import HEARTBEAT_GRACE_S, HEARTBEAT_S, WORK_POOL, register_all
    from flows.cli.run import DEMO_CONFIG
    from flows.config import load_config

    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = load_config(args.config or (DEMO_CONFIG if DEMO_CONFIG.exists() else None))
    pool = args.pool or WORK_POOL
    if args.api:
        result = {"api_url": args.api.rstrip("/"), "ui_url": args.api.rstrip("/").removesuffix("/api")}
    else:
        result = start_server(dirs, args.host, args.port)
    with temporary_settings({PREFECT_API_URL: result["api_url"]}):
        result.update(register_all(config, pool, args.crash_after or HEARTBEAT_GRACE_S))
    if not args.no_worker:
        result["worker_pid"] = start_worker(dirs, result["api_url"], pool, HEARTBEAT_S)
    result["logs"] = str(dirs.root)
    text = "\n".join([
        f"Prefect UI: {result['ui_url']}  (API {result['api_url']}, database {dirs.database})",
        f"work pool: {pool}   gpu concurrency limit: {result['concurrency_limits']['gpu']}",
        "deployments: " + ", ".join(result["deployments"]),
        *(f"not registered: {m}" for m in result["missing"]),
        f"server pid {result.get('server_pid', '(not ours)')}, worker pid {result.get('worker_pid', '(none)')}",
        f"logs in {dirs.root}; stop with `sftflow serve --stop`",
        f"use it from the CLI: export PREFECT_API_URL={result['api_url']}",
    ])
    emit(result, args.json, text)
    return 0
