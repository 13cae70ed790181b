"""The selector protocol: what a selector of the selection ablation declares.

A selector is a scorer and a rule (one small declaration each, in tasks/selectors/): it ranks the pool with a
scorer's scores (`PIPELINE_SCORER`: the pipeline's own `iqs` section, e.g. CaR's comet IQS; a scorer name; or
None: no scores) and takes exactly `budget` rows by its rule: CaR's (the top by score plus the best of every
cluster, cut or filled to the budget) or the top N of the order. `NAME:SCORER` (e.g. `car:probe`) runs a
selector on another scorer, trained on the pipeline's revisions when it trains.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from tasks.errors import BadInputError

PIPELINE_SCORER = "iqs"  # the scores the pipeline's own iqs section makes


@dataclass(frozen=True)
class Selector:
    name: str
    scorer: str | None  # PIPELINE_SCORER, a scorer's name, or None (no scores: the clusters alone)
    # CaR's rule under the budget, the first `budget` of the order, a file's rows, or every row of the pool
    rule: Literal["car", "top", "file", "all"]
    description: str = ""

    @property
    def per_seed(self) -> bool:
        """A new sample per seed (the random scorer), not only a new training seed."""
        return self.scorer == "random"

    def select_params(self, budget: int, n2: int) -> dict[str, Any]:
        """The `select` section of this selector's arm: exactly `budget` rows by CaR's rule (`car`: n1 the
        largest that fits with the best `n2` of every cluster), or the first `budget` of the order (`top`: by
        score, or round-robin over the clusters without scores)."""
        if self.rule == "all":
            return {"n1": 0, "n2": 0, "every_row": True}
        return {"n1": budget, "n2": n2, "budget": budget} if self.rule == "car" else {"n1": budget, "n2": 0}

    def with_argument(self, argument: str) -> Selector:
        """This selector as `NAME:ARGUMENT` names it: its rule on another scorer's scores (`car:probe`)."""
        from tasks import scorers

        if self.scorer is None:
            raise BadInputError(f"selector {self.name!r} uses no scores, so {self.name}:{argument} names a scorer it "
                                "would not read", field="--selectors")
        scorers.get(argument)  # an unknown scorer is bad input naming the scorers
        return replace(self, name=f"{self.name}:{argument}", scorer=argument)

    def checked(self) -> Selector:
        """This selector named without an argument (bad input for one that needs it)."""
        return self
