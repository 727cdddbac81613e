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
