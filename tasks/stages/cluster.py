"""`cluster`: PCA, then faiss k-means over the embeddings (tasks/cluster.py), as CaR's Clustering/cluster.py."""
from __future__ import annotations

from typing import Literal

import pyarrow.compute as pc
from pydantic import Field

from storage.params import NOT_IN_KEY, Section
from storage.stage import Requirement, Stage, StageContext, StageOutput
from storage.store import DatasetRef
from tasks.cluster import cluster_embeddings, report
from tasks.embed import embedding_matrix
from tasks.errors import BadInputError


class ClusterConfig(Section):
    pca_variance: float = Field(0.95, gt=0, le=1, description="PCA keeps the fewest components explaining this "
                                                              "share of the variance (CaR: 0.95)")
    pca_components: int | None = Field(None, ge=1, description="a fixed number of PCA components instead")
    k: int | None = Field(None, ge=1, description="number of clusters; int(sqrt(n/2)) when empty (CaR)")
    seed: int = 42
    niter: int = Field(10, ge=1, description="k-means (Lloyd) iterations; after k-means++ seeding 10 reach "
                                            "what 20 do (benchmarks/cluster.py)")
    init: Literal["kmeans++", "random"] = Field(
        "kmeans++", description="kmeans++: greedy k-means++ seeding (as sklearn/CaR) on a sample of 50 points per "
                                "cluster; random: faiss's random seeding")
    max_points_per_centroid: int | None = Field(
        128, ge=1, description="faiss trains on at most k times this many sampled points (every row is then "
                               "assigned); empty (null): train on every point, as CaR's sklearn run")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", json_schema_extra=NOT_IN_KEY,
                                                  description="auto: gpu when faiss sees one")


def build(ctx: StageContext, embeddings: DatasetRef, conversations: DatasetRef | None = None) -> StageOutput:
    """Clusters the embeddings of `conversations` when given (the rows dedup kept), else all of them."""
    table = ctx.store.read_table(embeddings.key, columns=["id", "embedding"])
    if conversations is not None:
        kept = ctx.store.read_table(conversations.key, columns=["id"]).column("id")
        table = table.filter(pc.is_in(table.column("id"), value_set=kept))
        missing = conversations.rows - table.num_rows
        if missing:
            raise BadInputError(f"{missing} conversation(s) of {conversations.key} have no embedding in "
                                f"{embeddings.key}: were they embedded from another dataset?", field="embedding")
    if table.num_rows == 0:
        raise BadInputError(f"dataset {embeddings.key} has no embeddings to cluster", field="embedding")
    ids = table.column("id").to_pylist()
    x = embedding_matrix(table.column("embedding"), ids)
    advance = ctx.progress(1, f"PCA + k-means over {len(ids):,} rows")
    clusters, stats = cluster_embeddings(ids, x, ctx.params)
    advance(1)
    ctx.log.info("cluster: k=%d over %d PCA dims (%.1f%% variance), inertia %.4g", stats["k"], stats["pca_dims"],
                 100 * stats["explained_variance"], stats["inertia"])
    return StageOutput(table=clusters, stats=stats, report=report(stats))


STAGE = Stage("cluster", "1", build, params=ClusterConfig, section="cluster", output="clusters", tags=("gpu",),
              requires=(Requirement("faiss", "pip install 'sftflow[cpu]' (faiss-cpu) or 'sftflow[gpu]'"),),
              description="PCA + faiss k-means over the embeddings (of the rows dedup kept)")
