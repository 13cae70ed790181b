"""The partial re-run guarantees, on the real `sft-pipeline` flow, asserted on task run states from the Prefect API.

(The same mechanism on two toy stages is in test_stage_cache.py; here it is the real flow and its real stages.)
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from storage.stage import FAIL_STAGE_ENV
from tests.pipeline_runs import PYTHON, ROOT, api_env, pipeline_config, run_flow, task_states, write_sources

pytest.importorskip("tasks.ingest", reason="the ingest stage is not in this checkout yet")


@pytest.fixture
def sources(shared_data, tmp_path) -> list[str]:
    return write_sources(shared_data, tmp_path / "sources")


def created(store, key: str) -> str:
    return store.manifest(key)["created"]


def stage_keys(report) -> dict[str, str]:
    return {row["stage"]: row["key"] for row in report["stages"] if row["key"]}


@pytest.mark.slow
def test_retry_of_a_failed_run_runs_only_the_failed_stage_and_later(prefect_api, store, sources, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    config = pipeline_config(store.url, sources)
    monkeypatch.setenv(FAIL_STAGE_ENV, "ingest")  # the merge step of ingest, after the per-source tasks
    flow_run_id, report = run_flow(config)
    monkeypatch.delenv(FAIL_STAGE_ENV)
    assert not report["ok"]
    states = task_states(flow_run_id)
    assert states["ingest.source"] == ["Completed"] * 3 and states["ingest"] == ["Failed"]
    source_keys = [row["key"] for row in report["stages"] if row["stage"].startswith("ingest[")]
    before = {key: created(store, key) for key in source_keys}

    # exactly what a user types (or the UI's Retry button does): the same flow run, run again
    retry = subprocess.run([PYTHON, "-m", "prefect", "flow-run", "retry", str(flow_run_id),
                            "--entrypoint", "flows/pipeline.py:sft_pipeline"],
                           cwd=ROOT, env=api_env(PREFECT_API_URL.value()), capture_output=True, text=True,
                           timeout=120)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    states = task_states(flow_run_id)
    assert states["ingest.source"] == ["Cached"] * 3
    assert states["ingest"] == ["Completed"]
    assert all(state == ["Completed"] for name, state in states.items() if name not in ("ingest.source",))
    assert {key: created(store, key) for key in source_keys} == before  # not rewritten


def test_one_changed_parameter_reruns_only_what_it_touches(prefect_api, store, sources):
    _, first = run_flow(pipeline_config(store.url, sources))
    changed = pipeline_config(store.url, sources)
    changed.ingest.sources[1].format = "alpaca"  # a different parameter of one source (same rows)
    flow_run_id, second = run_flow(changed)
    states = task_states(flow_run_id)
    assert states["ingest.source"] == ["Cached", "Cached", "Completed"]
    assert states["ingest"] == ["Completed"]
    keys_before, keys_after = stage_keys(first), stage_keys(second)
    assert keys_after["ingest[0]"] == keys_before["ingest[0]"] and keys_after["ingest[2]"] == keys_before["ingest[2]"]
    assert keys_after["ingest[1]"] != keys_before["ingest[1]"]


def test_from_stage_forces_it_and_everything_after(prefect_api, store, sources):
    config = pipeline_config(store.url, sources)
    _, first = run_flow(config)
    key = stage_keys(first)["ingest"]
    before = created(store, key)
    time.sleep(1)  # manifests record seconds
    flow_run_id, again = run_flow(config, from_stage="ingest")
    states = task_states(flow_run_id)
    assert states and all(state == ["Completed"] * len(state) for state in states.values())
    assert stage_keys(again) == stage_keys(first)  # same keys, rebuilt in place
    assert all(row["status"] == "ran" for row in again["stages"])
    assert created(store, key) != before and store.verify(key)

    flow_run_id, cached = run_flow(config)
    assert all(state == ["Cached"] * len(state) for state in task_states(flow_run_id).values())


def test_deleted_or_corrupted_datasets_are_rebuilt_not_served(prefect_api, store, sources):
    config = pipeline_config(store.url, sources)
    _, first = run_flow(config)
    keys = stage_keys(first)
    shard = sorted(Path(store.root, keys["ingest[2]"]).glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a truncated shard
    store.delete(keys["ingest"])
    flow_run_id, again = run_flow(config)
    states = task_states(flow_run_id)
    assert states["ingest.source"] == ["Cached", "Cached", "Completed"]
    assert states["ingest"] == ["Completed"]
    assert stage_keys(again) == keys and store.verify(keys["ingest"]) and store.verify(keys["ingest[2]"])
    assert store.read_table(keys["ingest"]).num_rows == first["stages"][3]["rows_out"]


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_leave_one_copy_of_each_dataset(prefect_api, store, sources, tmp_path):
    """Two `sftflow run` processes on the same config and store, started together."""
    import json

    import yaml
    from prefect.settings import PREFECT_API_URL

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline_config(store.url, sources).model_dump(mode="json")))
    command = [PYTHON, "-m", "flows", "run", str(path), "--json"]
    env = api_env(PREFECT_API_URL.value())
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    reports = [json.loads(out) for out, _ in outputs]
    assert stage_keys(reports[0]) == stage_keys(reports[1])
    keys = set(stage_keys(reports[0]).values())
    keys |= {c for key in list(keys) for c in store.manifest(key).get("companions", {}).values()}  # quarantine
    assert set(store.keys()) == keys  # one copy each, nothing else published
    assert all(store.verify(key) for key in keys)
    leftovers = [p for p in Path(store.root, ".tmp").glob("*")] if Path(store.root, ".tmp").exists() else []
    assert leftovers == []
