"""CellProfiler measurements through the real cp_measure (no mocks): on drawn cells whose answer is known,
and end to end as a run's representation on fields of the bundled sample plate."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from phenossl.measure import feature_matrix, feature_names, measure_tiles

SAMPLE_PLATE = Path(__file__).resolve().parents[1] / "src" / "phenossl" / "sample_data" / "plate"


def disc_tiles(values, size=32, radius=8):
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2
    tiles = np.zeros((len(values), 2, size, size), dtype=np.float32)
    for i, value in enumerate(values):
        tiles[i, 0][disc] = value
        tiles[i, 1] = 0.1
    return tiles, np.repeat(disc[None], len(values), axis=0)


def test_measurements_of_drawn_nuclei_give_their_area_and_intensity():
    tiles, masks = disc_tiles([0.3, 0.6])
    masks[1, :, 16:] = False  # the second nucleus is half a disc
    names = feature_names(["DNA", "actin"])
    values = measure_tiles(tiles, masks, ["DNA", "actin"], names)
    column = {name: i for i, name in enumerate(names)}
    assert values[0, column["Area"]] == masks[0].sum() and values[1, column["Area"]] == masks[1].sum()
    np.testing.assert_allclose(values[:, column["Intensity_MeanIntensity__DNA"]], [0.3, 0.6], rtol=1e-6)
    np.testing.assert_allclose(values[:, column["Intensity_MeanIntensity__actin"]], [0.1, 0.1], rtol=1e-6)


def test_a_tile_without_a_nucleus_measures_as_missing_and_bright_pixels_saturate():
    tiles, masks = disc_tiles([5.0, 0.5])  # normalised tiles run above 1; CellProfiler's images do not
    masks[1] = False
    names = feature_names(["DNA", "actin"])
    values = measure_tiles(tiles, masks, ["DNA", "actin"], names)
    assert np.isnan(values[1]).all()
    assert values[0, names.index("Intensity_MeanIntensity__DNA")] == pytest.approx(1.0)


def test_the_feature_matrix_drops_position_missing_and_constant_features_and_z_scores():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 5))
    values[:, 2] = 7.0  # constant
    values[:10, 3] = np.nan  # missing for 20 % of the cells
    values[0, 4] = np.nan  # missing once: imputed
    names = ["Area", "Center_X", "Constant", "Mostly_missing", "Intensity"]
    features, kept, report = feature_matrix(values, names)
    assert kept == ["Area", "Intensity"]
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(features.std(axis=0), 1, atol=1e-5)
    assert report == {"measured": 5, "kept": 2, "dropped_position": 1, "dropped_missing": 1, "dropped_constant": 1,
                      "imputed_values": 1}


def sample_plate_subset(folder: Path, wells=("B02", "C03")) -> Path:
    """Two wells of the bundled synthetic plate (DMSO and a treatment), with its metadata."""
    folder.mkdir(parents=True)
    for path in SAMPLE_PLATE.glob("*.tif"):
        if any(f"_{well}_" in path.name for well in wells):
            shutil.copy(path, folder / path.name)
    shutil.copy(SAMPLE_PLATE / "metadata.csv", folder / "metadata.csv")
    return folder


def sample_config(tmp_path, representation, name):
    from phenossl.config import config_from_dict

    plate = tmp_path / "plate"
    if not plate.exists():
        sample_plate_subset(plate)
    return config_from_dict({
        "name": name, "representation": representation,
        "input": {"paths": [str(plate)], "channel_names": {"w1": "DNA", "w2": "tubulin", "w3": "actin"},
                  "nuclear_channel": "DNA", "metadata": str(plate / "metadata.csv")},
        "tiles": {"size": 64, "border": "pad"},
        "train": {"epochs": 1, "batch_size": 16, "resolution": 32, "device": "cpu"},
        "measure": {"workers": 1},
        "cluster": {"k": 2, "n_nearest": 2, "controls": "compound=DMSO"},
        "output": {"dir": str(tmp_path / name)},
    })


@pytest.mark.slow
def test_measured_and_untrained_runs_work_end_to_end_and_evaluate_side_by_side(tmp_path, capsys):
    from phenossl.cli import main
    from phenossl.pipeline import run_pipeline
    from phenossl.tiles.store import TileStore

    measured = run_pipeline(sample_config(tmp_path, "cellprofiler", "measured"))
    untrained = run_pipeline(sample_config(tmp_path, "random-init", "untrained"))
    store = TileStore(measured.paths.store)
    masks = store.masks
    assert masks.shape == (store.n_cells, 64, 64) and masks[:, 32, 32].all()  # each tile's own nucleus
    embeddings = np.load(measured.paths.embeddings)
    description = json.loads(measured.paths.feature_names.read_text())
    assert embeddings.shape == (store.n_cells, len(description["features"])) and embeddings.shape[1] > 300
    assert "Intensity_MeanIntensity__tubulin" in description["features"] and not any(
        f.startswith("Location_") for f in description["features"])
    assert measured.paths.clusters.exists() and not measured.paths.checkpoint.exists()
    assert untrained.paths.checkpoint.exists() and np.load(untrained.paths.embeddings).shape[1] == 512

    assert main(["train", str(measured.paths.config)]) == 2
    assert "there is no encoder to train" in capsys.readouterr().err
    assert main(["evaluate", str(measured.paths.root), str(untrained.paths.root), "--label", "compound",
                 "--controls", "compound=DMSO", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "| measured | CellProfiler features (cp_measure) | as clustered |" in out
    assert "| untrained | untrained resnet18 | to controls |" in out
    assert (tmp_path / "evaluation-compound.csv").exists() and (tmp_path / "evaluation-compound.md").exists()
    assert main(["evaluate", str(measured.paths.root), "--label", "compound"]) == 2  # never overwritten silently
    assert "already exists" in capsys.readouterr().err
    assert main(["evaluate", str(measured.paths.root), "--label", "density", "--out", str(tmp_path / "x")]) == 2
    assert "label column 'density' is not in run measured" in capsys.readouterr().err
