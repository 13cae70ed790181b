"""`eval.holdout`: the held-out rows of the pool, split off before any selector runs (tasks/evaluate/holdout.py:
seeded by a hash of each id). Its section `eval` is the evaluation's configuration; not a pipeline stage: the
selection-ablation flow (flows/ablation.py) plans it."""
from __future__ import annotations

from pydantic import Field, field_validator

from storage.params import NOT_IN_KEY, Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.device import PrecisionSetting
from tasks.evaluate.holdout import DEFAULT_MAX_ROWS, split_holdout
from tasks.evaluate.stats import CONFIDENCE, RESAMPLES
from tasks.ingest.config import sources_from_paths
from tasks.stages.eval_set import EvalSetConfig

HELDOUT = "heldout"  # the held-out set's name in reports


class EvalConfig(Section):
    holdout_rows: int | None = Field(None, ge=1, description=f"held-out rows of the pool; min({DEFAULT_MAX_ROWS}, "
                                                             "10% of the pool) when empty")
    seed: int = Field(0, description="which rows are held out (a seeded hash of each id)")
    # the fields below reach the keys of the eval.set and evaluate steps, through their own parameters
    sets: list[EvalSetConfig] = Field(default_factory=list, json_schema_extra=NOT_IN_KEY,
                                      description="more evaluation sets from files, e.g. {path: "
                                                  "APE_score_valid.csv, format: car_revised, name: gold}")
    resamples: int = Field(RESAMPLES, ge=100, json_schema_extra=NOT_IN_KEY, description="bootstrap resamples")
    confidence: float = Field(CONFIDENCE, gt=0, lt=1, json_schema_extra=NOT_IN_KEY,
                              description="interval coverage")
    batch_size: int = Field(16, ge=1, json_schema_extra=NOT_IN_KEY, description="rows per forward pass")
    precision: PrecisionSetting = Field(
        "auto", json_schema_extra=NOT_IN_KEY, description="the evaluate stage's precision (auto: bf16 where the "
                                                          "hardware has it, else fp32)")

    _paths_as_sets = field_validator("sets", mode="before")(sources_from_paths)


def build(ctx: StageContext, conversations: DatasetRef) -> StageOutput:
    params: EvalConfig = ctx.params
    pool = ctx.store.read_table(conversations.key)
    rest, held = split_holdout(pool, params.holdout_rows, params.seed)
    ctx.log.info("eval.holdout: %d of %d rows held out (seed %d)", held.num_rows, pool.num_rows, params.seed)
    return StageOutput(table=held, stats={"name": HELDOUT, "rows": held.num_rows, "pool_rows": pool.num_rows,
                                          "seed": params.seed})


STAGE = Stage("eval.holdout", "1", build, params=EvalConfig, section="eval", output="eval_set",
              description="the held-out evaluation rows of the pool (seeded by id hash)")
