import numpy as np
import pandas as pd
import pytest

from phenossl.errors import ConfigError, InputError
from phenossl.evaluate import (
    EvaluatedRun,
    EvaluationSettings,
    evaluate_embeddings,
    evaluation_table,
    parse_k,
    table_markdown,
)


def two_plates(rng, *, plate_shift=0.0, effect=6.0, n=120):
    """Two plates of DMSO and treated cells (1 informative dim, 3 noise dims); plate 2 shifted by
    ``plate_shift`` in every dim, as a batch effect would."""
    rows, features = [], []
    for p, plate in enumerate(("P1", "P2")):
        for compound in ("DMSO", "drug"):
            x = rng.normal(size=(n, 4))
            x[:, 0] += effect * (compound == "drug")
            x += plate_shift * p
            features.append(x)
            rows += [{"plate": plate, "compound": compound}] * n
    return np.concatenate(features).astype(np.float32), pd.DataFrame(rows)


def test_a_separable_label_scores_high_and_a_random_representation_scores_near_zero(rng):
    features, cells = two_plates(rng)
    settings = EvaluationSettings(label="compound", within="plate", seeds=3)
    good = evaluate_embeddings(features, cells, settings)
    assert good.k == 2 and good.n_cells == len(cells)
    assert good.ami_within_mean > 0.6 and set(good.per_group) == {"P1", "P2"}
    assert good.knn_balanced_accuracy > 0.9 and good.knn_scheme == "leave one plate out"
    noise = evaluate_embeddings(rng.normal(size=features.shape), cells, settings)
    assert abs(noise.ami_mean) < 0.05 and noise.knn_balanced_accuracy < 0.6


def test_standardising_each_plate_to_its_controls_removes_a_plate_effect(rng):
    features, cells = two_plates(rng, plate_shift=6.0, effect=3.0)
    settings = EvaluationSettings(label="compound", controls="compound=DMSO", seeds=3)
    raw = evaluate_embeddings(features, cells, settings)
    corrected = evaluate_embeddings(features, cells, settings, to_controls=True)
    assert raw.ami_mean < 0.2  # K-Means splits the plates
    assert corrected.ami_mean > raw.ami_mean + 0.3


def test_the_table_has_a_row_per_run_and_space_and_reads_as_markdown(rng):
    features, cells = two_plates(rng)
    settings = EvaluationSettings(label="compound", within="plate", controls="compound=DMSO", seeds=2)
    runs = [EvaluatedRun("trained", "ssl", features, cells),
            EvaluatedRun("measured", "cellprofiler", features[:, :3], cells)]
    table = evaluation_table(runs, settings)
    assert list(table["run"]) == ["trained", "trained", "measured", "measured"]
    assert list(table["space"]) == ["as clustered", "to controls"] * 2
    assert {"ami_mean", "ami_within_mean", "knn_balanced_accuracy", "silhouette", "ami_within[P1]"} <= set(table)
    text = table_markdown(table, settings)
    assert "| trained | ssl | as clustered |" in text and "compound=DMSO" in text


def test_without_groups_the_nearest_neighbour_uses_k_fold(rng):
    features, cells = two_plates(rng)
    result = evaluate_embeddings(features, cells, EvaluationSettings(label="compound", seeds=1))
    assert result.knn_scheme == "5-fold" and result.ami_within_mean is None


@pytest.mark.parametrize(
    ("cells_change", "settings", "message"),
    [
        (None, EvaluationSettings(label="moa"), r"label column 'moa' is not in .*columns are: plate, compound"),
        (None, EvaluationSettings(label="compound", within="well"), r"--within column 'well' is not in"),
        ({"compound": "DMSO"}, EvaluationSettings(label="compound"), r"has one value .*DMSO \(480\)"),
        ("one-cell", EvaluationSettings(label="compound"), r"fewer than 2 cells.*: rare \(values: .*rare \(1\)"),
        (None, EvaluationSettings(label="plate", within="plate"), r"No group of 'plate' holds two values"),
    ],
)
def test_bad_labels_get_a_message_naming_the_column_and_its_values(rng, cells_change, settings, message):
    features, cells = two_plates(rng)
    if cells_change == "one-cell":
        cells.loc[0, "compound"] = "rare"
    elif cells_change:
        cells = cells.assign(**cells_change)
    with pytest.raises(InputError, match=message):
        evaluate_embeddings(features, cells, settings)


def test_a_plate_without_controls_is_named(rng):
    features, cells = two_plates(rng)
    cells.loc[(cells["plate"] == "P2") & (cells["compound"] == "DMSO"), "compound"] = "vehicle"
    settings = EvaluationSettings(label="compound", controls="compound=DMSO")
    with pytest.raises(InputError, match=r"control cells in each plate; these have fewer: P2 \(0\)"):
        evaluate_embeddings(features, cells, settings, to_controls=True)


@pytest.mark.parametrize(("text", "expected"), [("auto", None), (None, None), ("3", 3), (4, 4)])
def test_k_is_auto_or_a_number_of_clusters(text, expected):
    assert parse_k(text) == expected


@pytest.mark.parametrize("text", ["1", "-3", "many"])
def test_a_bad_k_is_a_one_line_message(text):
    with pytest.raises(ConfigError, match="--k must be"):
        parse_k(text)
