"""Scale-out: the sharded stages on a local 2-worker Dask cluster give what the default runner gives; a remote
cluster with a local store is refused before anything runs."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from flows.config import RunnerConfig
from tasks.errors import BadInputError
from tests.pipeline_runs import PYTHON, ROOT, pipeline_config, run_flow, task_states, write_sources

pytest.importorskip("tasks.ingest", reason="the ingest stage is not in this checkout yet")


def outputs(store, report) -> dict[str, tuple[str, int, list[str] | None]]:
    """stage -> (key, rows, sorted record ids where the dataset has an `id` column) of every dataset of the run."""
    return {row["stage"]: (row["key"], row["rows_out"], record_ids(store, row["key"]))
            for row in report["stages"] if row["key"]}


def record_ids(store, key: str) -> list[str] | None:
    try:
        return sorted(store.read_table(key, ["id"]).column("id").to_pylist())
    except KeyError:  # model and token datasets carry no record ids
        return None


@pytest.mark.slow
def test_dask_local_cluster_matches_the_default_runner(prefect_api, shared_data, tmp_path, tiny_lm):
    from storage.store import Store

    sources = write_sources(shared_data, tmp_path / "sources", count=4, rows=25)
    thread_store, dask_store = Store(str(tmp_path / "thread")), Store(str(tmp_path / "dask"))
    _, expected = run_flow(pipeline_config(thread_store.url, sources, tiny_lm))
    config = pipeline_config(dask_store.url, sources, tiny_lm, runner={"task_runner": "dask", "workers": 2})
    # started the way a deployment or the UI starts it (on the default runner): the stages move to a Dask subflow
    flow_run_id, report = run_flow(config)
    assert report["ok"] and all(row["status"] == "ran" for row in report["stages"])
    child = subflow_runs(flow_run_id)
    assert len(child) == 1 and task_states(child[0].id)["ingest.source"] == ["Completed"] * 4
    assert outputs(dask_store, report) == outputs(thread_store, expected)


def subflow_runs(flow_run_id):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))


def test_remote_cluster_with_a_local_store_is_refused(tmp_path):
    from flows.pipeline import task_runner

    for runner in ("dask", "ray"):
        with pytest.raises(BadInputError, match="local path.*cannot read"):
            task_runner(RunnerConfig(task_runner=runner, address="tcp://10.1.2.3:8786"), str(tmp_path / "store"))


def test_cli_refuses_a_remote_cluster_with_a_local_store(shared_data, tmp_path):
    sources = write_sources(shared_data, tmp_path / "sources", count=1, rows=5)
    path = tmp_path / "pipeline.yaml"
    config = pipeline_config(str(tmp_path / "store"), sources, tmp_path / "no-model")
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    done = subprocess.run([PYTHON, "-m", "flows", "run", str(path), "--task-runner", "dask",
                           "--address", "tcp://10.1.2.3:8786"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "is a local path" in done.stderr and "s3://" in done.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())  # nothing ran


def test_ray_without_its_extra_says_how_to_get_it(tmp_path):
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        from flows.pipeline import task_runner

        with pytest.raises(BadInputError, match=r"sftflow\[ray\]"):
            task_runner(RunnerConfig(task_runner="ray"), str(tmp_path / "store"))
    else:
        pytest.skip("prefect-ray is installed here; the ray runner itself is exercised by users' clusters")


@pytest.mark.slow
def test_embed_and_iqs_in_row_range_parts_on_two_dask_workers_match_one_task(prefect_api, shared_data, tmp_path,
                                                                             tiny_lm):
    import numpy as np

    from storage.store import Store
    from tasks.embed import embedding_matrix

    sources = write_sources(shared_data, tmp_path / "sources", count=2, rows=30)
    whole, parts = Store(str(tmp_path / "whole")), Store(str(tmp_path / "parts"))
    common = {"iqs": {"scorer": "length"}, "dedup": {"enabled": False}}
    _, expected = run_flow(pipeline_config(whole.url, sources, tiny_lm, **common), until_stage="select")
    config = pipeline_config(parts.url, sources, tiny_lm, embed={"shards": 2}, runner={"task_runner": "dask",
                             "workers": 2}, **{**common, "iqs": {"scorer": "length", "shards": 3}})
    _, report = run_flow(config, until_stage="select")
    rows = {row["stage"]: row for row in report["stages"]}
    assert [s for s in rows if s.startswith(("embed", "iqs"))] == ["embed[0/2]", "embed[1/2]", "embed", "iqs[0/3]",
                                                                    "iqs[1/3]", "iqs[2/3]", "iqs"]
    assert sum(rows[f"iqs[{i}/3]"]["rows_out"] for i in range(3)) == rows["iqs"]["rows_out"] == 60
    before = {row["stage"]: row["key"] for row in expected["stages"]}
    a, b = whole.read_table(before["embed"]), parts.read_table(rows["embed"]["key"])
    assert a.column("id").to_pylist() == b.column("id").to_pylist()  # the parts gathered in row order
    np.testing.assert_allclose(embedding_matrix(a.column("embedding")), embedding_matrix(b.column("embedding")),
                               atol=1e-5)  # other batches, same vectors
    scored_a, scored_b = whole.read_table(before["iqs"]), parts.read_table(rows["iqs"]["key"])
    assert scored_a.to_pylist() == scored_b.to_pylist()  # ranks over all rows, not per part
    assert record_ids(whole, before["select"]) == record_ids(parts, rows["select"]["key"])
