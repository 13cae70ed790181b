"""One precision rule for every model stage (tasks/device.py): auto = bf16 autocast where the hardware has bf16
units, fp32 elsewhere; resolved before keying; bf16 without the units is bad input naming them."""
from __future__ import annotations

import json
import os

import pytest

import tasks.device as device
from storage.schema import make_record, records_to_table
from tasks.errors import BadInputError


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ())


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ("amx_bf16", "avx512_bf16"))
    measured_fastest(monkeypatch, "bf16")


def measured_fastest(monkeypatch, choice: str) -> None:
    """This machine's calibration, as if measured: `choice` is the faster (tasks/calibrate.py)."""
    import tasks.calibrate as calibrate

    def fake(kind, where, candidates=("fp32", "bf16"), force=False):
        seconds = {"fp32": 1.0, "bf16": 1.4 if choice == "fp32" else 0.5}
        return calibrate.Calibration(kind, where, choice, seconds, "now")

    monkeypatch.setattr(calibrate, "calibrate", fake)


def test_auto_is_bf16_on_a_cpu_with_bf16_units_and_fp32_elsewhere(bf16_cpu):
    chosen = device.resolve_precision("auto", "cpu", field="x")
    assert (chosen.name, chosen.device) == ("bf16", "cpu") and "amx_bf16" in chosen.reason
    assert device.resolve_precision("fp32", "cpu", field="x").name == "fp32"  # one setting away, exact
    gated = device.resolve_precision("auto", "cpu", field="x", auto_bf16=False)
    assert gated.name == "fp32" and "gate" in gated.reason  # a stage whose bf16 missed its quality gate


def test_auto_is_fp32_without_bf16_units_and_bf16_is_bad_input_naming_them(no_bf16_cpu):
    chosen = device.resolve_precision("auto", "cpu", field="x")
    assert chosen.name == "fp32" and "amx_bf16" in chosen.reason and "avx512_bf16" in chosen.reason
    from tasks.stages.train import PRECISION, TrainConfig

    with pytest.raises(BadInputError, match="amx_bf16 or avx512_bf16") as err:
        PRECISION.resolve(TrainConfig(precision="bf16"))
    assert err.value.field == "train.precision"
    with pytest.raises(BadInputError, match="CUDA"):
        PRECISION.resolve(TrainConfig(precision="fp16"))
    with pytest.raises(BadInputError, match="computes in auto, fp32, bf16, fp16") as err:
        PRECISION.resolve(TrainConfig(precision="int8"))  # one setting type; each stage says what it supports


def test_the_resolved_precision_is_in_the_key(monkeypatch, store):
    """An fp32 machine and a bf16 machine never share a cached output by accident."""
    from tasks.stages.embed import STAGE as EMBED
    from tasks.stages.embed import EmbedConfig
    from tasks.stages.evaluate import STAGE as EVALUATE
    from tasks.stages.evaluate import EvaluateParams
    from tasks.stages.train import STAGE as TRAIN
    from tasks.stages.train import TrainConfig

    keys = {}
    measured_fastest(monkeypatch, "bf16")
    for flags in ((), ("amx_bf16",)):
        monkeypatch.setattr(device, "cpu_bf16_flags", lambda flags=flags: flags)
        keys[flags] = [EMBED.key(EmbedConfig(device="cpu"), {"conversations": "c"}),
                       TRAIN.key(TrainConfig(), {"tokenized": "t", "base_model": "b"}),
                       EVALUATE.key(EvaluateParams(), {"eval_set": "e", "base_model": "b"})]
    assert all(a != b for a, b in zip(*keys.values()))
    # auto on a bf16 machine is bf16 there, and the same dataset as asking for bf16
    assert keys[("amx_bf16",)][0] == EMBED.key(EmbedConfig(device="cpu", precision="bf16"), {"conversations": "c"})


def test_threads_follow_the_cores_this_process_may_use():
    import torch

    torch.set_num_threads(1)
    assert device.use_available_cores() == len(os.sched_getaffinity(0)) == torch.get_num_threads()


@pytest.mark.skipif(not device.cpu_bf16_flags(), reason="this CPU has no bf16 units")
def test_a_stage_says_what_precision_it_used_and_why(store):
    from storage.stage import run_stage
    from tasks.stages.embed import STAGE, EmbedConfig

    rows = [make_record(uri="t", fmt="t", row=i, system=None,
                        messages=[{"role": "user", "content": f"Question {i}?"},
                                  {"role": "assistant", "content": "An answer. " * (1 + i % 4)}]) for i in range(9)]
    conversations = store.publish_table("conversations-precision", "ingest", records_to_table(rows))
    # batches of 3 rows grouped by token length: rows of 4 lengths, little padding
    stats = run_stage(STAGE, EmbedConfig(device="cpu", batch_size=3), {"conversations": conversations}, store).stats
    from tasks.calibrate import recorded

    measured = recorded()["encoder-inference@cpu"]  # auto: what this machine measured fastest
    assert stats["precision"] == measured.choice and stats["cpu_bf16_flags"] == list(device.cpu_bf16_flags())
    assert stats["precision_reason"] == measured.reason and stats["precision_timings"] == measured.seconds
    assert stats["threads"] == len(os.sched_getaffinity(0)) and stats["peak_rss_mb"] > 100
    assert 0 <= stats["padding_share"] < 0.1 and stats["tokens"] > 0


