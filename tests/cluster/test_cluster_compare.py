"""Comparing two clusterings of the same cells."""

from __future__ import annotations

import numpy as np
import pytest

from phenossl.cluster import EmbeddingSpace, compare_clusterings
from phenossl.errors import InputError


def test_permuted_ids_are_the_same_clustering(rng):
    labels_a = rng.integers(0, 5, size=200)
    permutation = np.array([3, 0, 4, 1, 2])
    comparison = compare_clusterings(labels_a, permutation[labels_a])
    assert comparison.ami == pytest.approx(1.0)
    assert comparison.n_changed == 0
    assert comparison.matching == {a: int(permutation[a]) for a in range(5)}


def test_moved_cells_are_found(rng):
    labels_a = np.repeat(np.arange(4), 50)
    labels_b = (labels_a + 1) % 4  # renamed...
    moved = np.array([3, 77, 120, 199])
    labels_b[moved] = (labels_b[moved] + 1) % 4  # ...and four cells moved to a neighbouring cluster
    comparison = compare_clusterings(labels_a, labels_b)
    np.testing.assert_array_equal(comparison.changed, moved)
    assert comparison.fraction_changed == pytest.approx(4 / 200)
    assert comparison.ami < 1.0


def test_different_k_counts_unmatched_cluster_as_changed():
    labels_a = np.repeat([0, 1, 2], 10)
    labels_b = np.repeat([5, 6, 6], 10)  # clusters 1 and 2 merged in B
    comparison = compare_clusterings(labels_a, labels_b)
    assert len(comparison.matching) == 2
    assert comparison.n_changed == 10
    assert comparison.matching[0] == 5


def test_relabel_keeps_colours_stable_between_reclusterings(blobs):
    space = EmbeddingSpace(blobs[0])
    first, second = space.cluster(4, seed=0).labels, space.cluster(5, seed=7).labels
    comparison = compare_clusterings(first, second)
    relabelled = comparison.relabel_b_as_a(second)
    assert set(relabelled.tolist()) == set(range(5))
    matched = np.isin(np.arange(first.size), comparison.changed, invert=True)
    np.testing.assert_array_equal(relabelled[matched], first[matched])


def test_length_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="3 vs 2"):
        compare_clusterings([0, 1, 1], [0, 1])
