"""Above KMEANS_FAISS_ABOVE cells K-Means runs on faiss (trained on a seeded sample, every cell then assigned in
chunks): the groups are found, the same seed gives the same labels, and without faiss scikit-learn's path runs."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from phenossl.cluster import kmeans


def blobs(n=6000, groups=4, dims=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, dims)).astype(np.float32) * 3
    truth = rng.integers(0, groups, n)
    return (centres[truth] + rng.standard_normal((n, dims), dtype=np.float32)), truth


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(kmeans, "KMEANS_FAISS_ABOVE", 1000)
    monkeypatch.setattr(kmeans, "FAISS_CHUNK_ROWS", 700)  # several chunks, the last one short


def test_faiss_finds_the_groups_and_the_same_seed_gives_the_same_labels(small_threshold, monkeypatch):
    pytest.importorskip("faiss")
    features, truth = blobs()
    calls = []
    original = kmeans.fit_kmeans_faiss
    monkeypatch.setattr(kmeans, "fit_kmeans_faiss", lambda *a: calls.append(a[1]) or original(*a))
    first = kmeans.cluster_features(features, 4, seed=3)
    assert calls == [4]  # the faiss path ran
    assert adjusted_mutual_info_score(truth, first.labels) > 0.99
    again = kmeans.cluster_features(features, 4, seed=3)
    assert np.array_equal(first.labels, again.labels)
    centres = np.stack([features[first.labels == c].mean(axis=0) for c in range(4)])
    assert np.allclose(centres, first.centroids, atol=0.1)  # each cell went to its centre's cluster
    assert first.inertia == pytest.approx(float(((features - first.centroids[first.labels]) ** 2).sum()), rel=1e-3)


def test_without_faiss_scikit_learn_clusters_large_data(small_threshold, monkeypatch):
    monkeypatch.setattr(kmeans, "_faiss", lambda: None)
    monkeypatch.setattr(kmeans, "fit_kmeans_faiss", lambda *a: pytest.fail("faiss path used without faiss"))
    features, truth = blobs()
    result = kmeans.cluster_features(features, 4, seed=0)
    assert adjusted_mutual_info_score(truth, result.labels) > 0.99
