"""`iqs`: every conversation scored by the configured quality scorer (tasks/scorers/), higher = better.

Output: id, iqs_score, iqs_rank (1 = best, ties by id) and the scorer's own extra columns. Which scorer and
model made the scores is in the stats. The scorer says which inputs it reads besides the conversations (a
trained model, the embed stage's vectors, the base model); the others are not wired.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from storage.stage import Call, Stage, StageContext, StageOutput, merged_stats
from storage.store import DatasetRef, row_range
from tasks import scorers
from tasks.errors import BadInputError
from tasks.iqs.hub import is_hub_model
from tasks.iqs.report import score_histogram_png
from tasks.iqs.score import rank
from tasks.scorers.base import ScorerInputs

CHUNK_ROWS = 4096  # rows scored per call (progress granularity; scorers sort by length within a chunk)


def plan(config: Any) -> list[Call]:
    """No call without a scorer; the model the config names (a store key) given, not trained here."""
    params = config.iqs
    if params.scorer == scorers.NONE:
        return []
    model = getattr(params, "model", None)
    given = model and "iqs_model" in reads(params) and not is_hub_model(model)  # an hf: model iqs.train imports
    return [Call(params, inputs={"iqs_model": model} if given else {}, shards=params.shards)]


def reads(params: Any) -> frozenset[str]:
    """What the scorer reads besides the conversations (a trained model, the embeddings, the base model)."""
    return scorers.get(params.scorer).inputs(params) if params.scorer != scorers.NONE else frozenset()


def precision_key(params: Any) -> dict[str, str]:
    """Stage-key material: the precision the scorer's model resolves to here (none for scorers without one)."""
    return scorers.get(params.scorer).precision_use().key(params) if params.scorer != scorers.NONE else {}


def part_rows(params: Any) -> int | None:
    """`part_rows` when set (0: one piece), else the scorer's own part size."""
    if params.scorer == scorers.NONE:
        return None
    if params.part_rows is not None:
        return params.part_rows or None
    size = scorers.get(params.scorer).part_rows
    return size(params) if callable(size) else size


def build(ctx: StageContext, conversations: DatasetRef, iqs_model: DatasetRef | None = None,
          embeddings: DatasetRef | None = None, base_model: DatasetRef | None = None) -> StageOutput:
    p = ctx.params
    if p.scorer == scorers.NONE:
        raise BadInputError("iqs.scorer is none: nothing to score with", field="iqs.scorer")
    scorer = scorers.get(p.scorer)
    if "iqs_model" in scorer.inputs(p) and iqs_model is None:
        raise BadInputError(f"the {p.scorer} scorer needs a trained model: set iqs.model or train one "
                            "(iqs.train)", field="iqs_model")
    use = scorer.precision_use()
    precision = use.planned(p, ctx.fingerprint) if use.setting(p) is not None else None
    scoring = scorer.open(ScorerInputs(ctx.store, p, iqs_model, embeddings, base_model, conversations.rows, precision))
    start, stop = row_range(conversations.rows, ctx.shard)
    advance = ctx.progress(stop - start, f"iqs ({p.scorer})")
    ids: list[str] = []
    values: list[np.ndarray] = []
    extra: dict[str, list[pa.Array]] = {}
    truncated = 0
    counts: Counter[str] = Counter()
    for batch in ctx.store.iter_batches(conversations.key, CHUNK_ROWS, ["id", "system", "messages", "meta"],
                                        part=ctx.shard):
        rows = pa.Table.from_batches([batch])
        scores = scoring.score(rows)
        if len(scores.values) != rows.num_rows:
            raise RuntimeError(f"the {p.scorer} scorer returned {len(scores.values)} scores for {rows.num_rows} rows")
        ids += rows.column("id").to_pylist()
        values.append(np.asarray(scores.values, np.float64))
        for name, column in scores.columns.items():
            extra.setdefault(name, []).append(column)
        truncated += scores.truncated
        counts.update(scores.counts)
        advance(rows.num_rows)
    table = pa.table({"id": pa.array(ids, pa.string()),
                      "iqs_score": pa.array(np.concatenate(values) if values else np.zeros(0)),
                      **{name: pa.concat_arrays(parts) for name, parts in extra.items()}})
    if ctx.shard is None:  # a part's scores are finished by the gather, over every part
        table = finished(table, p)
    output = scored_output(table, p.scorer, scoring.model, truncated, dict(counts))
    output.stats.update(scoring.facts)
    return output


def finished(table: pa.Table, params: Any) -> pa.Table:
    """The table with the scorer's final scores, for scorers whose scores depend on every row."""
    finish = scorers.get(params.scorer).finish
    if finish is None or not table.num_rows:
        return table
    return table.set_column(table.column_names.index("iqs_score"), "iqs_score",
                            pa.array(np.asarray(finish(params, table), np.float64)))


def scored_output(table: pa.Table, scorer: str, model: str | None, truncated: int,
                  counts: dict[str, int]) -> StageOutput:
    """The scored table with its ranks over every row (1 = best, ties by id), stats, histogram and report.
    `counts` are the scorer's own (e.g. IFD's dropped rows, the judge's unparseable answers)."""
    ids, score = table.column("id").to_pylist(), table.column("iqs_score").to_numpy()
    table = table.add_column(2, "iqs_rank", pa.array(rank(ids, score), pa.int64()))
    stats = {"rows": len(ids), "scorer": scorer, "model": model, "truncated": truncated,
             "score_mean": float(score.mean()) if len(ids) else None,
             "score_min": float(score.min()) if len(ids) else None,
             "score_max": float(score.max()) if len(ids) else None, "counts": counts}
    files = {"score_histogram.png": score_histogram_png({"rows": score}, f"IQS scores ({scorer})")} if ids else {}
    report = (f"## IQS scores\n\n{len(ids):,} rows scored with the `{scorer}` scorer"
              + (f" (model `{model}`)" if model else "")
              + f"; {truncated:,} text(s) longer than the scorer's model reads were truncated.\n\n"
              f"mean {stats['score_mean']}, min {stats['score_min']}, max {stats['score_max']}"
              + "".join(f"\n- {name}: {n:,}" for name, n in counts.items()))
    return StageOutput(table=table, files=files, stats=stats, report=report)


def gather(ctx: StageContext, **part: DatasetRef) -> StageOutput:
    """The parts of a sharded run in one table, ranked over all of them."""
    refs = [part[name] for name in sorted(part)]
    stats = [ctx.store.manifest(ref.key).get("stats", {}) for ref in refs]
    table = finished(pa.concat_tables([ctx.store.read_table(ref.key).drop_columns(["iqs_rank"]) for ref in refs]),
                     ctx.params)
    counts = sum((Counter(s.get("counts", {})) for s in stats), Counter())
    output = scored_output(table, stats[0]["scorer"], stats[0]["model"], sum(s.get("truncated", 0) for s in stats),
                           {name: counts[name] for name in stats[0].get("counts", {})})
    output.stats.update({k: v for k, v in merged_stats(stats).items() if k not in output.stats})  # precision, parts
    return output


STAGE = Stage("iqs", "1", build, params=scorers.section_type(), section="iqs", output="scored", tags=("gpu", "model"),
              plan=plan, reads=reads, shard_input="conversations", gather=gather, part_rows=part_rows,
              fingerprint=precision_key,
              description="score every conversation with the configured quality scorer")
