"""The selector protocol: what a selector of the selection ablation declares.

A selector is a scorer and a rule (one small declaration each, in tasks/selectors/): it ranks the pool with a
scorer's scores (`PIPELINE_SCORER`: the pipeline's own `iqs` section, e.g. CaR's comet IQS; a scorer name; or
None: no scores) and takes exactly `budget` rows by its rule: CaR's (the top by score plus the best of every
cluster, cut or filled to the budget) or the top N of the order. `NAME:SCORER` (e.g. `car:probe`) runs a
selector on another scorer, trained on the pipeline's revisions when it trains.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

PIPELINE_SCORER = "iqs"  # the scores the pipeline's own iqs section makes


@dataclass(frozen=True)
class Selector:
    name: str
    scorer: str | None  # PIPELINE_SCORER, a scorer's name, or None (no scores: the clusters alone)
    rule: Literal["car", "top"]  # CaR's rule under the budget, or the first `budget` rows of the order
    description: str = ""

    @property
    def per_seed(self) -> bool:
        """A new sample per seed (the random scorer), not only a new training seed."""
        return self.scorer == "random"

    def on(self, scorer: str) -> Selector:
        """This selector's rule on another scorer's scores (`car:probe`)."""
        return replace(self, name=f"{self.name}:{scorer}", scorer=scorer)
