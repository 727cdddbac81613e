"""Clustering quality: silhouette and AMI against per-cell label columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenossl.cluster import EmbeddingSpace, ami, clustering_metrics, silhouette
from phenossl.errors import InputError


@pytest.fixture
def clustered(blobs):
    features, truth = blobs
    space = EmbeddingSpace(features)
    return space, truth, space.cluster(4, seed=0).labels


def test_metrics_against_label_columns(clustered):
    space, truth, labels = clustered
    compounds = np.array(["DMSO", "taxol", "nocodazole", "AZ138"])[truth]
    cells = pd.DataFrame({"compound": compounds, "plate": "P1", "moa": np.arange(truth.size) % 7})
    metrics = clustering_metrics(space, labels, cells)
    assert set(metrics) == {"silhouette", "ami_compound", "ami_moa"}
    assert metrics["ami_compound"] == pytest.approx(1.0)
    assert abs(metrics["ami_moa"]) < 0.1
    assert metrics["silhouette"] > 0.8


def test_missing_labels_are_left_out(clustered):
    space, truth, labels = clustered
    phenotype = pd.Series(truth.astype(float))
    phenotype[::3] = np.nan
    wrong_where_missing = clustering_metrics(space, labels, pd.DataFrame({"phenotype": phenotype}))
    assert wrong_where_missing["ami_phenotype"] == pytest.approx(1.0)


def test_requested_columns_only_and_missing_column_named(clustered):
    space, truth, labels = clustered
    cells = pd.DataFrame({"compound": truth, "well": truth % 2})
    assert set(clustering_metrics(space, labels, cells, label_columns=["well"])) == {"silhouette", "ami_well"}
    with pytest.raises(InputError, match="'moa'"):
        clustering_metrics(space, labels, cells, label_columns=["moa"])


def test_raw_features_work_and_match_the_space(clustered):
    space, _, labels = clustered
    assert clustering_metrics(space.features.copy(), labels)["silhouette"] == pytest.approx(
        clustering_metrics(space, labels)["silhouette"]
    )


def test_silhouette_on_a_seeded_subsample_is_close_and_reproducible(clustered):
    space, _, labels = clustered
    full = silhouette(space.features, labels)
    sampled = [silhouette(space.features, labels, seed=3, sample_size=100) for _ in range(2)]
    assert sampled[0] == sampled[1]
    assert sampled[0] == pytest.approx(full, abs=0.05)


def test_silhouette_undefined_for_one_cluster(blobs):
    assert np.isnan(silhouette(blobs[0], np.zeros(len(blobs[0]), dtype=int)))


def test_row_count_mismatch_is_an_input_error(clustered):
    space, truth, labels = clustered
    with pytest.raises(InputError, match="240"):
        clustering_metrics(space, labels[:-1])
    with pytest.raises(InputError, match="239 rows"):
        clustering_metrics(space, labels, pd.DataFrame({"compound": truth[:-1]}))


def test_ami_ignores_label_names():
    assert ami(["a", "a", "b", "b"], [7, 7, 3, 3]) == pytest.approx(1.0)
    with pytest.raises(InputError):
        ami([1, 2], [1, 2, 3])
