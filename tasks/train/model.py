"""Loading the base model for a training method and wrapping it with its peft adapter.

LoRA target modules are found from the architecture (the attention projections, as in the LoRA paper; all
linear layers for QLoRA, as in the QLoRA paper) and can be overridden. P-tuning v2 (the ChatGLM-6B `ptuning`
recipe) is peft's prefix tuning without the prefix MLP; "prefix" keeps the MLP reparameterisation of
Li & Liang's prefix tuning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.device import Precision
from tasks.errors import BadInputError

# Attention projections per model_type; peft's own table covers many more and is the fallback.
ATTENTION_MODULES: dict[str, list[str]] = {
    **dict.fromkeys(["llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                     "gemma3_text", "olmo", "olmo2", "starcoder2", "stablelm", "cohere", "granite", "smollm3",
                     "deepseek_v2", "deepseek_v3", "internlm2", "yi"], ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn", "c_proj"],
    "gpt_bigcode": ["c_attn", "c_proj"],
    "gpt_neox": ["query_key_value", "dense"],
    "falcon": ["query_key_value", "dense"],
    "bloom": ["query_key_value", "dense"],
    "chatglm": ["query_key_value", "dense"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "mpt": ["Wqkv", "out_proj"],
}
DEFAULT_LEARNING_RATE = {"lora": 2e-4, "qlora": 2e-4, "prefix": 2e-2, "ptuning": 2e-2}
PROMPT_LEARNING = ("prefix", "ptuning")


def check_method(method: str, device: Precision) -> None:
    """QLoRA's 4-bit base needs a GPU (bitsandbytes)."""
    if method == "qlora" and device.device != "cuda":
        raise BadInputError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); none is visible here. Use method: lora "
                            "on CPU, or run on a GPU machine with the gpu extra (pip install '.[gpu]')",
                            field="train.method")


def linear_module_names(model: Any) -> set[str]:
    """Leaf names of the linear layers (nn.Linear, GPT-2's Conv1D, bitsandbytes' Linear4bit), lm_head excluded."""
    names = set()
    for full, module in model.named_modules():
        cls = type(module).__name__
        if cls in ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt") and not full.endswith("lm_head"):
            names.add(full.rsplit(".", 1)[-1])
    return names


def target_modules(model: Any, method: str, override: list[str] | None) -> list[str]:
    available = linear_module_names(model)
    if override:
        unknown = sorted(set(override) - available)
        if unknown:
            raise BadInputError(f"no linear layers named {unknown} in this {model.config.model_type} model; "
                                f"it has {sorted(available)}", field="train.target_modules")
        return list(override)
    if method == "qlora":
        return sorted(available)
    model_type = model.config.model_type
    names = ATTENTION_MODULES.get(model_type)
    if names is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE

        names = PEFT_TABLE.get(model_type)
    found = [n for n in names or [] if n in available]
    return found or sorted(available)


def load_base(folder: Path, method: str, device: Precision, gradient_checkpointing: bool) -> Any:
    """The frozen base model on its device, in the precision's load dtype (tasks/device.py), 4-bit for QLoRA;
    the adapter's own weights, added after, stay fp32."""
    from transformers import AutoModelForCausalLM

    if method != "qlora":
        return AutoModelForCausalLM.from_pretrained(folder, dtype=device.load_dtype).to(device.device)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise BadInputError("QLoRA needs bitsandbytes: pip install '.[gpu]'", field="train.method") from exc
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=device.load_dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=device.load_dtype,
                                                 device_map={"": 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def peft_config(model: Any, params: Any) -> Any:
    from peft import LoraConfig, PrefixTuningConfig, TaskType

    if params.method in PROMPT_LEARNING:
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=params.num_virtual_tokens,
                                  prefix_projection=params.method == "prefix",
                                  encoder_hidden_size=model.config.hidden_size)
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=params.lora_r, lora_alpha=params.lora_alpha,
                      lora_dropout=params.lora_dropout, bias="none",
                      target_modules=target_modules(model, params.method, params.target_modules))


def wrap(model: Any, params: Any) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, peft_config(model, params))


def prompt_learning(model: Any) -> bool:
    """A peft adapter that prepends virtual tokens: only the whole model's forward adds them."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def position_limit(config: Any) -> int | None:
    """The longest sequence the architecture can encode (None where it does not say)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
