"""Embedded defaults for Prefect: no server needed, state under .sftflow/, quiet and offline.

Must run before `prefect` is imported. Values already in the environment win, so `PREFECT_API_URL`
pointing at a real server makes every command use that server.
"""
from __future__ import annotations

import os
from pathlib import Path

from storage.home import sftflow_home

STAGE_LOGGER = "sftflow"  # every stage module logs below it (storage/stage.py, tasks/*)


def configure_environment() -> None:
    home = sftflow_home()
    defaults = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect" / "results"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # stage logs outside a flow run (the CLI without Prefect) are not for the API: no warning per line
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "HF_HOME": str(home / "huggingface"),  # the hub cache in sftflow's home (HF_HOME set: shared)
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if os.environ.get("SFTFLOW_ONLINE") == "1":  # users with network access may reach the Hugging Face hub
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            defaults.pop(name)
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    # Prefect sends the records of these loggers to the API: stage logs reach the flow run's Logs tab
    extra = [name for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(extra + [STAGE_LOGGER] * (STAGE_LOGGER not in extra))
    # Prefect's SQLite database cannot be created in a folder that does not exist yet
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
