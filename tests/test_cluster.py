"""PCA + faiss k-means on synthetic clustered vectors; the cluster stage; bad input."""
import numpy as np
import pyarrow as pa
import pytest

from storage.stage import run_stage
from tasks.cluster import cluster_embeddings, default_k, kmeans, reduce
from tasks.embed import Features, embeddings_table
from tasks.errors import BadInputError
from tasks.stages import cluster as cluster_stage
from tasks.stages.cluster import ClusterConfig


def blobs(n=3000, d=48, centers=12, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    labels = rng.integers(0, centers, n)
    x = c[labels] + rng.normal(scale=0.3, size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_default_k_is_cars_rule():
    assert default_k(52002) == 161 and default_k(2) == 1 and default_k(1) == 1


def test_pca_matches_cars_sklearn_call():
    from sklearn.decomposition import PCA

    x, _ = blobs()
    ours = reduce(x, 0.95, seed=42)
    theirs = PCA(n_components=0.95, random_state=42).fit_transform(x)
    assert ours.dims == theirs.shape[1] and ours.explained_variance >= 0.95
    np.testing.assert_allclose(ours.x, theirs, atol=1e-4)
    assert reduce(x, components=5).x.shape == (len(x), 5)
    assert reduce(x, 1.0).dims == x.shape[1]


def test_kmeans_recovers_blobs_and_matches_sklearn_inertia():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x, truth = blobs()
    z = reduce(x, 0.95).x
    ours = kmeans(z, 12, seed=42, niter=20)
    assert ours.device == "cpu" and len(ours.labels) == len(x)
    assert adjusted_rand_score(truth, ours.labels) > 0.99
    sk = KMeans(n_clusters=12, random_state=42).fit(z)
    assert ours.inertia <= sk.inertia_ * 1.02
    # distances are to the assigned centroid
    np.testing.assert_allclose(ours.distances, np.linalg.norm(z - ours.centroids[ours.labels], axis=1), atol=1e-3)
    # same seed, same clusters
    again = kmeans(z, 12, seed=42, niter=20)
    assert (again.labels == ours.labels).all()
    random_init = kmeans(z, 12, seed=42, niter=20, init="random", max_points_per_centroid=64)
    assert len(np.unique(random_init.labels)) == 12


def test_cluster_stage(store):
    x, truth = blobs(n=800, centers=5)
    ids = [f"r{i:04d}" for i in range(len(x))]
    ref = store.publish_table("emb", "embed", embeddings_table(ids, Features(x, x)))
    result = run_stage(cluster_stage.STAGE, ClusterConfig(), {"embeddings": ref}, store)
    table = store.read_table(result.ref.key)
    assert table.schema.names == ["id", "cluster", "distance", "pc1", "pc2"]
    assert table.column("id").to_pylist() == ids
    assert result.stats["k"] == default_k(800) == 20 and result.stats["pca_dims"] <= 48
    assert 0.95 <= result.stats["explained_variance"] <= 1 and result.stats["inertia"] > 0
    assert "| k | 20 |" in result.report
    fixed = run_stage(cluster_stage.STAGE, ClusterConfig(k=5, pca_components=2), {"embeddings": ref}, store)
    assert fixed.stats["pca_dims"] == 2 and fixed.ref.key != result.ref.key
    # the map coordinates are the first two principal components
    np.testing.assert_allclose(store.read_table(fixed.ref.key).column("pc1").to_numpy(),
                               reduce(x, components=2).x[:, 0], atol=1e-4)


def test_bad_input(store):
    x, _ = blobs(n=50)
    ids = [str(i) for i in range(50)]
    with pytest.raises(BadInputError, match="k=60 clusters is more than the 50 rows"):
        cluster_embeddings(ids, x, ClusterConfig(k=60))
    nan = x.copy()
    nan[7, 3] = np.nan
    with pytest.raises(BadInputError, match="row 7.*NaN"):
        cluster_embeddings(ids, nan, ClusterConfig())
    with pytest.raises(BadInputError, match="at least 2"):
        cluster_embeddings(ids[:1], x[:1], ClusterConfig())
    with pytest.raises(BadInputError, match="identical"):
        cluster_embeddings(ids[:5], np.ones((5, 4), np.float32), ClusterConfig())
    with pytest.raises(BadInputError, match="pca_components"):
        cluster_embeddings(ids, x, ClusterConfig(pca_components=100))
    empty = store.publish_table("empty", "embed", embeddings_table([], Features(*[np.zeros((0, 4), np.float32)] * 2)))
    with pytest.raises(BadInputError, match="no embeddings"):
        run_stage(cluster_stage.STAGE, ClusterConfig(), {"embeddings": empty}, store)
    ragged = pa.table({"id": ["a", "b", "c"], "embedding": pa.array([[0.1, 0.2], [0.3, 0.1], [0.5]],
                                                                     pa.list_(pa.float32()))})
    bad = store.publish_table("ragged", "embed", ragged)
    with pytest.raises(BadInputError, match="row 2.*id c"):
        run_stage(cluster_stage.STAGE, ClusterConfig(), {"embeddings": bad}, store)
    with pytest.raises(BadInputError, match="faiss sees no GPU"):
        kmeans(x, 2, device="gpu")
