"""The stage wrapper against a real Prefect API: cache hits are checked against the store."""
import os
import shutil
from pathlib import Path

import pyarrow as pa
from prefect import flow

from flows.execute import PipelineFailed, publish_table, run_plan
from flows.plan import Plan
from storage.stage import Stage, StageOutput, run_stage
from storage.store import Store
from tasks.errors import BadInputError
from tests.fault_injection import FAIL_STAGE_ENV

CALLS = {"numbers": 0, "squares": 0}


def build_numbers(ctx):
    CALLS["numbers"] += 1
    if ctx.params["n"] < 0:
        raise BadInputError("n must be >= 0", field="n")
    return StageOutput(table=pa.table({"x": list(range(ctx.params["n"]))}), stats={"n": ctx.params["n"]})


def build_squares(ctx, numbers):
    CALLS["squares"] += 1
    xs = ctx.store.read_table(numbers.key).column("x").to_pylist()
    return StageOutput(table=pa.table({"x": xs, "sq": [x * x for x in xs]}),
                       companions={"odd": pa.table({"x": [x for x in xs if x % 2]})})


NUMBERS = Stage("numbers", "1", build_numbers, params=dict, retries=1)
SQUARES = Stage("squares", "1", build_squares, params=dict, retries=0)


@flow(persist_result=True)
def toy_flow(store: str, n: int, from_stage: str | None = None) -> dict:
    plan = Plan(Store(store))
    numbers = plan.add(NUMBERS, {"n": n})
    plan.add(SQUARES, {}, {"numbers": numbers})
    return publish_table(run_plan(plan.compute_keys(), from_stage), "toy", "toy-run")


def statuses(report):
    return {row["stage"]: row["status"] for row in report["stages"]}


def run_toy(store, n, from_stage=None):
    state = toy_flow(store=store.url, n=n, from_stage=from_stage, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, PipelineFailed):
        return result.report
    if isinstance(result, BaseException):
        raise result
    return result


def test_run_stage_without_prefect(store):
    first = run_stage(NUMBERS, {"n": 5}, {}, store)
    again = run_stage(NUMBERS, {"n": 5}, {}, store)
    assert (first.status, again.status) == ("ran", "cached") and first.ref.key == again.ref.key
    sq = run_stage(SQUARES, {}, {"numbers": first.ref}, store)
    manifest = store.manifest(sq.ref.key)
    assert manifest["inputs"] == {"numbers": first.ref.key}
    assert store.read_table(manifest["companions"]["odd"]).column("x").to_pylist() == [1, 3]


def test_work_outside_the_store_is_checked_before_a_cache_hit(store, tmp_path):
    """A stage that writes a file outside the store (as export does) is rebuilt once the file is gone, and its
    record then describes the new build; its fingerprint is recorded in the manifest."""
    outside = tmp_path / "outside.txt"

    def build(ctx):
        outside.write_text(ctx.params["text"])
        return StageOutput(stats={"written": ctx.params["text"]}, files={"note.txt": "written outside"})

    writer = Stage("writer", "1", build, params=dict, present_outside=lambda store, key, params: outside.exists(),
                   fingerprint=lambda params: {"content": "abc"})
    first = run_stage(writer, {"text": "hi"}, {}, store)
    assert run_stage(writer, {"text": "hi"}, {}, store).status == "cached"
    outside.unlink()
    again = run_stage(writer, {"text": "hi"}, {}, store)
    assert again.status == "ran" and again.ref.key == first.ref.key and outside.read_text() == "hi"
    assert store.manifest(first.ref.key)["fingerprint"] == {"content": "abc"}


def test_cached_rebuilt_and_injected_failure(prefect_api, store):
    report = run_toy(store, 4)
    assert statuses(report) == {"numbers": "ran", "squares": "ran"}
    key = report["stages"][1]["key"]
    created = store.manifest(key)["created"]

    report = run_toy(store, 4)
    assert statuses(report) == {"numbers": "cached", "squares": "cached"}
    assert store.manifest(key)["created"] == created  # not rewritten

    # a deleted dataset is rebuilt, never returned from Prefect's cache
    shutil.rmtree(Path(store.root, key))
    before = CALLS["squares"]
    report = run_toy(store, 4)
    assert statuses(report) == {"numbers": "cached", "squares": "ran"} and CALLS["squares"] == before + 1
    assert store.verify(key)

    # a changed parameter re-runs that stage and what follows
    report = run_toy(store, 6)
    assert statuses(report) == {"numbers": "ran", "squares": "ran"}

    # an injected failure fails the flow, later stages are skipped
    os.environ[FAIL_STAGE_ENV] = "squares"
    try:
        report = run_toy(store, 7)
    finally:
        del os.environ[FAIL_STAGE_ENV]
    assert statuses(report) == {"numbers": "ran", "squares": "failed"}
    report = run_toy(store, 7)
    assert statuses(report) == {"numbers": "cached", "squares": "ran"}

    # --from forces the stage and everything after it
    report = run_toy(store, 7, from_stage="numbers")
    assert statuses(report) == {"numbers": "ran", "squares": "ran"}


def test_bad_input_is_not_retried(prefect_api, store):
    before = CALLS["numbers"]
    report = run_toy(store, -1)
    assert statuses(report) == {"numbers": "failed", "squares": "skipped"}
    assert "n must be >= 0" in report["stages"][0]["error"]
    assert CALLS["numbers"] == before + 1  # retries=1, but bad input is not retried
