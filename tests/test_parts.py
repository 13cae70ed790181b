"""Long stages build in row-range parts, each published as it finishes: a crash (an exception, or `kill -9` of
the process) costs only the part in flight, and the same command again finds the finished parts in the store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from storage.schema import make_record, records_to_table
from storage.stage import Stage, StageOutput, run_stage
from storage.store import row_range
from tests.conftest import ROOT

BUILT: list[tuple[int, int] | None] = []  # the row range of every build of the doubling stage
FAIL_AT: list[int] = []  # the part index whose build fails (once)
PART_SECONDS: list[float] = []  # how long each build takes, when set


def build_doubled(ctx, numbers):
    start, stop = row_range(numbers.rows, ctx.shard)
    BUILT.append(ctx.shard)
    if PART_SECONDS:
        time.sleep(PART_SECONDS[0])
    if ctx.shard is not None and FAIL_AT and ctx.shard[0] == FAIL_AT[0]:
        FAIL_AT.clear()
        raise RuntimeError("the machine stopped")
    xs = ctx.store.read_table(numbers.key).column("x").to_pylist()[start:stop]
    return StageOutput(table=pa.table({"x": xs, "doubled": [2 * x for x in xs]}),
                       stats={"rows": len(xs), "seconds": 0.5, "model": "same everywhere", "first": xs[0]})


DOUBLED = Stage("doubled", "1", build_doubled, params=dict, shard_input="numbers", part_rows=lambda p: p["part_rows"])


@pytest.fixture
def numbers(store):
    return store.publish_table("numbers-test", "numbers", pa.table({"x": list(range(50))}))


def test_a_long_stage_builds_in_parts_and_gathers_them_in_order(store, numbers):
    BUILT.clear()
    whole = run_stage(DOUBLED, {"part_rows": 0}, {"numbers": numbers}, store, key="doubled-whole")
    parts = run_stage(DOUBLED, {"part_rows": 16}, {"numbers": numbers}, store)
    assert BUILT == [None, (0, 4), (1, 4), (2, 4), (3, 4)]  # 50 rows in 4 parts of at most 16
    assert store.read_table(parts.ref.key).equals(store.read_table(whole.ref.key))
    stats = parts.stats
    assert stats["rows"] == 50 and stats["seconds"] == 2.0 and stats["model"] == "same everywhere"
    assert "first" not in stats and [p["first"] for p in stats["parts"]] == [0, 12, 25, 37]
    assert store.manifest(parts.ref.key)["inputs"] == {"numbers": numbers.key}  # lineage to the input, not parts
    assert [k for k in store.keys() if k.startswith("doubled-")] == sorted(["doubled-whole", parts.ref.key])
    # part_rows is no key material: the same output, whatever the part size
    assert DOUBLED.key({"part_rows": 16}, {"numbers": numbers.key}) != "doubled-whole"


def test_a_crash_in_a_part_keeps_the_finished_parts(store, numbers):
    BUILT.clear()
    FAIL_AT.append(2)
    with pytest.raises(RuntimeError, match="machine stopped"):
        run_stage(DOUBLED, {"part_rows": 10}, {"numbers": numbers}, store)
    assert BUILT == [(0, 5), (1, 5), (2, 5)]
    BUILT.clear()
    again = run_stage(DOUBLED, {"part_rows": 10}, {"numbers": numbers}, store)
    assert BUILT == [(2, 5), (3, 5), (4, 5)]  # parts 0 and 1 came from the store
    assert store.read_table(again.ref.key).column("doubled").to_pylist() == [2 * x for x in range(50)]


def test_a_resumed_output_costs_every_part_not_only_the_resumed_ones(store, numbers):
    """The cost an ablation report gives (build seconds) counts the parts an earlier run built too."""
    FAIL_AT.append(2)
    PART_SECONDS.append(0.3)
    try:
        with pytest.raises(RuntimeError, match="machine stopped"):
            run_stage(DOUBLED, {"part_rows": 10}, {"numbers": numbers}, store)
        began = time.perf_counter()
        again = run_stage(DOUBLED, {"part_rows": 10}, {"numbers": numbers}, store)
        resumed = time.perf_counter() - began
    finally:
        PART_SECONDS.clear()
    manifest = store.manifest(again.ref.key)
    assert manifest["build_seconds"] >= 5 * 0.3 > resumed  # 2 parts from the first run, 3 from this one


def test_scores_in_parts_are_ranked_over_every_part(store):
    from tasks import scorers
    from tasks.stages.iqs import STAGE as IQS

    rows = [make_record(uri="t", fmt="t", row=i, system=None,
                        messages=[{"role": "user", "content": f"question {i}"},
                                  {"role": "assistant", "content": "word " * (i % 17 + 1)}]) for i in range(40)]
    conversations = store.publish_table("conversations-parts", "ingest", records_to_table(rows))
    whole = run_stage(IQS, scorers.parse_config({"scorer": "length"}), {"conversations": conversations}, store)
    parts = run_stage(IQS, scorers.parse_config({"scorer": "length", "part_rows": 7}),
                      {"conversations": conversations}, store)
    assert parts.ref.key == whole.ref.key  # the same dataset: part_rows is not in the key ...
    parts = run_stage(IQS, scorers.parse_config({"scorer": "length", "part_rows": 7}),
                      {"conversations": conversations}, store, force=True)  # ... so force it to build in parts
    assert len(parts.stats["parts"]) == 6
    got, want = store.read_table(parts.ref.key), store.read_table(whole.ref.key)
    assert got.select(["id", "iqs_score", "iqs_rank"]).equals(want.select(["id", "iqs_score", "iqs_rank"]))


def _part_keys(store, prefix: str) -> list[str]:
    return [k for k in store.keys() if k.startswith(prefix) and "shard" in store.manifest(k)]


def test_kill_9_during_embed_loses_at_most_the_part_in_flight(store, tmp_path):
    """A real `sftflow stage embed` process, killed with SIGKILL after two of its six parts were published;
    the same command again embeds only the parts that were not, and the vectors equal one uninterrupted run's."""
    rows = [make_record(uri="t", fmt="t", row=i, system=None,
                        messages=[{"role": "user", "content": f"Name {i} things that are blue."},
                                  {"role": "assistant", "content": "The sky, the sea and a blueberry. " * (i % 5)}])
            for i in range(96)]
    conversations = store.publish_table("conversations-kill", "ingest", records_to_table(rows))
    command = [sys.executable, "-m", "flows", "stage", "embed", "--input", f"conversations={conversations.key}",
               "--set", "part_rows=16", "--set", "device=cpu", "--store", store.url, "--json"]
    env = {**os.environ, "SFTFLOW_PLUGINS": "tests.fault_injection", "SFTFLOW_SLOW_STAGE": "embed:2"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_part_keys(store, "embed-")) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no part was published in 5 minutes"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = _part_keys(store, "embed-")
    assert 2 <= len(survived) < 6 and process.returncode == -signal.SIGKILL

    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "SFTFLOW_PLUGINS": ""}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [line for line in done.stderr.splitlines() if "found in the store" in line]
    assert len(found) == len(survived)  # the finished parts were not embedded again
    key = json.loads(done.stdout.strip().splitlines()[-1])["key"]
    assert _part_keys(store, "embed-") == []  # gathered: the parts are gone
    from storage.stage import run_stage as run_alone
    from tasks.stages.embed import STAGE, EmbedConfig

    whole = run_alone(STAGE, EmbedConfig(device="cpu", part_rows=0), {"conversations": conversations}, store,
                      key="embed-uninterrupted")
    got = np.stack(store.read_table(key).column("embedding").to_numpy(zero_copy_only=False))
    want = np.stack(store.read_table(whole.ref.key).column("embedding").to_numpy(zero_copy_only=False))
    # the same rows in the same order; each part sorts and batches its own rows, so equal to float rounding
    assert store.read_table(key).column("id").equals(store.read_table(whole.ref.key).column("id"))
    np.testing.assert_allclose(got, want, atol=2e-3)
