"""Building a store from fields: the border policy is counted, the normalisation is stored with it."""

import numpy as np
import pandas as pd
import pytest

from phenossl.config import InputConfig, SegmentConfig, TileConfig
from phenossl.tiles.build import FieldInput, build_store_from_fields


def _field_with_nuclei_at(centres, shape=(120, 120)):
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for label, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = label
    dna = np.where(labels > 0, 1000.0, 100.0).astype(np.float32)
    actin = np.linspace(0, 500, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    return np.stack([dna, actin]), labels


@pytest.mark.parametrize("border, kept, skipped, padded", [("skip", 2, 2, 0), ("pad", 4, 0, 2)])
def test_border_cells_are_skipped_or_padded_and_counted(tmp_path, border, kept, skipped, padded):
    image, labels = _field_with_nuclei_at([(60, 60), (60, 30), (8, 60), (60, 115)])  # the last two at a border
    fields = [FieldInput.from_array("f1", image, ["DNA", "actin"], labels=labels, plate="P", well="B02", site=1)]
    store = build_store_from_fields(fields, tmp_path / "store", input_config=InputConfig(nuclear_channel="DNA"),
                                    segmentation=SegmentConfig(), tiles=TileConfig(size=48, border=border))
    report = store.info["report"]
    assert (report["cells_kept"], report["skipped_border"], report["padded"]) == (kept, skipped, padded)
    assert store.n_cells == kept and int(store.cells["padded"].sum()) == padded
    lo_hi = store.intensity_percentiles
    assert lo_hi.shape == (2, 2) and np.all(lo_hi[:, 0] < lo_hi[:, 1])
    assert lo_hi[0, 1] == pytest.approx(1000.0)  # DNA: 99.5th percentile of the bright nuclei
    np.testing.assert_array_equal(store.labels("f1"), labels)


def test_a_per_field_table_must_name_its_fields(tmp_path):
    from phenossl.errors import InputError

    image, labels = _field_with_nuclei_at([(60, 60)])
    fields = [FieldInput.from_array("f1", image, ["DNA", "actin"], labels=labels)]
    with pytest.raises(InputError, match="needs a 'key' column"):
        build_store_from_fields(fields, tmp_path / "store", input_config=InputConfig(), segmentation=SegmentConfig(),
                                tiles=TileConfig(size=48), metadata=pd.DataFrame({"compound": ["DMSO"]}))
    assert not (tmp_path / "store").exists()


def test_each_tile_keeps_the_mask_of_its_own_nucleus_not_its_neighbours(tmp_path):
    from phenossl.measure import nucleus_masks
    from phenossl.tiles.store import MASKS_FILE, TileStore

    image, labels = _field_with_nuclei_at([(60, 60), (60, 75), (8, 60)])  # close neighbours; one at the border
    fields = [FieldInput.from_array("f1", image, ["DNA", "actin"], labels=labels, plate="P", well="B02", site=1)]
    store = build_store_from_fields(fields, tmp_path / "store", input_config=InputConfig(nuclear_channel="DNA"),
                                    segmentation=SegmentConfig(), tiles=TileConfig(size=48, border="pad"))
    masks = store.masks
    assert masks.shape == (3, 48, 48) and masks.dtype == np.uint8
    for row, label in enumerate(store.cells["label"]):
        assert masks[row, 24, 24] == 1 and masks[row].sum() == (labels == label).sum()  # whole, even padded
    assert masks[0, 24, 24 + 15] == 0  # the neighbour 15 px to the right is in the tile but not the mask
    # a store made before masks were kept: the same masks are derived from its labels
    (store.path / MASKS_FILE).unlink()
    np.testing.assert_array_equal(nucleus_masks(TileStore(store.path)), masks.astype(bool))


def test_pre_cropped_cells_get_their_central_nucleus_segmented(tmp_path):
    from phenossl.tiles.build import build_store_from_crops

    rng = np.random.default_rng(0)
    crops = rng.normal(100, 5, size=(6, 2, 40, 40)).astype(np.float32)
    yy, xx = np.mgrid[:40, :40]
    for i in range(6):
        crops[i, 0][(yy - 20) ** 2 + (xx - 20) ** 2 <= (6 + i) ** 2] = 2000  # the centred nucleus grows
        crops[i, 0][(yy - 4) ** 2 + (xx - 4) ** 2 <= 9] = 2000  # a piece of a neighbour in the corner
    np.save(tmp_path / "crops.npy", crops)
    store = build_store_from_crops(InputConfig(kind="crops", paths=[tmp_path / "crops.npy"]), tmp_path / "store",
                                   tiles=TileConfig())
    areas = store.masks.reshape(6, -1).sum(axis=1)
    expected = [((yy - 20) ** 2 + (xx - 20) ** 2 <= (6 + i) ** 2).sum() for i in range(6)]
    np.testing.assert_allclose(areas, expected, rtol=0.25)
    assert np.all(np.diff(areas) > 0) and not store.masks[:, 4, 4].any()
