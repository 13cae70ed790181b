"""Every stage of sftflow: one module per stage, named after it (`iqs.train` → iqs_train.py), each declaring
`STAGE = Stage(...)` (see storage/stage.py). Adding a stage is adding a module here (or in a plugin,
tasks/plugins.py); the pipeline, `sftflow stage` and the config schema find it.
"""
from __future__ import annotations

import functools

from storage.stage import Stage
from tasks.errors import BadInputError
from tasks.plugins import declared


@functools.cache
def registered() -> dict[str, Stage]:
    return declared(Stage, __name__, "stage")


def get(name: str) -> Stage:
    stages = registered()
    if name not in stages:
        raise BadInputError(f"no stage {name!r}; the stages are {', '.join(stages)}", field="stage")
    return stages[name]
