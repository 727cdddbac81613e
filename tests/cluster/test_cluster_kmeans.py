"""K-Means on an EmbeddingSpace: determinism, recovery of known groups, nearest-to-centroid cells."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from phenossl.cluster import EmbeddingSpace, cluster_features
from phenossl.cluster import kmeans as kmeans_module
from phenossl.errors import ConfigError, TooFewCellsError


def test_well_separated_blobs_are_recovered(blobs):
    features, truth = blobs
    clustering = EmbeddingSpace(features).cluster(4, seed=0)
    assert adjusted_mutual_info_score(truth, clustering.labels) == pytest.approx(1.0)
    assert clustering.centroids.shape == (4, features.shape[1])
    assert clustering.labels.shape == clustering.distance.shape == clustering.nearest_rank.shape == (240,)
    assert (clustering.k, clustering.seed) == (4, 0)
    assert clustering.sizes.tolist() == [60, 60, 60, 60]


def test_same_seed_gives_identical_clustering(noise):
    space = EmbeddingSpace(noise)
    first, second = space.cluster(6, seed=3), space.cluster(6, seed=3)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_allclose(first.centroids, second.centroids, rtol=1e-6)
    for cluster_id in range(6):
        np.testing.assert_array_equal(first.nearest[cluster_id], second.nearest[cluster_id])


def test_different_seeds_can_differ_on_unstructured_data(noise):
    space = EmbeddingSpace(noise)
    labelings = {space.cluster(6, seed=seed).labels.tobytes() for seed in range(4)}
    assert len(labelings) > 1


def test_reclustering_does_not_change_the_space(noise):
    space = EmbeddingSpace(noise)
    before = space.features.copy()
    space.cluster(5, seed=0)
    space.cluster(9, seed=1)
    np.testing.assert_array_equal(space.features, before)


def test_nearest_lists_match_brute_force(noise):
    space = EmbeddingSpace(noise)
    clustering = space.cluster(5, seed=0, n_nearest=6)
    features = space.features.astype(np.float64)
    brute_distance = np.linalg.norm(features - clustering.centroids[clustering.labels], axis=1)
    np.testing.assert_allclose(clustering.distance, brute_distance, rtol=1e-5)
    for cluster_id in range(5):
        members = np.flatnonzero(clustering.labels == cluster_id)
        expected = members[np.argsort(brute_distance[members], kind="stable")[:6]]
        np.testing.assert_array_equal(clustering.nearest[cluster_id], expected)
        np.testing.assert_array_equal(clustering.nearest_rank[expected], np.arange(1, 7))
    assert (clustering.nearest_rank > 0).sum() == 5 * 6
    assert clustering.nearest_rank.max() == 6


def test_nearest_list_is_shorter_for_a_small_cluster():
    features = np.array([[0, 0], [0.1, 0], [10, 10], [10.1, 10], [10, 10.2], [9.9, 10]], dtype=np.float32)
    clustering = EmbeddingSpace(features, preprocessing="none").cluster(2, n_nearest=3)
    sizes = sorted(len(members) for members in clustering.nearest.values())
    assert sizes == [2, 3]
    assert (clustering.nearest_rank > 0).sum() == 5


def test_more_clusters_than_cells_names_both_numbers(rng):
    space = EmbeddingSpace(rng.normal(size=(5, 3)))
    with pytest.raises(TooFewCellsError, match="6 clusters from 5 cells"):
        space.cluster(6)


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, True])
def test_k_below_two_or_not_whole_is_a_config_error(rng, k):
    with pytest.raises(ConfigError):
        EmbeddingSpace(rng.normal(size=(10, 3))).cluster(k)


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_bad_seed_is_a_config_error(rng, seed):
    with pytest.raises(ConfigError, match="seed"):
        EmbeddingSpace(rng.normal(size=(10, 3))).cluster(2, seed=seed)


def test_n_nearest_must_be_positive(rng):
    with pytest.raises(ConfigError, match="n_nearest"):
        EmbeddingSpace(rng.normal(size=(10, 3))).cluster(2, n_nearest=0)


def test_results_are_read_only(blobs):
    clustering = EmbeddingSpace(blobs[0]).cluster(4)
    with pytest.raises(ValueError):
        clustering.labels[0] = 3


def test_coarse_to_fine_path_is_deterministic_and_recovers_blobs(monkeypatch, blob_maker):
    """Above the subsample size the fit starts from subsample centres; shrink the size to test it fast."""
    monkeypatch.setattr(kmeans_module, "KMEANS_SUBSAMPLE", 100)
    features, truth = blob_maker(n_per_blob=150, n_blobs=3)
    first = cluster_features(features, 3, seed=2)
    second = cluster_features(features, 3, seed=2)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert adjusted_mutual_info_score(truth, first.labels) == pytest.approx(1.0)
