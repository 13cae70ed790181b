"""`eval.pool`: the pool a selector may pick from: the conversations without the held-out rows and without
every row that asks what an evaluation row asks (the same normalized user turns), each removed row in the
`quarantine` companion with its reason (tasks/evaluate/holdout.py). An evaluation set from a file that shares
an id with the pool is bad input: it would be a set of training rows. Not a pipeline stage: the
selection-ablation flow plans it."""
from __future__ import annotations

from collections import Counter

from storage.params import Section
from storage.stage import Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.artifacts import EvalSet
from tasks.evaluate.holdout import check_no_shared_ids, remove_overlap


class PoolParams(Section):
    """No parameters: the held-out split and the sets are its inputs."""


def build(ctx: StageContext, conversations: DatasetRef, **eval_set: DatasetRef) -> StageOutput:
    store = ctx.store
    pool = store.read_table(conversations.key)
    sets = {}
    for ref in (eval_set[name] for name in sorted(eval_set)):
        info = EvalSet.read(store, ref.key)
        table = store.read_table(ref.key, columns=["id", "messages"])
        if not info.held_out:  # the held-out rows are pool rows by design
            check_no_shared_ids(table, pool, eval_name=f"{info.name} ({ref.key})", pool_name=conversations.key)
        sets[info.name] = table
    kept, quarantine = remove_overlap(pool, sets)
    removed = dict(Counter(quarantine.column("reason").to_pylist()))
    ctx.log.info("eval.pool: %d of %d rows left to select from; removed %s", kept.num_rows, pool.num_rows, removed)
    stats = {"rows_in": pool.num_rows, "rows": kept.num_rows, "removed": removed,
             "eval_sets": {name: table.num_rows for name, table in sets.items()}}
    return StageOutput(table=kept, companions={"quarantine": quarantine}, stats=stats)


STAGE = Stage("eval.pool", "1", build, params=PoolParams, output="pool",
              description="the pool without held-out rows and rows asking what an evaluation row asks")
