"""Small synthetic embeddings for the cluster tests."""

from __future__ import annotations

import numpy as np
import pytest


def make_blobs(n_per_blob: int = 60, n_blobs: int = 4, n_dims: int = 24, spread: float = 0.3, seed: int = 0):
    """Well-separated Gaussian blobs: (features float32, true labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(n_blobs, n_dims))
    labels = np.repeat(np.arange(n_blobs), n_per_blob)
    features = centres[labels] + rng.normal(scale=spread, size=(labels.size, n_dims))
    order = rng.permutation(labels.size)  # interleave so that cluster ids are not just row order
    return features[order].astype(np.float32), labels[order]


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def noise():
    """Unstructured data, where K-Means results depend on the seed."""
    return np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)


@pytest.fixture
def blob_maker():
    """make_blobs itself, for tests that need another size."""
    return make_blobs
