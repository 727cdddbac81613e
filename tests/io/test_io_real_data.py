"""The Read stage on real BBBC021 data (skipped where ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from phenossl.io import discover_fields, field_table, join_metadata, load_metadata, read_crops, read_field

pytestmark = pytest.mark.shared_data


def test_real_bbbc021_field_is_read_and_joined_to_its_treatment(shared_data):
    sources = discover_fields(shared_data / "bbbc021-fullfield-dapi", channel_names={"w1": "DNA"})
    assert [(s.key, s.well, s.site, s.channel_names) for s in sources] == [
        ("Week1_150607_C02_s3", "C02", 3, ("DNA",))
    ]
    field = read_field(sources[0])
    assert field.image.shape == (1, 1024, 1280) and field.image.dtype == np.uint16
    assert field.channel_names == ["DNA"]
    assert 150 < field.image.min() < field.image.max() < 10000  # real intensities, not a blank read

    metadata = load_metadata(shared_data / "bbbc021-metadata" / "BBBC021_v1_image.csv")
    assert len(metadata) == 13200
    joined = join_metadata(field_table(sources), metadata)
    row = joined.iloc[0]
    assert (row["compound"], row["plate"], row["well"], row["site"]) == ("DMSO", "Week1_22123", "C02", 3)
    assert joined.attrs["metadata_join"]["unmatched"] == 0


@pytest.fixture(scope="module")
def real_crops(shared_data):
    """Read once: decompressing the 100 MB archive takes a couple of seconds."""
    folder = shared_data / "bbbc021-crops"
    return read_crops(folder / "crops.npz", folder / "cells.csv", channel_names=["DNA", "actin", "tubulin"])


def test_real_bbbc021_crops_with_their_cells(real_crops):
    crops = real_crops
    assert crops.images.shape == (5873, 3, 68, 68) and crops.images.dtype == np.uint16
    assert crops.cells["compound"].value_counts().to_dict() == {"DMSO": 4239, "cyclohexamide": 1634}
    dna = crops.images[:, crops.channel_names.index("DNA")].astype(np.float64)
    centre, border = dna[:, 24:44, 24:44].mean(axis=(1, 2)), dna[:, :6, :].mean(axis=(1, 2))
    assert (centre > border).mean() > 0.9  # channel 0 really is the nuclear stain of a centred cell


def test_real_crops_join_the_bbbc021_metadata_on_plate_well_site(shared_data, real_crops):
    crops = real_crops
    cells = crops.cells.drop(columns=["compound", "concentration_uM", "moa"])
    joined = join_metadata(cells, load_metadata(shared_data / "bbbc021-metadata" / "BBBC021_v1_image.csv"))
    assert joined.attrs["metadata_join"] == {"on": "plate+well+site", "matched": 5873, "unmatched": 0}
    np.testing.assert_array_equal(joined["compound"].to_numpy(), crops.cells["compound"].to_numpy())
