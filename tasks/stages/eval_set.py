"""`eval.set`: an evaluation set from a file the user names: CaR's expert-revised responses (`format:
car_revised`, tasks/evaluate/gold.py) or any source ingest reads. Keyed on the file's content, as ingest is.
Not a pipeline stage: the selection-ablation flow (flows/ablation.py) plans one per entry of `eval.sets`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from storage.stage import Call, Stage, StageContext, StageOutput
from tasks.errors import BadInputError
from tasks.evaluate.gold import GOLD_FORMAT, read_gold
from tasks.ingest.config import SourceConfig
from tasks.ingest.revision import source_revision
from tasks.ingest.source import read_source


class EvalSetConfig(SourceConfig):
    format: str | None = Field(None, description=f"{GOLD_FORMAT}: the revised side of CaR's revision pairs "
                                                 "(APE_score_valid.csv); otherwise any ingest format, detected "
                                                 "when empty")
    name: str | None = Field(None, description="the set's name in reports; the file's stem when empty")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name.split(".")[0]


def fingerprint(params: EvalSetConfig) -> dict[str, Any]:
    try:
        return {"content": source_revision(params.path)}
    except FileNotFoundError:
        raise BadInputError("evaluation set not found", file=params.path, field="eval.sets") from None


def build(ctx: StageContext) -> StageOutput:
    params: EvalSetConfig = ctx.params
    if params.format == GOLD_FORMAT:
        table, quarantine, counts = read_gold(params.path)
    else:
        reading = read_source(params, progress=ctx.progress)
        parts = list(reading.tables)
        table = pa.concat_tables(parts) if parts else None
        quarantine, counts = reading.quarantine.table(), {"read": reading.stats["read"]}
    if table is None or table.num_rows == 0:
        raise BadInputError("the evaluation set has no usable rows", file=params.path, field="eval.sets")
    stats = {"name": params.label, "rows": table.num_rows, "quarantined": quarantine.num_rows, **counts}
    ctx.log.info("eval.set %s: %d rows (%d quarantined) from %s", params.label, table.num_rows,
                 quarantine.num_rows, params.path)
    return StageOutput(table=table, companions={"quarantine": quarantine}, stats=stats)


def plan(config: Any) -> list[Call]:
    """One evaluation set per entry of `eval.sets`."""
    return [Call(entry, label=f"eval.set[{entry.label}]") for entry in config.eval.sets]


STAGE = Stage("eval.set", "1", build, params=EvalSetConfig, output="eval_set", fingerprint=fingerprint, plan=plan,
              description="an evaluation set from a file (CaR's revised responses, or any ingest source)")