@pytest.mark.parametrize(("planner", "worker"), [(("avx512_bf16",), ()), ((), ("amx_bf16",))],
                         ids=["bf16-planned-fp32-worker", "fp32-planned-bf16-worker"])
def test_a_worker_computes_what_the_plan_resolved(monkeypatch, store, tiny_confident_lm, planner, worker):
    """Planned on one machine, built on a worker whose hardware would resolve `auto` otherwise (a Dask or Ray
    worker): the build computes in the precision the key holds, and its stats say why."""
    from flows.plan import Plan
    from storage.stage import run_stage
    from tasks.stages import get
    from tasks.stages.base_model import BaseModelParams
    from tasks.stages.evaluate import EvaluateParams

    base = run_stage(get("base_model"), BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref
    rows = [make_record(uri="t", fmt="t", row=i, system=None,
                        messages=[{"role": "user", "content": f"Question {i}?"},
                                  {"role": "assistant", "content": f"Answer {i}."}]) for i in range(3)]
    eval_set = store.publish_table("eval-set-precision", "eval.set", records_to_table(rows))
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: planner)
    measured_fastest(monkeypatch, "bf16")
    plan = Plan(store)
    step = plan.add(get("evaluate"), EvaluateParams(max_length=32, resamples=100),
                    {"eval_set": eval_set.key, "base_model": base.key})
    plan.compute_keys()
    planned = "bf16" if planner else "fp32"
    assert step.fingerprint == {"precision": planned}

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: worker)  # the worker
    result = run_stage(step.stage, step.params, {"eval_set": eval_set, "base_model": base}, store, key=step.key,
                       fingerprint=step.fingerprint)
    assert result.ref.key == step.key and result.stats["precision"] == planned
    assert "where the plan was made" in result.stats["precision_reason"]
    assert f"this machine would pick {'fp32' if planned == 'bf16' else 'bf16'}" in result.stats["precision_reason"]
    assert store.manifest(step.key)["fingerprint"] == {"precision": planned}


def test_auto_is_what_this_machine_measured_fastest(monkeypatch, tmp_path):
    """Flags alone mislead (AVX512-BF16 without AMX runs bf16 slower than fp32): auto follows the measurement,
    recorded once per machine, its timings in the stats; near a tie the exact path wins."""
    import tasks.calibrate as calibrate
    from tasks.stages.train import PRECISION, TrainConfig

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    measured_fastest(monkeypatch, "fp32")
    chosen = PRECISION.resolve(TrainConfig())
    assert chosen.name == "fp32" and "measured on this machine (lm-training" in chosen.reason
    assert chosen.stats()["precision_timings"] == {"fp32": 1.0, "bf16": 1.4}
    monkeypatch.undo()

    monkeypatch.setenv("SFTFLOW_CALIBRATION_DIR", str(tmp_path))  # not the session's: these timings are made up
    runs = iter([1.0, 0.97, 1.0, 0.98, 1.0, 0.99, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0])  # fp32, bf16 interleaved, 3 rounds
    monkeypatch.setitem(calibrate.WORKLOADS, "lm-training", lambda where: lambda precision: next(runs))
    tie = calibrate.calibrate("lm-training", "cpu", force=True)
    assert tie.choice == "fp32" and tie.seconds == {"fp32": 1.0, "bf16": 0.97}  # 3% faster: within the margin
    faster = calibrate.calibrate("lm-training", "cpu", force=True)
    assert faster.choice == "bf16" and calibrate.recorded()["lm-training@cpu"] == faster  # recorded for next time
    assert calibrate.calibrate("lm-training", "cpu") == faster  # not measured again


def test_doctor_prints_the_machine_and_what_auto_picks_for_each_kind(monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    measured_fastest(monkeypatch, "fp32")
    import tasks.calibrate as calibrate

    monkeypatch.setattr(calibrate, "recorded", lambda: {
        "lm-training@cpu": calibrate.Calibration("lm-training", "cpu", "fp32", {"fp32": 0.4, "bf16": 0.6}, "now")})
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cpu_bf16_flags"] == ["avx512_bf16"] and report["memory"]["budget_gb"] > 0
    assert report["precision_auto"]["lm-training@cpu"]["choice"] == "fp32"
    assert "measured on this machine" in report["precision_auto"]["lm-training@cpu"]["reason"]
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "lm-training        fp32" in text and "encoder-inference  not measured yet" in text
