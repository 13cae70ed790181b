"""`hf_reward`: a Hugging Face reward model (a sequence-classification model with one output, e.g.
Skywork-Reward-V2) from a local folder, or the hub when online: each answer scored alone in the model's chat
template (the prompt as the user turn, the answer as the assistant's), the probability that one beats the other
the logistic of their score difference. Meant for GPU users: such models are billions of parameters."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from storage.params import NOT_IN_KEY, PATH
from tasks.device import PrecisionSetting
from tasks.errors import BadInputError
from tasks.judges.base import Comparing, Judge, JudgeConfig, JudgeInputs, Verdicts


class HFRewardConfig(JudgeConfig):
    judge: Literal["hf_reward"] = "hf_reward"
    model: str = Field("Skywork/Skywork-Reward-V2-Llama-3.1-8B", json_schema_extra=PATH,
                       description="a local model folder, or a hub name (needs SFTFLOW_ONLINE=1)")
    max_length: int = Field(2048, ge=16, description="tokens of prompt and answer read")
    batch_size: int = Field(8, ge=1, json_schema_extra=NOT_IN_KEY)
    precision: PrecisionSetting = Field("auto", json_schema_extra={"cache_key": False},
                                        description="auto: the faster of fp32 and bf16 on this machine")


def load(name: str):  # noqa: ANN201 - transformers' types
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = Path(name).expanduser()
    if not local.is_dir() and name.startswith((".", "/", "~")):
        raise BadInputError(f"cannot load a reward model from {name!r}: no such folder", field="judge.model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(local if local.is_dir() else name)
        model = AutoModelForSequenceClassification.from_pretrained(local if local.is_dir() else name)
    except (OSError, ValueError) as exc:  # no such hub model, or offline
        raise BadInputError(f"cannot load a reward model from {name!r} (a local folder, or a hub name with "
                            f"SFTFLOW_ONLINE=1): {exc}", field="judge.model") from None
    if model.config.num_labels != 1:
        raise BadInputError(f"{name} has {model.config.num_labels} outputs; a reward model has one",
                            field="judge.model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def rendered(tokenizer, prompt: str, answer: str) -> str:  # noqa: ANN001
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False)
    return f"{prompt}\n\n{answer}"


def open_judge(inputs: JudgeInputs) -> Comparing:
    import torch

    p: HFRewardConfig = inputs.params
    model, tokenizer = load(p.model)
    precision = inputs.precision
    model.to(precision.device if precision else "cpu")

    def scores(prompts: list[str], answers: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(prompts), p.batch_size):
            texts = [rendered(tokenizer, q, a) for q, a in zip(prompts[start:start + p.batch_size],
                                                               answers[start:start + p.batch_size])]
            batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=p.max_length,
                              add_special_tokens=False).to(model.device)
            with torch.inference_mode(), (precision.autocast() if precision else torch.autocast("cpu", enabled=False)):
                out.append(model(**batch).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def compare(prompts: list[str], first: list[str], second: list[str]) -> Verdicts:
        a, b = scores(prompts, first), scores(prompts, second)
        return Verdicts(1 / (1 + np.exp(-(a - b))), np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5)), a, b)

    return Comparing(compare, f"reward model {p.model}", {"model": p.model})


JUDGE = Judge("hf_reward", HFRewardConfig, open_judge, precision=lambda p: p.precision,
              description="a Hugging Face sequence-classification reward model (Skywork-Reward-V2, ...)")
