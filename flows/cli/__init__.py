"""The `sftflow` command. Each sub-command lives in its own module with a `register(subparsers)`: the modules of
this package, and those an installed package names in the entry point group `sftflow.commands` (the
deployments layer's `serve`, which sits above the flows and so cannot be imported from here)."""
from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import pkgutil
import sys
import threading
from pathlib import Path
from typing import NoReturn

from flows.cli.output import emit
from flows.quiet import silence_third_party
from flows.settings import STAGE_LOGGER, configure_environment

COMMANDS_GROUP = "sftflow.commands"


def command_modules() -> list[str]:
    """Every module with a `register(subparsers)`: this package's and the `sftflow.commands` entry points'."""
    from importlib.metadata import entry_points

    here = Path(__file__).resolve().parent
    named = {m.name: f"flows.cli.{m.name}" for m in pkgutil.iter_modules([str(here)]) if m.name != "output"}
    named.update({ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)})
    return [named[name] for name in sorted(named)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftflow", description="From raw instruction data to a LoRA-tuned model.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging on stderr, other libraries' warnings and notices included")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(verbose: bool) -> None:
    """One stderr handler for every logger; other libraries' known-harmless lines silenced unless `verbose`."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger(STAGE_LOGGER).setLevel(level)  # its own level: flows/stage.py sets INFO where none is set
    if not verbose:
        silence_third_party()


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from tasks.errors import BadInputError

    try:
        return int(args.handler(args) or 0)
    except (BadInputError, FileNotFoundError) as exc:
        bad_input = isinstance(exc, BadInputError)
        print(f"sftflow {args.command}: {'bad input: ' if bad_input else ''}{exc}", file=sys.stderr)
        if getattr(args, "json", False):  # still one JSON object on stdout, for scripts that parse it
            where = {k: getattr(exc, k) for k in ("file", "row", "field")} if bad_input else {}
            emit({"ok": False, "error": str(exc), **where}, as_json=True)
        return 2


def entry() -> None:
    """The process entry point (the `sftflow` script and `python -m flows`)."""
    exit_process(main())


def exit_process(code: int) -> NoReturn:
    """Exit once the work is done and its output written: run what an interpreter exit runs (other threads, then
    the exit handlers, where Prefect stops the servers it started and sends its last logs), but skip the teardown
    after them, where Arrow's native thread pool, still alive, aborts about one process in two after success
    ("terminate called without an active exception", apache/arrow#34314)."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
