"""The scorer protocol: what a quality scorer declares, and what the `iqs` stage gives it and takes back.

A scorer is one module of tasks/scorers (or a plugin) declaring `SCORER = Scorer(...)`: its name (the value of
`iqs.scorer`), its config model (a `ScorerConfig` with `scorer: Literal[name]`, a member of the `iqs` section's
discriminated union), what it reads besides the conversations (`needs`), an optional training step (the
`iqs.train` stage's build for it) and `open`, which returns the function that scores a batch of conversations.
Scores keep one meaning everywhere: higher is better.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import StageContext, StageOutput
from storage.store import DatasetRef, Store
from tasks.calibrate import measured
from tasks.device import Precision, PrecisionUse

# what the iqs stage may hand a scorer besides the conversations: a trained model (iqs.train's artifact), the
# embed stage's vectors, the base_model stage's causal LM
INPUTS = ("iqs_model", "embeddings", "base_model")


class ScorerConfig(Section):
    scorer: str
    batch_size: int = Field(32, ge=1, json_schema_extra=NOT_IN_KEY, description="scoring batch size")
    part_rows: int | None = Field(None, ge=0, json_schema_extra=NOT_IN_KEY,
                                  description="rows per part of a long scoring run, each stored as it finishes (a "
                                              "crash loses at most one); empty: the scorer's own size; 0: one piece")
    shards: int = Field(1, ge=1, json_schema_extra=NOT_IN_KEY,
                        description="score in this many row ranges side by side (one task each: Dask/Ray workers), "
                                    "then gather them")


@dataclass
class Scores:
    values: np.ndarray  # one score per row, higher = better
    columns: dict[str, pa.Array] = field(default_factory=dict)  # extra per-row columns kept in the scored table
    truncated: int = 0  # texts longer than the scorer's model reads
    counts: dict[str, int] = field(default_factory=dict)  # the scorer's own row counts, summed into the stats


@dataclass
class Scoring:
    """An opened scorer: `score(rows)` takes canonical conversation rows (id, system, messages, meta)."""

    score: Callable[[pa.Table], Scores]
    model: str | None = None  # what made the scores (a store key, a model name), for manifests and reports
    facts: dict[str, Any] = field(default_factory=dict)  # how it ran (precision, device), for the stage's stats


# the precision a scorer that trains (comet) trains in: its `train_precision`, an entry of iqs.train's key
TRAIN_PRECISION = PrecisionUse(lambda params: getattr(params, "train_precision", None), "iqs.train_precision",
                               entry="train_precision", measure=measured("encoder-training"))


@dataclass(frozen=True)
class ScorerInputs:
    store: Store
    params: Any
    iqs_model: DatasetRef | None = None
    embeddings: DatasetRef | None = None
    base_model: DatasetRef | None = None
    rows: int | None = None  # rows of the whole dataset being scored (a part scores a range of them)
    precision: Precision | None = None  # the model's, as the plan resolved it (None: no local model)


@dataclass(frozen=True)
class Scorer:
    name: str
    config: type[ScorerConfig]
    open: Callable[[ScorerInputs], Scoring]
    description: str = ""
    # of INPUTS (iqs_model is implied by `train`), or a function of the config when that depends on it
    needs: frozenset[str] | Callable[[Any], frozenset[str]] = frozenset()
    train: Callable[[StageContext], StageOutput] | None = None  # the iqs.train build of this scorer
    # scores that depend on every row (combine's rank average): the final scores from the whole scored table
    # (id, iqs_score and the extra columns), once every chunk and every part of a sharded run is in
    finish: Callable[[Any, pa.Table], np.ndarray] | None = None
    # rows per part of a long scoring run (about a minute of work each: a crash loses one part), or a function of
    # the config; None: one piece
    part_rows: int | Callable[[Any], int | None] | None = None
    # the precision setting its model runs at (tasks/device.py's rule), None where no local model runs; and
    # whether its bf16 held the quality gate (else `auto` stays fp32)
    precision: Callable[[Any], str | None] = lambda params: None
    auto_bf16: bool = True
    precisions: tuple[str, ...] = ("auto", "fp32", "bf16")  # the settings its model supports
    precision_kind: str = "lm-inference"  # the work its `auto` is measured on (tasks/calibrate.py)

    def precision_use(self) -> PrecisionUse:
        return PrecisionUse(self.precision, "iqs.precision", supports=self.precisions,
                            device=lambda params: getattr(params, "device", "auto"), auto_bf16=self.auto_bf16,
                            measure=measured(self.precision_kind))

    def inputs(self, params: Any) -> frozenset[str]:
        needs = self.needs(params) if callable(self.needs) else self.needs
        return needs | ({"iqs_model"} if self.train is not None else frozenset())
