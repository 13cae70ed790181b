"""`base_model`: the model to fine-tune as one plain Hugging Face folder in the store (tasks/base_model.py),
converted once (the bundled SmolLM2 ships as GGUF) and shared by format (its tokenizer), train and evaluate."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from storage.params import Section
from storage.stage import Call, Stage, StageContext, StageOutput
from tasks.base_model import fingerprint, materialize


class BaseModelParams(Section):
    """Only the reference: learning rates must not re-convert the model."""

    reference: str | None = Field(None, description="hub name or local path; SmolLM2-135M-Instruct when empty")


def plan(config: Any) -> list[Call]:
    return [Call(BaseModelParams(reference=config.train.base_model))]


def build(ctx: StageContext) -> StageOutput:
    params: BaseModelParams = ctx.params
    ctx.log.info("base_model: preparing %s", params.reference or "SmolLM2-135M-Instruct (bundled GGUF)")
    facts = materialize(params.reference, ctx.scratch / "model")
    report = "\n".join(["# Base model", "", *(f"- {k}: `{v}`" for k, v in facts.items())])
    return StageOutput(files={"model": ctx.scratch / "model"}, stats=facts, report=report)


STAGE = Stage("base_model", "1", build, params=BaseModelParams, plan=plan, tags=("model",),
              fingerprint=lambda params: fingerprint(params.reference),
              description="convert or copy the base model once (config, safetensors, tokenizer)")
