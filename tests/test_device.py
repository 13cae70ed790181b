"""One precision rule for every model stage (tasks/device.py): auto = bf16 autocast where the hardware has bf16
units, fp32 elsewhere; resolved before keying; bf16 without the units is bad input naming them."""
from __future__ import annotations

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


def test_auto_is_bf16_on_a_cpu_with_bf16_units_and_fp32_elsewhere(bf16_cpu):
    chosen = device.resolve_precision("auto", "cpu", field="x")
    assert (chosen.name, chosen.device) == ("bf16", "cpu") and "amx_bf16" in chosen.reason
    assert device.resolve_precision("fp32", "cpu", field="x").name == "fp32"  # one setting away, exact
    gated = device.resolve_precision("auto", "cpu", field="x", auto_bf16=False)
    assert gated.name == "fp32" and "gate" in gated.reason  # a stage whose bf16 missed its quality gate


def test_auto_is_fp32_without_bf16_units_and_bf16_is_bad_input_naming_them(no_bf16_cpu):
    chosen = device.resolve_precision("auto", "cpu", field="x")
    assert chosen.name == "fp32" and "amx_bf16" in chosen.reason and "avx512_bf16" in chosen.reason
    from tasks.train.model import pick_device

    with pytest.raises(BadInputError, match="amx_bf16 or avx512_bf16") as err:
        pick_device("lora", "bf16")
    assert err.value.field == "train.precision"
    with pytest.raises(BadInputError, match="CUDA"):
        pick_device("lora", "fp16")


def test_the_resolved_precision_is_in_the_key(monkeypatch, store):
    """An fp32 machine and a bf16 machine never share a cached output by accident."""
    from tasks.stages.embed import STAGE as EMBED
    from tasks.stages.embed import EmbedConfig
    from tasks.stages.evaluate import STAGE as EVALUATE
    from tasks.stages.evaluate import EvaluateParams
    from tasks.stages.train import STAGE as TRAIN
    from tasks.stages.train import TrainConfig

    keys = {}
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
    assert stats["precision"] == "bf16" and stats["cpu_bf16_flags"] == list(device.cpu_bf16_flags())
    assert "auto: the CPU has" in stats["precision_reason"] and stats["threads"] == len(os.sched_getaffinity(0))
    assert 0 <= stats["padding_share"] < 0.1 and stats["tokens"] > 0
