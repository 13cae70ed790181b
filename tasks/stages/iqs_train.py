"""`iqs.train`: expert revision pairs → a trained IQS model artifact, for the scorers that train (comet, probe);
or a published COMET checkpoint (`iqs.model: hf:…`) imported as one (tasks/iqs/hub.py).

Not in a pipeline run whose `iqs.model` names a trained model of the store already, or whose scorer needs no
training.
"""
from __future__ import annotations

from typing import Any

from storage.stage import Call, Stage, StageContext, StageOutput
from tasks import scorers
from tasks.errors import BadInputError
from tasks.iqs.hub import is_hub_model
from tasks.scorers.base import TRAIN_PRECISION


def trains(params: Any) -> bool:
    return params.scorer != scorers.NONE and scorers.get(params.scorer).train is not None


def plan(config: Any) -> list[Call]:
    params = config.iqs
    return [Call(params)] if trains(params) and (not params.model or is_hub_model(params.model)) else []


def fingerprint(params: Any) -> dict[str, Any]:
    """The revision files' checksums, and the training precision `auto` resolves to here."""
    found = params.input_checksums() if hasattr(params, "input_checksums") else {}
    return {**found, **TRAIN_PRECISION.key(params)}


def build(ctx: StageContext) -> StageOutput:
    if not trains(ctx.params):
        raise BadInputError(f"iqs.scorer {ctx.params.scorer!r} has no model to train", field="iqs.scorer")
    return scorers.get(ctx.params.scorer).train(ctx)


STAGE = Stage("iqs.train", "2", build, params=scorers.section_type(), section="iqs", output="iqs_model",
              tags=("gpu", "model"), fingerprint=fingerprint, plan=plan,
              description="train an IQS model (comet or probe) on expert revision pairs")
