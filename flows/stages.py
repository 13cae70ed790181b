"""The Prefect task of every stage, one line each; the stage logic and its StageDef live in tasks/."""
from __future__ import annotations

from flows.stage import stage_task
from tasks import format as format_stage
from tasks import ingest as ingest_stage
from tasks.self_instruct.stage import SELF_INSTRUCT_STAGE

ingest_source = stage_task(ingest_stage.SOURCE_STAGE)  # one task per source file / dataset
ingest = stage_task(ingest_stage.MERGE_STAGE)  # concatenate sources, drop duplicates across them
format = stage_task(format_stage.STAGE)  # template + tokenize + loss masks + exports (needs base_model's tokenizer)
self_instruct = stage_task(SELF_INSTRUCT_STAGE, retries=1)  # generated data: a source of its own flow
