"""Where sftflow keeps its local state: $SFTFLOW_HOME (default ./.sftflow), read at call time, here only: the
store (`store/`, unless SFTFLOW_STORE or a config names another), scratch folders (`work/`), digests and local
copies of a remote store's models (`cache/`, unless SFTFLOW_CACHE is set), Prefect's embedded state (`prefect/`)
and the Hugging Face hub cache (`huggingface/`, unless HF_HOME is set: flows/settings.py)."""
from __future__ import annotations

import os
from pathlib import Path


def sftflow_home() -> Path:
    return Path(os.environ.get("SFTFLOW_HOME", ".sftflow")).absolute()


def default_store_url() -> str:
    """SFTFLOW_STORE, else the store folder of $SFTFLOW_HOME."""
    return os.environ.get("SFTFLOW_STORE") or str(sftflow_home() / "store")


def work_root() -> Path:
    """Scratch folders of running stages, one per store key (see storage.stage.StageContext.scratch)."""
    return sftflow_home() / "work"
