"""benchmarks/dose_response_bbbc021.py: the held-out-plate dose-response, end to end on the smoke subset, and
its data checks and fit-plate-only standardisation on small tables."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dose_response_bbbc021 as study  # noqa: E402


@pytest.mark.shared_data
def test_dose_response_study_scores_held_out_plates_for_every_representation(run_benchmark, shared_data):
    record = run_benchmark("dose_response_bbbc021.py", "--data", shared_data)
    representations = record["results"]["representations"]
    assert {"CellProfiler (cp_measure)", "untrained encoder (random-init)", "phenossl default"} <= set(representations)
    assert representations["phenossl default"]["view"] == "auto view"
    assert representations["CellProfiler (cp_measure)"]["view"] == "nucleus mask"
    doses = record["settings"]["doses_per_plate"]
    assert doses == {"Week4_27801": [0, 5, 15, 50], "Week4_27821": [0, 15, 50]}
    for item in representations.values():
        assert item["status"] == "ok"
        assert len(item["curves"]) == 2  # each mixed plate scored by the axis fitted on the other
        for curve in item["curves"].values():
            assert curve["fit_plate"] != curve["scored_plate"]
            assert curve["doses"] == doses[curve["scored_plate"]]
            assert len(curve["mean"]) == len(curve["doses"]) == len(curve["sem"]) == len(curve["n_cells"])
            assert curve["monotone"] == all(b > a for a, b in zip(curve["mean"], curve["mean"][1:]))
            assert 0 <= curve["separated_steps"] <= curve["steps"] == len(curve["doses"]) - 1
            assert -1 <= curve["spearman_rho"] <= 1


def cells_table(plates_doses):
    rows = [{"plate": plate, "compound": "DMSO" if dose == 0 else "cyclohexamide", "concentration_uM": float(dose)}
            for plate, doses in plates_doses.items() for dose in doses]
    return pd.DataFrame(rows)


def test_a_plate_without_reference_cells_is_named_in_the_error():
    cells = cells_table({"Week4_27801": [0, 0, 5, 15, 50], "Week4_27821": [0, 0, 15, 15]})
    with pytest.raises(SystemExit, match=r"plate Week4_27821 has no 50 uM \(reference\) cell"):
        study.check_groups(cells)
    study.check_groups(cells_table({"Week4_27801": [0, 50], "Week4_27821": [0, 15, 50]}))


def test_standardisation_is_fitted_on_the_fit_plate_only():
    rng = np.random.default_rng(0)
    fit = rng.normal(2.0, 3.0, size=(50, 4))
    other = rng.normal(100.0, 1.0, size=(30, 4))  # far away: would move a mean fitted on all rows
    embeddings = np.concatenate([fit, other]).astype(np.float32)
    embeddings[:50, 3] = 7.0  # constant on the fit plate
    rows = np.r_[np.ones(50, bool), np.zeros(30, bool)]
    features = study.standardise_on(embeddings, rows)
    np.testing.assert_allclose(features[:50, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(features[:50, :3].std(axis=0), 1, atol=1e-4)
    assert (features[50:, :3] > 10).all()  # the other plate keeps its offset: nothing was fitted on it
    assert (features[:, 3] == 0).all()


def test_monotone_means_strict_increase_and_separated_steps_count_non_overlapping_bars():
    assert study.monotone([0.0, 0.4, 0.9]) and not study.monotone([0.0, 0.4, 0.4])
    assert study.separated_steps([0.0, 0.4, 0.5], [0.1, 0.1, 0.1]) == 1
    assert study.separated_steps([0.0, 1.0], [float("nan"), 0.1]) == 0  # one cell: no error bar, no claim


def test_a_training_that_collapses_is_recorded_and_the_study_goes_on(monkeypatch, tmp_path):
    import phenossl.train
    from phenossl.errors import CollapseError
    from phenossl.tiles import TileStoreWriter

    def collapse(*args, **kwargs):
        raise CollapseError("The representation collapsed at epoch 1: all cells get nearly the same embedding. More")

    monkeypatch.setattr(phenossl.train, "train", collapse)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 64
    writer = TileStoreWriter(tmp_path / "store", 8, ["a", "b", "c"], 40)
    writer.append(rng.random((8, 3, 40, 40), dtype=np.float32) * 0.5 + disc * 0.4, np.repeat(disc[None], 8, 0))
    store = writer.finish(pd.DataFrame({"label": range(8)}), {})
    base = study.default_run(smoke=True)
    found = dict(study.representations(store, base, study.resolve_device("cpu"), tmp_path / "runs", 1, smoke=False))
    trained = [spec.name for spec in (*study.TRAINED, study.GAN)]
    assert list(found) == ["CellProfiler (cp_measure)", "untrained encoder (random-init)", *trained]
    for name in trained:
        assert found[name]["status"] == "CollapseError" and "embeddings" not in found[name]
        assert found[name]["error"] == "The representation collapsed at epoch 1: all cells get nearly the same embedding"
    assert found["untrained encoder (random-init)"]["embeddings"].shape[0] == 8
    assert found["CellProfiler (cp_measure)"]["embeddings"].shape[0] == 8
