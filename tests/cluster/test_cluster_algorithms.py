"""The clustering registry (K-Means, Gaussian mixture, HDBSCAN) and choosing k, with the real scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from phenossl.cluster import EmbeddingSpace
from phenossl.cluster.algorithms import ALGORITHMS, NOISE, cluster_with
from phenossl.cluster.metrics import clustering_metrics
from phenossl.cluster.suggest import suggest_k
from phenossl.config import RunConfig, apply_overrides
from phenossl.errors import ConfigError, TooFewCellsError
from phenossl.export import cluster_table
from phenossl.export_formats import obs_table


def blobs_with_noise(blob_maker, n_noise: int = 24, seed: int = 0):
    """Four tight blobs and ``n_noise`` points spread uniformly far around them (true label -1)."""
    features, truth = blob_maker(n_per_blob=60, n_blobs=4, n_dims=8, spread=0.3, seed=seed)
    rng = np.random.default_rng(seed + 1)
    scattered = rng.uniform(-20, 20, size=(n_noise, features.shape[1])).astype(np.float32)
    return np.vstack([features, scattered]), np.concatenate([truth, np.full(n_noise, -1)])


def test_the_registry_lists_the_three_algorithms():
    assert list(ALGORITHMS) == ["kmeans", "gmm", "hdbscan"]
    assert [spec.uses_k for spec in ALGORITHMS.values()] == [True, True, False]


def test_k_auto_picks_the_four_true_clusters_and_ami_is_one(blob_maker):
    features, truth = blob_maker(n_per_blob=60, n_blobs=4, n_dims=16)
    for algorithm in ("kmeans", "gmm"):
        curve = suggest_k(features, algorithm=algorithm, seed=0, labels=truth, label_column="truth")
        assert curve.best_k == 4, algorithm
        assert curve.ks.tolist() == list(range(2, 16))
        four = curve.table().set_index("k").loc[4]
        assert four["ami_truth"] == pytest.approx(1.0) and bool(four["chosen"])
        assert np.nanargmax(curve.silhouette) == 2


def test_k_auto_is_seeded_and_subsamples(blob_maker):
    features, _ = blob_maker(n_per_blob=300, n_blobs=3, n_dims=8)
    first = suggest_k(features, seed=3, sample_size=500)
    second = suggest_k(features, seed=3, sample_size=500)
    assert first.n_sample == 500 and first.best_k == second.best_k == 3
    np.testing.assert_array_equal(first.silhouette, second.silhouette)
    assert first.ami is None and "ami" not in " ".join(first.table().columns)


def test_k_auto_refuses_what_cannot_work():
    with pytest.raises(TooFewCellsError, match="at least 3 cells.*there is 1"):
        suggest_k(np.zeros((1, 4), np.float32))
    with pytest.raises(ConfigError, match="hdbscan finds the number of clusters itself"):
        suggest_k(np.zeros((10, 4), np.float32), algorithm="hdbscan")
    with pytest.raises(ConfigError, match="Unknown clustering algorithm 'ward'"):
        suggest_k(np.zeros((10, 4), np.float32), algorithm="ward")


def test_gmm_with_the_same_seed_gives_identical_labels(noise):
    first = cluster_with(noise, "gmm", 5, seed=2)
    second = cluster_with(noise, "gmm", 5, seed=2)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.algorithm == "gmm" and first.k == 5 and first.n_noise == 0
    assert first.sizes.sum() == noise.shape[0]


def test_gmm_recovers_blobs_and_its_centroids_are_the_component_means(blobs):
    features, truth = blobs
    clustering = EmbeddingSpace(features, preprocessing="none").cluster(4, seed=0, algorithm="gmm")
    assert adjusted_mutual_info_score(truth, clustering.labels) == pytest.approx(1.0)
    for cluster in range(4):  # tight blobs: the component mean is the mean of its cells
        np.testing.assert_allclose(clustering.centroids[cluster], features[clustering.labels == cluster].mean(0),
                                   atol=1e-3)
    assert (clustering.nearest_rank > 0).sum() == 4 * 8


def test_hdbscan_calls_uniform_noise_points_noise(blob_maker):
    features, truth = blobs_with_noise(blob_maker)
    clustering = cluster_with(features, "hdbscan", params={"min_cluster_size": 20}, n_nearest=5)
    assert clustering.k == 4 and clustering.algorithm == "hdbscan"
    scattered = truth == -1
    assert (clustering.labels[scattered] == NOISE).mean() >= 0.9
    assert (clustering.labels[~scattered] != NOISE).all()
    kept = ~scattered
    assert adjusted_mutual_info_score(truth[kept], clustering.labels[kept]) == pytest.approx(1.0)
    # the contract: noise has no centroid, no distance, no place in the nearest lists
    noise = clustering.labels == NOISE
    assert np.isnan(clustering.distance[noise]).all() and np.isfinite(clustering.distance[~noise]).all()
    assert (clustering.nearest_rank[noise] == 0).all() and sorted(clustering.nearest) == [0, 1, 2, 3]
    assert clustering.sizes.sum() + clustering.n_noise == len(features)
    for cluster in range(4):
        np.testing.assert_allclose(clustering.centroids[cluster], features[clustering.labels == cluster].mean(0),
                                   rtol=1e-5, atol=1e-5)
    metrics = clustering_metrics(features, clustering.labels, pd.DataFrame({"t": truth}), ["t"])
    assert metrics["silhouette"] > 0.8  # the noise is left out of the silhouette


def test_hdbscan_above_max_fit_fits_a_seeded_sample_and_assigns_the_rest(blob_maker):
    features, truth = blob_maker(n_per_blob=150, n_blobs=4, n_dims=8)
    params = {"min_cluster_size": 20, "max_fit": 200}
    first = cluster_with(features, "hdbscan", params=params, seed=1)
    again = cluster_with(features, "hdbscan", params=params, seed=1)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.k == 4
    assert adjusted_mutual_info_score(truth, first.labels) == pytest.approx(1.0)


@pytest.mark.parametrize(("params", "message"), [
    ({"min_cluster_size": 0}, "min_cluster_size must be a whole number >= 2"),
    ({"min_cluster_size": 500}, "min_cluster_size is 500 but there are only 300 cells"),
    ({"min_cluster_size": 5, "min_samples": 0}, "min_samples must be"),
])
def test_bad_hdbscan_parameters_are_clear_messages(noise, params, message):
    with pytest.raises((ConfigError, TooFewCellsError), match=message):
        cluster_with(noise, "hdbscan", params=params)


def test_the_configuration_names_the_algorithm_and_refuses_bad_values():
    config = apply_overrides(RunConfig(), ["cluster.algorithm=hdbscan", "cluster.hdbscan.min_cluster_size=12"])
    assert config.cluster.algorithm_params()["min_cluster_size"] == 12
    assert "algorithm: hdbscan" in config.to_yaml()
    with pytest.raises(ConfigError, match="Unknown clustering algorithm 'kmedoids': choose one of kmeans, gmm"):
        apply_overrides(RunConfig(), ["cluster.algorithm=kmedoids"])
    with pytest.raises(ConfigError, match="cluster.hdbscan.min_cluster_size: Input should be greater than or equal"):
        apply_overrides(RunConfig(), ["cluster.hdbscan.min_cluster_size=0"])


def test_the_export_table_and_anndata_name_the_noise(blob_maker):
    features, _ = blobs_with_noise(blob_maker)
    clustering = cluster_with(features, "hdbscan", params={"min_cluster_size": 20})
    table = cluster_table(pd.DataFrame({"cell_id": range(len(features))}), clustering)
    noise = table["cluster"] == -1
    assert noise.any() and (table.loc[noise, "cluster_name"] == "noise").all()
    assert (table.loc[~noise, "cluster_name"] == table.loc[~noise, "cluster"].astype(str)).all()
    assert table.loc[noise, "distance_to_centroid"].isna().all()
    obs = obs_table(table)
    assert list(obs["cluster"].cat.categories) == ["0", "1", "2", "3", "noise"]
    assert (obs["cluster"][noise.to_numpy()] == "noise").all() and "cluster_name" not in obs
    kmeans_table = cluster_table(pd.DataFrame({"cell_id": range(len(features))}), cluster_with(features, k=4))
    assert "cluster_name" not in kmeans_table  # K-Means tables are as they were


def test_hdbscan_that_finds_no_cluster_calls_every_cell_noise(noise):
    clustering = cluster_with(noise, "hdbscan", params={"min_cluster_size": 150})
    if clustering.k:  # scikit-learn may still split uniform data in two halves; then there is nothing to check
        pytest.skip(f"HDBSCAN found {clustering.k} clusters in uniform data")
    assert clustering.n_noise == len(noise) and clustering.sizes.size == 0 and clustering.nearest == {}
    assert clustering.centroids.shape == (0, noise.shape[1]) and np.isnan(clustering.distance).all()
    table = cluster_table(pd.DataFrame({"cell_id": range(len(noise))}), clustering)
    assert set(table["cluster_name"]) == {"noise"}
    assert np.isnan(clustering_metrics(noise, clustering.labels)["silhouette"])
