"""The Prefect task of every stage, one line each; the stage logic and its StageDef live in tasks/."""
from __future__ import annotations

from flows.stage import stage_task
from tasks import base_model as base_model_stage
from tasks import cluster as cluster_stage
from tasks import embed as embed_stage
from tasks import format as format_stage
from tasks import ingest as ingest_stage
from tasks import iqs as iqs_stage
from tasks import select as select_stage
from tasks import train as train_stage
from tasks.self_instruct.stage import SELF_INSTRUCT_STAGE

ingest_source = stage_task(ingest_stage.SOURCE_STAGE)  # one task per source file / dataset
ingest = stage_task(ingest_stage.MERGE_STAGE)  # concatenate sources, drop duplicates across them
embed = stage_task(embed_stage.STAGE, tags=("gpu",))  # sentence embeddings of the conversations
iqs_train = stage_task(iqs_stage.TRAIN_STAGE, tags=("gpu",))  # revision files -> IQS model artifact
iqs = stage_task(iqs_stage.SCORE_STAGE, tags=("gpu",))  # conversations + IQS model -> iqs_score, iqs_rank
cluster = stage_task(cluster_stage.STAGE, tags=("gpu",))  # PCA + faiss k-means
select = stage_task(select_stage.STAGE)  # CaR: top n1 by IQS score + top n2 of every cluster
base_model = stage_task(base_model_stage.STAGE, tags=("gpu",))  # convert/copy the base model once
format = stage_task(format_stage.STAGE)  # template + tokenize + loss masks + exports (needs base_model's tokenizer)
train = stage_task(train_stage.STAGE, tags=("gpu",))  # peft adapter; retries resume from the last checkpoint
# generated data, a source of its own flow; one retry: a request that failed after its own HTTP retries rarely
# succeeds at once
self_instruct = stage_task(SELF_INSTRUCT_STAGE, retries=1)
