"""The partial re-run guarantees, on the real `sft-pipeline` flow, asserted on task run states from the Prefect API.

(The same mechanism on two toy stages is in test_stage_cache.py; here it is the real flow and its real stages.)
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.fault_injection import FAIL_STAGE_ENV
from tests.pipeline_runs import PYTHON, ROOT, api_env, pipeline_config, run_flow, task_states, write_sources

pytest.importorskip("tasks.ingest", reason="the ingest stage is not in this checkout yet")


# the stages a failure in (or `--from`) cluster runs again: cluster and what reads its output, not the base model
FROM_CLUSTER = ("cluster", "select", "format", "train")


@pytest.fixture
def sources(shared_data, tmp_path) -> list[str]:
    return write_sources(shared_data, tmp_path / "sources")


def created(store, key: str) -> str:
    return store.manifest(key)["created"]


def statuses(report) -> dict[str, str]:
    return {row["stage"]: row["status"] for row in report["stages"]}


def expected(sources: list[str], cached: tuple[str, ...] = (), ran: tuple[str, ...] = ()) -> dict[str, list[str]]:
    return {"ingest.source": sources, **{s: ["Cached"] for s in cached}, **{s: ["Completed"] for s in ran}}


def stage_keys(report) -> dict[str, str]:
    return {row["stage"]: row["key"] for row in report["stages"] if row["key"]}


@pytest.mark.slow
def test_retry_of_a_failed_run_runs_only_the_failed_stage_and_later(prefect_api, store, sources, tiny_lm, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    config = pipeline_config(store.url, sources, tiny_lm)
    monkeypatch.setenv(FAIL_STAGE_ENV, "cluster")
    flow_run_id, report = run_flow(config)
    monkeypatch.delenv(FAIL_STAGE_ENV)
    assert not report["ok"] and statuses(report)["select"] == "skipped"
    states = task_states(flow_run_id)
    # the base model does not wait for cluster: it ran beside it
    assert states == {**expected(["Completed"] * 3, ran=("ingest", "embed", "dedup", "base_model")),
                      "cluster": ["Failed"]}
    done = [key for key in stage_keys(report).values()]
    before = {key: created(store, key) for key in done}

    # exactly what a user types (or the UI's Retry button does): the same flow run, run again
    retry = subprocess.run([PYTHON, "-m", "prefect", "flow-run", "retry", str(flow_run_id),
                            "--entrypoint", "flows/pipeline.py:sft_pipeline"],
                           cwd=ROOT, env=api_env(PREFECT_API_URL.value()), capture_output=True, text=True,
                           timeout=180)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert task_states(flow_run_id) == expected(["Cached"] * 3, cached=("ingest", "embed", "dedup", "base_model"),
                                                ran=FROM_CLUSTER)
    assert {key: created(store, key) for key in done} == before  # not rewritten


def test_one_changed_parameter_reruns_only_that_stage_and_later(prefect_api, store, sources, tiny_lm):
    config = pipeline_config(store.url, sources, tiny_lm)
    _, first = run_flow(config)
    changed = config.model_copy(deep=True)
    changed.select.n2 = 2
    flow_run_id, second = run_flow(changed)
    assert task_states(flow_run_id) == expected(["Cached"] * 3, ran=("select", "format", "train"),
                                                cached=("ingest", "embed", "dedup", "cluster", "base_model"))
    before, after = stage_keys(first), stage_keys(second)
    assert all(after[s] == before[s] for s in ("ingest", "embed", "dedup", "cluster"))
    assert all(after[s] != before[s] for s in ("select", "format", "train"))


def test_from_stage_forces_it_and_everything_after(prefect_api, store, sources, tiny_lm):
    config = pipeline_config(store.url, sources, tiny_lm)
    _, first = run_flow(config)
    keys = stage_keys(first)
    before = created(store, keys["cluster"])
    time.sleep(1)  # manifests record seconds
    flow_run_id, again = run_flow(config, from_stage="cluster")
    assert task_states(flow_run_id) == expected(["Cached"] * 3, cached=("ingest", "embed", "dedup", "base_model"),
                                                ran=FROM_CLUSTER)
    assert stage_keys(again) == keys  # same keys, rebuilt in place
    assert statuses(again) == {**{s: "cached" for s in keys}, **{s: "ran" for s in FROM_CLUSTER}}
    assert created(store, keys["cluster"]) != before and store.verify(keys["cluster"])


def test_deleted_or_corrupted_datasets_are_rebuilt_not_served(prefect_api, store, sources, tiny_lm):
    config = pipeline_config(store.url, sources, tiny_lm)
    _, first = run_flow(config)
    keys = stage_keys(first)
    shard = sorted(Path(store.root, keys["ingest[2]"]).glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a truncated shard
    store.delete(keys["cluster"])
    flow_run_id, again = run_flow(config)
    # ingest[2] is rebuilt; its content is the same, so the merge key is too and everything after is a hit, except
    # the deleted cluster dataset, which is rebuilt
    assert task_states(flow_run_id) == expected(["Cached", "Cached", "Completed"], ran=("cluster",),
                                                cached=("ingest", "embed", "dedup", "select", "base_model", "format",
                                                        "train"))
    assert stage_keys(again) == keys and all(store.verify(key) for key in keys.values())
    assert store.read_table(keys["ingest[2]"]).num_rows == first["stages"][2]["rows_out"]


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_leave_one_copy_of_each_dataset(prefect_api, store, sources, tiny_lm):
    from concurrent.futures import ThreadPoolExecutor

    config = pipeline_config(store.url, sources, tiny_lm)
    with ThreadPoolExecutor(2) as pool:
        reports = [report for _, report in pool.map(run_flow, [config, config])]
    assert all(report["ok"] for report in reports)
    assert stage_keys(reports[0]) == stage_keys(reports[1])
    keys = set(stage_keys(reports[0]).values())
    keys |= {c for key in list(keys) for c in store.manifest(key).get("companions", {}).values()}  # quarantine
    assert set(store.keys()) == keys  # one copy each, nothing else published
    assert all(store.verify(key) for key in keys)
    tmp = Path(store.root, ".tmp")
    assert not tmp.exists() or not any(tmp.iterdir())  # no half-written leftovers
