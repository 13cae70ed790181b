"""The Prefect task of every stage, one line each; the stage logic and its StageDef live in tasks/."""
from __future__ import annotations

from flows.stage import stage_task
from tasks import base_model as base_model_stage
from tasks import ingest as ingest_stage
from tasks import train as train_stage

ingest_source = stage_task(ingest_stage.SOURCE_STAGE)  # one task per source file / dataset
ingest = stage_task(ingest_stage.MERGE_STAGE)  # concatenate sources, drop duplicates across them
base_model = stage_task(base_model_stage.STAGE, tags=("gpu",))  # convert/copy the base model once
train = stage_task(train_stage.STAGE, tags=("gpu",))  # peft adapter; retries resume from the last checkpoint
