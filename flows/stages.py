"""The Prefect task of every stage, one line each; the stage logic and its StageDef live in tasks/."""
from __future__ import annotations

from flows.stage import stage_task
from tasks import ingest as ingest_stage

ingest_source = stage_task(ingest_stage.SOURCE_STAGE)  # one task per source file / dataset
ingest = stage_task(ingest_stage.MERGE_STAGE)  # concatenate sources, drop duplicates across them
