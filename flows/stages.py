"""The Prefect task of every stage, one line each; the stage logic and its StageDef live in tasks/."""
from __future__ import annotations

from flows.stage import stage_task
from tasks import cluster as cluster_stage
from tasks import embed as embed_stage
from tasks import ingest as ingest_stage
from tasks import select as select_stage

ingest_source = stage_task(ingest_stage.SOURCE_STAGE)  # one task per source file / dataset
ingest = stage_task(ingest_stage.MERGE_STAGE)  # concatenate sources, drop duplicates across them
embed = stage_task(embed_stage.STAGE, tags=("gpu",))  # sentence embeddings of the conversations
cluster = stage_task(cluster_stage.STAGE, tags=("gpu",))  # PCA + faiss k-means
select = stage_task(select_stage.STAGE)  # CaR: top n1 by IQS score + top n2 of every cluster
