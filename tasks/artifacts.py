"""What one stage knows of another's output, read from its manifest by one typed reader each: the floor below
the stage declarations. Stages (and generate, the reports) import these and never each other, and none of them
digs in a manifest by stage name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.store import Store
from tasks.errors import BadInputError


def _manifest(store: Store, key: str, stage: str, what: str, field: str) -> dict[str, Any]:
    manifest = store.manifest(key)
    if manifest.get("stage") != stage:
        raise BadInputError(f"{key} is a {manifest.get('stage')} output, not {what}", field=field)
    return manifest


@dataclass(frozen=True)
class Tokenized:
    """How a tokenized dataset (the format stage's output) was made, as train, evaluate and generate need it."""

    key: str
    template: str
    system: str | None  # format.system: None = the records' own and the template's default; "" = none
    train_on: str  # which tokens carry loss

    @classmethod
    def read(cls, store: Store, key: str) -> Tokenized:
        params = _manifest(store, key, "format", "the output of format", "tokenized").get("params") or {}
        if not params.get("template"):
            raise BadInputError("the tokenized data set's manifest names no template", file=key,
                                field="params.template")
        return cls(key, params["template"], params.get("system"), params.get("train_on", "all_assistant"))


@dataclass(frozen=True)
class Adapter:
    """A train artifact as its readers need it: its base model, its training data and what training saw."""

    key: str
    base_model: str  # store key of the base_model artifact
    tokenized: Tokenized
    stats: dict[str, Any]
    params: dict[str, Any]
    build_seconds: float | None  # None for an artifact stored before the record was kept

    @classmethod
    def read(cls, store: Store, key: str) -> Adapter:
        manifest = _manifest(store, key, "train", "a trained adapter", "model")
        inputs = manifest["inputs"]
        return cls(key, inputs["base_model"], Tokenized.read(store, inputs["tokenized"]), manifest.get("stats", {}),
                   manifest.get("params", {}), manifest.get("build_seconds"))


@dataclass(frozen=True)
class Removed:
    """The rows dedup removed on the way to a dataset, by reason (empty when the dataset is not dedup's)."""

    by_reason: dict[str, int]

    @classmethod
    def read(cls, store: Store, key: str) -> Removed:
        manifest = store.manifest(key)
        return cls(manifest.get("stats", {}).get("removed") or {} if manifest.get("stage") == "dedup" else {})


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set's name, and whether it is held-out rows of the pool (which share ids with it by design)."""

    key: str
    name: str
    held_out: bool

    @classmethod
    def read(cls, store: Store, key: str) -> EvalSet:
        manifest = store.manifest(key)
        return cls(key, manifest.get("stats", {}).get("name") or key, manifest.get("stage") == "eval.holdout")


@dataclass(frozen=True)
class ScoresMade:
    """Which scorer and model made an iqs output."""

    scorer: str | None
    model: str | None

    @classmethod
    def read(cls, store: Store, key: str) -> ScoresMade:
        stats = store.manifest(key).get("stats", {})
        return cls(stats.get("scorer"), stats.get("model"))


@dataclass(frozen=True)
class Evaluation:
    """An evaluate output: which adapter it evaluated (None: the base model alone)."""

    key: str
    adapter: str | None

    @classmethod
    def read(cls, store: Store, key: str) -> Evaluation:
        manifest = _manifest(store, key, "evaluate", "an evaluation", "evaluation")
        return cls(key, manifest.get("stats", {}).get("adapter"))


@dataclass(frozen=True)
class Built:
    """Any stored dataset as a cost: its stage, what it read and how long it took to make."""

    key: str
    stage: str
    inputs: dict[str, str]
    build_seconds: float | None

    @classmethod
    def read(cls, store: Store, key: str) -> Built:
        manifest = store.manifest(key)
        return cls(key, manifest["stage"], manifest.get("inputs", {}), manifest.get("build_seconds"))
