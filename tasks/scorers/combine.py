"""`combine`: a weighted average of other scorers' normalized ranks (rank average), higher = better.

Each member scores every row; its scores become ranks over all the rows scored (ties share their average
rank) mapped to [0, 1], 1 = the member's best; the score is sum(weight * rank) / sum(weight). Ranks make
scorers of any scale comparable (a COMET score, an IFD ratio, a 1-5 rating, a word count). The ranks are taken
over the whole dataset once every chunk (and every part of a sharded run) is scored, from the members' scores
kept as columns `combine_<i>_score`; each member's own extra columns are kept as `combine_<i>_<column>`.

A member is a scorer config with a `weight` (default 1), in YAML:
    iqs: {scorer: combine, members: [{scorer: comet, model: iqs-train-…, weight: 2}, {scorer: ifd}]}
A member that trains (comet, probe) must name its trained model: a combination does not train its members
(one iqs.train artifact holds one model), so train each first (`sftflow iqs train`) and give its store key.
That key enters the combination's key (a member's `model` alone would not: a scorer's model key is its input's).
The combination needs what its members need (the embed stage's vectors, the base model).
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from storage.params import Section
from tasks.errors import BadInputError
from tasks.scorers.base import Scorer, ScorerConfig, ScorerInputs, Scores, Scoring

NAME = "combine"


class Member(Section):
    """One scorer of a combination. Written flat (the scorer's fields plus `weight`); stored as below."""

    weight: float = Field(1.0, gt=0, description="the member's share of the rank average")
    config: Any = Field(description="the member's scorer config (`scorer` and its fields)")
    trained_model: str | None = Field(None, description="the trained model's store key (from the member's "
                                                        "`model`), so the combination's key covers it")

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "config" not in data:
            config = {k: v for k, v in data.items() if k != "weight"}
            return {"config": config, **({"weight": data["weight"]} if "weight" in data else {})}
        return data

    @field_validator("config", mode="before")
    @classmethod
    def _scorer_config(cls, value: Any) -> Any:
        from tasks import scorers

        if isinstance(value, dict) and value.get("scorer") in (NAME, scorers.NONE):
            raise ValueError(f"a member cannot be {value['scorer']!r}")
        config = value if isinstance(value, ScorerConfig) else scorers.parse_config(value)
        if scorers.get(config.scorer).train is not None and not config.model:
            raise ValueError(f"the {config.scorer} member is trained: a combination does not train its members; "
                             f"train it first (sftflow iqs train --set scorer={config.scorer}) and give its "
                             "store key as the member's model")
        return config

    @model_validator(mode="after")
    def _key_covers_the_model(self) -> Member:
        from tasks import scorers

        self.trained_model = self.config.model if scorers.get(self.config.scorer).train is not None else None
        return self


class CombineConfig(ScorerConfig):
    scorer: Literal["combine"] = NAME
    members: list[Member] = Field(min_length=2, description="the scorers to combine, each with a weight")


def needs(params: CombineConfig) -> frozenset[str]:
    from tasks import scorers

    found: set[str] = set()
    for member in params.members:
        found |= scorers.get(member.config.scorer).inputs(member.config)
    return frozenset(found - {"iqs_model"})  # trained members' models are read by their keys


def normalized_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1], 1 = the highest value, ties sharing their average rank; 0.5 for a single row."""
    from scipy.stats import rankdata

    if len(values) < 2:
        return np.full(len(values), 0.5)
    return (rankdata(values, method="average") - 1) / (len(values) - 1)


def rank_average(params: CombineConfig, table: pa.Table) -> np.ndarray:
    weights = np.array([m.weight for m in params.members])
    ranks = np.stack([normalized_ranks(table.column(f"combine_{i}_score").to_numpy())
                      for i in range(len(params.members))])
    return weights @ ranks / weights.sum()


def open_combine(inputs: ScorerInputs) -> Scoring:
    from tasks import scorers

    p: CombineConfig = inputs.params
    opened = []
    for member in p.members:
        model = None
        if member.trained_model:
            if not inputs.store.verify(member.trained_model):
                raise BadInputError(f"{member.trained_model} is not a complete dataset in the store "
                                    f"{inputs.store.url}", field=f"iqs.members ({member.config.scorer}).model")
            model = inputs.store.ref(member.trained_model)
        scorer = scorers.get(member.config.scorer)
        precision = scorer.precision_use().resolve(member.config)
        opened.append(scorer.open(ScorerInputs(inputs.store, member.config, model, inputs.embeddings,
                                               inputs.base_model, precision=precision)))

    def score(rows: pa.Table) -> Scores:
        columns: dict[str, pa.Array] = {}
        truncated, counts = 0, {}
        for i, scoring in enumerate(opened):
            result = scoring.score(rows)
            columns[f"combine_{i}_score"] = pa.array(np.asarray(result.values, np.float64))
            columns.update({f"combine_{i}_{name}": column for name, column in result.columns.items()})
            truncated += result.truncated
            counts.update({name: counts.get(name, 0) + n for name, n in result.counts.items()})
        # this chunk's rank average; the iqs stage replaces it by the one over every row (`finish`)
        return Scores(rank_average(p, pa.table(columns)), columns, truncated, counts)

    model = " + ".join(f"{m.weight:g} x {m.config.scorer} ({s.model})" for m, s in zip(p.members, opened))
    return Scoring(score, model=f"rank average of {model}")


SCORER = Scorer(NAME, CombineConfig, open_combine, needs=needs, finish=rank_average,
                description="a weighted rank average of other scorers (e.g. CaR's IQS with IFD or length)")
