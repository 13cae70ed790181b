"""A test plugin that fails or slows a stage named in an environment variable, in this process and in the
processes a test starts with SFTFLOW_PLUGINS=tests.fault_injection (a served worker, a retried flow run)."""
from __future__ import annotations

import os
import time

from storage.stage import BUILD_HOOKS

FAIL_STAGE_ENV = "SFTFLOW_FAIL_STAGE"  # names of stages that must fail (comma-separated)
SLOW_STAGE_ENV = "SFTFLOW_SLOW_STAGE"  # "stage:seconds,...": sleep before building (to kill a run mid-way)
PLUGIN = "tests.fault_injection"


def inject(stage, ctx) -> None:
    if stage.name in os.environ.get(FAIL_STAGE_ENV, "").split(","):
        raise RuntimeError(f"injected failure in stage {stage.name!r} ({FAIL_STAGE_ENV})")
    delays = dict(item.split(":") for item in os.environ.get(SLOW_STAGE_ENV, "").split(",") if ":" in item)
    if stage.name in delays:
        time.sleep(float(delays[stage.name]))


if inject not in BUILD_HOOKS:
    BUILD_HOOKS.append(inject)
