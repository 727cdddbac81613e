"""The report on synthetic runs whose truth is known: an embedding of density is reported as following density,
one of the compound as following the compound; and the pure scores against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from report_helpers import compound_embedding, density_embedding, kmeans_labels, make_run, plate_cells

from phenossl.report import run_report
from phenossl.report.association import association_table, correlation_ratio, probe_score, quantile_bins
from phenossl.report.reading import clusters_reading
from phenossl.report.variables import (
    CATEGORICAL,
    CONTINUOUS,
    TREATMENT,
    Variable,
    border_distance,
    neighbour_counts,
    treatment_names,
)

DENSITY = ("neighbours", "nuclei_per_field", "neighbours_in_tile")


def _scores(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("variable")


@pytest.fixture(scope="module")
def cells_and_labels():
    return plate_cells(seed=0)


def _report_of(tmp_path, cells, labels, embeddings):
    """The report of a run with ``embeddings``, clustered by K-Means, and its table indexed by variable."""
    paths = make_run(tmp_path / "run", embeddings, kmeans_labels(embeddings), cells, labels)
    report = run_report(paths.root)
    return report, _scores(report.table)


def test_an_embedding_of_density_is_reported_as_following_density(tmp_path, cells_and_labels):
    cells, labels = cells_and_labels
    report, scores = _report_of(tmp_path, cells, labels, density_embedding(cells))
    density = max(scores.loc[v, "cluster_ami"] for v in DENSITY)
    assert density >= scores.loc["compound", "cluster_ami"] + 0.2, report.markdown
    assert scores.loc["neighbours", "eta2"] >= 0.5, report.markdown
    assert scores.loc["neighbours", "probe_score"] >= 0.7, report.markdown  # R2 with whole wells held out
    assert scores.loc["compound", "probe_score"] <= 0.65, report.markdown  # balanced accuracy: chance is 0.5
    first = report.reading.split(". ")[0]
    assert "compound" in first and any(v in first for v in DENSITY), report.reading
    assert min(first.find(v) for v in DENSITY if v in first) < first.find("compound"), report.reading
    assert first.startswith("The clusters strongly follow local density (neighbours"), report.reading
    assert "more than compound" in first, report.reading
    assert scores.loc["border_distance", "n_cells"] == len(cells)  # the labels give the field size


def test_an_embedding_of_the_compound_is_reported_as_following_the_compound(tmp_path, cells_and_labels):
    cells, labels = cells_and_labels
    report, scores = _report_of(tmp_path, cells, labels, compound_embedding(cells))
    assert scores.loc["compound", "cluster_ami"] >= 0.8, report.markdown
    assert all(scores.loc[v, "cluster_ami"] <= 0.1 for v in DENSITY), report.markdown
    assert scores.loc["compound", "probe_score"] >= 0.9, report.markdown
    assert report.reading.startswith("The clusters strongly follow compound"), report.reading
    assert "more than any nuisance: the first is" in report.reading


def test_density_from_the_cell_table_when_no_labels_were_kept(tmp_path, cells_and_labels):
    cells, _ = cells_and_labels
    embeddings = density_embedding(cells)
    paths = make_run(tmp_path / "run", embeddings, kmeans_labels(embeddings), cells, labels=None)
    scores = _scores(run_report(paths.root).table)
    assert scores.loc["neighbours", "cluster_ami"] > scores.loc["compound", "cluster_ami"]
    assert "tiled cells" in scores.loc["neighbours", "note"]
    assert np.isnan(scores.loc["border_distance", "cluster_ami"])
    assert scores.loc["border_distance", "note"].startswith("not available: the field size is unknown")


def test_correlation_ratio_and_bins_against_hand_values():
    values = np.array([1.0, 1.0, 3.0, 3.0])
    assert correlation_ratio(values, np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert correlation_ratio(values, np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    # between: means 2 and 3 around 2.5 -> 4 * 0.25 = 1; total: 1.5^2 + 0.5^2 + 0.5^2 + 1.5^2 = 5
    assert correlation_ratio(np.array([1.0, 3.0, 2.0, 4.0]), np.array([0, 0, 1, 1])) == pytest.approx(0.2)
    assert np.isnan(correlation_ratio(np.ones(5), np.arange(5)))
    assert sorted(np.bincount(quantile_bins(np.arange(100.0)))) == [20] * 5
    assert len(np.unique(quantile_bins(np.array([1.0] * 50 + [2.0] * 50)))) == 2  # ties stay together


def test_neighbours_and_border_distance_by_hand():
    nuclei = np.array([[10.0, 10.0], [10.0, 15.0], [10.0, 40.0], [50.0, 50.0]])
    assert neighbour_counts(nuclei, nuclei, 6.0).tolist() == [1, 1, 0, 0]
    assert neighbour_counts(nuclei[:1], nuclei, 31.0).tolist() == [2]
    square, disc = (neighbour_counts(nuclei[3:], nuclei, 40.0, p=p) for p in (np.inf, 2))
    assert (square.tolist(), disc.tolist()) == ([3], [0])  # the tile is a square: its corners count
    assert border_distance(np.array([[10.0, 40.0], [95.0, 3.0]]), 100, 60).tolist() == [10.0, 3.0]


def test_the_probe_holds_whole_wells_out():
    """A variable that only the well tells (one random value per well, no signal in the features but the well
    identity) is predicted from neighbouring cells of the same well, never across wells."""
    rng = np.random.default_rng(0)
    wells = np.repeat(np.arange(10), 30)
    well_value = rng.normal(size=10)[wells]
    features = np.eye(10)[wells] + rng.normal(0, 0.01, (300, 10))  # the well's identity, nothing else
    score, chance, what = probe_score(features, Variable("v", "nuisance", CONTINUOUS, well_value), wells)
    assert what == "R2" and chance == 0.0
    assert score < 0.1  # within wells it would be ~1
    one_well = probe_score(features, Variable("v", "nuisance", CONTINUOUS, well_value), np.zeros(300))
    assert np.isnan(one_well[0]) and "fewer than 2 wells" in one_well[2]


def test_variables_that_are_not_available_keep_their_reason():
    table = association_table([Variable("neighbours", "nuisance", CONTINUOUS, None, "not available: why"),
                               Variable("compound", TREATMENT, CATEGORICAL, np.array(["a", "b"] * 5, dtype=object))],
                              np.array([0, 1] * 5), np.zeros((10, 2)), None)
    rows = _scores(table)
    assert np.isnan(rows.loc["neighbours", "cluster_ami"]) and rows.loc["neighbours", "note"] == "not available: why"
    assert rows.loc["compound", "cluster_ami"] == pytest.approx(1.0)
    assert rows.loc["compound", "probe"].startswith("skipped")
    assert clusters_reading(table).startswith("The clusters strongly follow compound (1.00)")


def test_treatment_columns_are_the_metadata_not_the_cells_own():
    cells = pd.DataFrame(columns=["cell_id", "field", "label", "centroid_y", "centroid_x", "area", "padded", "plate",
                                  "well", "site", "file_w1", "compound", "concentration", "moa", "crop_index",
                                  "source_file"])
    assert treatment_names(cells) == ["compound", "concentration", "moa"]
    assert treatment_names(cells, ["moa", "plate"]) == ["moa", "compound", "concentration"]  # plate: nuisance


def test_the_probe_does_not_overfit_many_dimensions_into_a_large_negative_r2():
    """512 dimensions, 300 cells: a variable the features do not hold must score about 0 (the mean), not far below
    (a fixed small ridge penalty gave -0.81 here), and one they hold must score above it."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 512))
    signal = rng.normal(size=300)
    features[:, 0] += 3 * signal
    groups = np.repeat(np.arange(10), 30)
    noise_score, _, what = probe_score(features, Variable("noise", "nuisance", CONTINUOUS, rng.normal(size=300)),
                                       groups)
    signal_score, _, _ = probe_score(features, Variable("signal", "nuisance", CONTINUOUS, signal), groups)
    assert what == "R2" and -0.1 < noise_score < 0.1 and signal_score > noise_score + 0.15


def test_the_reading_says_when_no_number_beats_its_mean():
    from phenossl.report.reading import embedding_reading

    table = pd.DataFrame([{"variable": "nucleus_area", "group": "nuisance", "probe": "R2", "probe_score": -0.2,
                           "probe_chance": 0.0}])
    assert "no nuisance number better than its mean (the best R2: nucleus_area, -0.20)" in embedding_reading(table)
