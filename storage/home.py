"""Where sftflow keeps its local state: $SFTFLOW_HOME (default ./.sftflow), read at call time."""
from __future__ import annotations

import os
from pathlib import Path


def sftflow_home() -> Path:
    return Path(os.environ.get("SFTFLOW_HOME", ".sftflow")).absolute()


def work_root() -> Path:
    """Scratch folders of running stages, one per store key (see storage.stage.StageContext.scratch)."""
    return sftflow_home() / "work"
