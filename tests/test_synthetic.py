"""The synthetic plate: deterministic, crossed design, ground truth consistent with its masks, density and
phenotype both present but independent, and the bundled sample data equal to a fresh regeneration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage import feature, measure

from phenossl.errors import ConfigError, OutputExistsError
from phenossl.synthetic import (
    CELLS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    TILE_SIZE,
    load_plate,
    main,
    make_synthetic_plate,
    phenotype_strength,
    plate_layout,
    sample_data_path,
    write_plate,
)

SMALL = {"field_size": 160, "field_keys": ["SYNTH01_B02_s1", "SYNTH01_E03_s1"]}  # one sparse, one dense: fast


@pytest.fixture(scope="module")
def bundled():
    return load_plate(sample_data_path())


@pytest.fixture(scope="module")
def nucleus_features(bundled) -> pd.DataFrame:
    """regionprops on the ground-truth masks of the bundled plate, joined to the cell table."""
    tables = []
    for index, key in enumerate(bundled.field_keys):
        props = measure.regionprops_table(
            bundled.nuclei[index],
            bundled.images[index, 0],
            properties=("label", "eccentricity", "area", "intensity_mean"),
        )
        tables.append(pd.DataFrame(props).assign(field=key))
    features = pd.concat(tables).merge(bundled.cells, on=["field", "label"], validate="one_to_one")
    return features[~features["touches_border"]]


def roc_auc(positives: pd.Series, negatives: pd.Series) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    p, n = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def of(features: pd.DataFrame, compound: str, concentration: float | None = None) -> pd.DataFrame:
    rows = features["compound"] == compound
    if concentration is not None:
        rows &= np.isclose(features["concentration"], concentration)
    return features[rows]


# --- determinism --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_plate_and_other_seed_differs():
    first, again, other = (make_synthetic_plate(seed, **SMALL) for seed in (5, 5, 6))
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.nuclei, again.nuclei) and np.array_equal(first.cell_masks, again.cell_masks)
    pd.testing.assert_frame_equal(first.cells, again.cells)
    assert not np.array_equal(first.images, other.images)
    assert not first.cells[["centroid_y", "centroid_x"]].equals(other.cells[["centroid_y", "centroid_x"]])


def test_written_files_are_byte_identical(tmp_path):
    plate = make_synthetic_plate(2, field_size=128, field_keys=["SYNTH01_B03_s1"])
    for name in ("a", "b"):
        write_plate(plate, tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 + 2 + 2  # channels, masks, two CSVs
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative


def test_one_field_alone_equals_that_field_of_the_whole_plate():
    whole = make_synthetic_plate(1, field_size=160)
    part = make_synthetic_plate(1, field_size=160, field_keys=["SYNTH01_D03_s1"])
    assert np.array_equal(part.images[0], whole.field("SYNTH01_D03_s1"))


# --- design -------------------------------------------------------------------------------------------


def test_every_compound_is_imaged_at_every_density(bundled):
    design = pd.crosstab(bundled.metadata["compound"], bundled.metadata["density_condition"])
    assert set(design.columns) == {"sparse", "dense"}
    assert set(design.index) == {"DMSO", "compound_A", "compound_B"}
    assert (design > 0).all().all() and design.nunique(axis=1).eq(1).all()  # balanced
    doses = bundled.metadata.loc[bundled.metadata["compound"] == "compound_A", "concentration"].unique()
    assert len(doses[doses > 0]) >= 2  # a dose-response axis


def test_dose_strength_follows_a_hill_curve():
    assert phenotype_strength("DMSO", 0.0) == 0.0
    low, high = phenotype_strength("compound_A", 0.3), phenotype_strength("compound_A", 3.0)
    assert 0.0 < low < high < 1.0
    with pytest.raises(ConfigError, match="compound_Z"):
        phenotype_strength("compound_Z", 1.0)


def test_images_look_like_bbbc021(bundled):
    images = bundled.images
    assert images.dtype == np.uint16 and images.shape[1] == 3
    assert not np.any(images % 16)  # 12-bit camera values scaled to 16 bits
    background = np.median(images[:, 0][bundled.cell_masks == 0])
    nuclei = images[:, 0][bundled.nuclei > 0].mean()
    assert 400 < background < 650 and 1500 < nuclei < 2600  # the real BBBC021 field: ~550 and ~2000


def test_bundled_data_is_small_and_holds_enough_cells():
    folder = sample_data_path()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= 6 * 1024**2
    cells = pd.read_csv(folder / CELLS_FILE)
    assert 500 <= len(cells) <= 1000


# --- ground truth ---------------------------------------------------------------------------------------


def test_masks_agree_with_the_cell_table(bundled):
    for index, key in enumerate(bundled.field_keys):
        nuclei, cells = bundled.nuclei[index], bundled.cell_masks[index]
        table = bundled.cells[bundled.cells["field"] == key].sort_values("label")
        props = measure.regionprops_table(nuclei, properties=("label", "centroid", "area"))
        assert np.array_equal(props["label"], np.arange(1, len(table) + 1))
        assert np.array_equal(table["label"], props["label"])
        np.testing.assert_allclose(table["centroid_y"], props["centroid-0"], atol=1e-3)
        np.testing.assert_allclose(table["centroid_x"], props["centroid-1"], atol=1e-3)
        assert np.array_equal(table["nucleus_area"], props["area"])
        assert np.array_equal(cells[nuclei > 0], nuclei[nuclei > 0])  # each nucleus lies in its own cell
        assert set(np.unique(cells)) <= set(np.unique(nuclei))


def test_some_nuclei_touch_but_none_overlap_heavily(bundled):
    touching = 0
    for nuclei in bundled.nuclei:
        right = (nuclei[:, 1:] != nuclei[:, :-1]) & (nuclei[:, 1:] > 0) & (nuclei[:, :-1] > 0)
        down = (nuclei[1:] != nuclei[:-1]) & (nuclei[1:] > 0) & (nuclei[:-1] > 0)
        touching += int(right.sum() + down.sum())
        assert measure.regionprops_table(nuclei, properties=("solidity",))["solidity"].min() > 0.8
    assert touching > 0  # something for segmentation to split


def test_local_density_columns_match_the_centroids(bundled):
    for key, table in bundled.cells.groupby("field"):
        yx = table[["centroid_y", "centroid_x"]].to_numpy()
        distances = np.hypot(*(yx[:, None, :] - yx[None, :, :]).transpose(2, 0, 1))
        assert np.array_equal(table["neighbours_100px"], (distances <= 100).sum(axis=1) - 1), key
        in_tile = (np.abs(yx[:, None, :] - yx[None, :, :]) <= TILE_SIZE / 2).all(axis=-1).sum(axis=1)
        assert np.array_equal(table["cells_in_196px_tile"], in_tile), key


def test_dense_wells_are_denser_and_density_is_not_the_phenotype(bundled):
    cells = bundled.cells
    per_density = cells.groupby("density_condition")["cells_in_196px_tile"]
    assert 1 <= per_density.median()["sparse"] <= 3.5
    assert 8 <= per_density.median()["dense"] <= 15
    neighbours = cells.groupby("density_condition")["neighbours_100px"].mean()
    assert neighbours["dense"] > 3 * neighbours["sparse"]
    # within a density condition, every compound sees about the same crowding
    crowding = cells.groupby(["density_condition", "compound"])["cells_in_196px_tile"].mean().unstack()
    assert (crowding.max(axis=1) / crowding.min(axis=1)).max() < 1.6
    # and every phenotype is present at both densities in similar proportions
    shares = pd.crosstab(cells["density_condition"], cells["phenotype"], normalize="index")
    assert (shares.max() - shares.min()).max() < 0.15


def test_nucleus_shape_differs_between_phenotypes_but_overlaps(nucleus_features):
    control = of(nucleus_features, "DMSO")
    strong_a, weak_a = of(nucleus_features, "compound_A", 3.0), of(nucleus_features, "compound_A", 0.6)
    compound_b = of(nucleus_features, "compound_B")
    # compound_A elongates nuclei, more at the higher dose ...
    assert control["eccentricity"].mean() < weak_a["eccentricity"].mean() < strong_a["eccentricity"].mean()
    assert strong_a["eccentricity"].mean() - control["eccentricity"].mean() > 0.05
    # ... and condenses chromatin (same DNA in a smaller nucleus: brighter); compound_B enlarges nuclei
    assert strong_a["intensity_mean"].mean() > control["intensity_mean"].mean()
    assert compound_b["area"].mean() > 1.1 * control["area"].mean()
    # subtle: one feature alone separates them well above chance but far from perfectly
    assert 0.7 < roc_auc(strong_a["eccentricity"], control["eccentricity"]) < 0.97
    assert 0.6 < roc_auc(compound_b["area"], control["area"]) < 0.95


def test_orientation_carries_no_information(bundled):
    angles = np.radians(bundled.cells["orientation_deg"])
    assert abs(np.mean(np.exp(2j * angles))) < 0.15  # axial data: uniform -> resultant length ~ 0
    for _, group in bundled.cells.groupby("phenotype"):
        assert abs(np.mean(np.exp(2j * np.radians(group["orientation_deg"])))) < 0.25


def actin_fibre_coherence(plate, row: int) -> float:
    """Mean structure-tensor coherence of actin in cell interiors: parallel stress fibres score high."""
    cells = plate.cell_masks[row]
    depth = ndi.distance_transform_edt((ndi.morphological_gradient(cells, size=3) == 0) & (cells > 0))
    interior = (depth > 5) & (plate.nuclei[row] == 0)
    tensor = feature.structure_tensor(plate.images[row, 2].astype(float), sigma=2.0, order="rc")
    largest, smallest = feature.structure_tensor_eigenvalues(tensor)
    return float(((largest - smallest) / (largest + smallest + 1e-9))[interior].mean())


def tubulin_spottiness(plate, row: int) -> float:
    """Strongest blob responses (LoG, 99.5th percentile) inside cells, relative to their mean tubulin."""
    tubulin, inside = plate.images[row, 1].astype(float), plate.cell_masks[row] > 0
    blobs = -ndi.gaussian_laplace(tubulin, 1.5)
    return float(np.percentile(blobs[inside], 99.5) / tubulin[inside].mean())


@pytest.mark.parametrize("density", ["sparse", "dense"])
def test_cytoskeleton_marks_the_phenotypes_at_every_density(bundled, density):
    def row(compound: str, concentration: float) -> int:
        md = bundled.metadata
        match = (md["compound"] == compound) & np.isclose(md["concentration"], concentration)
        return int(md.index[match & (md["density_condition"] == density)][0])

    dmso, weak_a, strong_a, b = (
        row("DMSO", 0),
        row("compound_A", 0.6),
        row("compound_A", 3.0),
        row("compound_B", 1),
    )
    coherence = [actin_fibre_coherence(bundled, r) for r in (dmso, weak_a, strong_a)]
    assert coherence[0] < coherence[1] < coherence[2]  # stress fibres grow with the dose
    assert actin_fibre_coherence(bundled, b) < coherence[2]
    assert tubulin_spottiness(bundled, b) > 1.2 * max(
        tubulin_spottiness(bundled, r) for r in (dmso, strong_a)
    )


# --- files ------------------------------------------------------------------------------------------


def test_bundled_files_equal_a_fresh_regeneration(bundled):
    keys = ["SYNTH01_B02_s1", "SYNTH01_E03_s1"]  # one sparse, one dense: fast
    fresh = make_synthetic_plate(0, field_keys=keys)
    for index, key in enumerate(keys):
        on_disk = bundled.field_keys.index(key)
        assert np.array_equal(fresh.images[index], bundled.images[on_disk]), key
        assert np.array_equal(fresh.nuclei[index], bundled.nuclei[on_disk]), key
        assert np.array_equal(fresh.cell_masks[index], bundled.cell_masks[on_disk]), key
    expected_cells = bundled.cells[bundled.cells["field"].isin(keys)].reset_index(drop=True)
    pd.testing.assert_frame_equal(fresh.cells, expected_cells)
    pd.testing.assert_frame_equal(
        pd.read_csv(sample_data_path() / METADATA_FILE), plate_layout()[METADATA_COLUMNS]
    )


def test_write_refuses_to_overwrite_and_round_trips(tmp_path):
    plate = make_synthetic_plate(3, field_size=128, field_keys=["SYNTH01_C02_s1", "SYNTH01_C03_s1"])
    write_plate(plate, tmp_path)
    with pytest.raises(OutputExistsError):
        write_plate(plate, tmp_path)
    write_plate(plate, tmp_path, overwrite=True)
    again = load_plate(tmp_path)
    assert np.array_equal(again.images, plate.images) and np.array_equal(again.nuclei, plate.nuclei)
    pd.testing.assert_frame_equal(again.cells, plate.cells)
    pd.testing.assert_frame_equal(again.metadata, plate.metadata)


def test_command_line_writes_a_plate(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "p"), "--seed", "4", "--field-size", "128"]) == 0
    assert (tmp_path / "p" / METADATA_FILE).is_file() and (tmp_path / "p" / "SYNTH01_E03_s1_w3.tif").is_file()
    assert main(["--out", str(tmp_path / "p"), "--seed", "4", "--field-size", "128"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        make_synthetic_plate(-1)
    with pytest.raises(ConfigError):
        make_synthetic_plate(0, field_keys=["NOPE_A01_s1"])
    with pytest.raises(ConfigError):
        make_synthetic_plate(0, plate="my_plate")
    with pytest.raises(ConfigError, match="lower the density"):
        make_synthetic_plate(0, field_size=128, densities={"sparse": 2.0, "dense": 60.0})
