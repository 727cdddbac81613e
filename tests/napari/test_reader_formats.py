"""File > Open Folder on an OME-Zarr HCS plate: one lazy (dask) layer per channel, named from the plate's
metadata, treatments joined from the CSV beside it, fields cut out one at a time when tiling."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from phenossl.napari.cells import field_inputs
from phenossl.napari.plate import PlateInfo
from phenossl.napari.reader import napari_get_reader


def test_reader_opens_an_ome_zarr_plate_as_lazy_channel_layers(hcs_plate, hcs_synthetic):
    reader = napari_get_reader(str(hcs_plate))
    assert reader is not None
    layers = reader(str(hcs_plate))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["DNA", "tubulin", "actin"]
    data, kwargs, kind = layers[2]
    assert kind == "image" and isinstance(data, da.Array) and data.shape == (4, 96, 96)
    assert np.array_equal(data[3].compute(), hcs_synthetic.images[3][2])
    info = PlateInfo.from_metadata(kwargs["metadata"])
    assert info.keys == ["C02_s1", "C02_s2", "C03_s1", "C03_s2"] and info.wells[2] == "C03" and info.sites[1] == 2
    assert info.metadata_path.endswith("metadata.csv")  # the treatments beside the plate
    assert {"compound", "density_condition"} <= set(info.field_metadata().columns)

    labels = np.zeros((4, 96, 96), np.int32)
    inputs = field_inputs([layer[0] for layer in layers], ["DNA", "tubulin", "actin"], labels, info)
    field = inputs[1].load()  # read when tiling reaches it
    assert field.image.shape == (3, 96, 96) and np.array_equal(field.image, hcs_synthetic.images[1])


@pytest.mark.gui
def test_open_folder_on_a_plate_in_the_viewer(make_napari_viewer, hcs_plate):
    viewer = make_napari_viewer()
    viewer.open(str(hcs_plate), plugin="phenossl")
    assert [layer.name for layer in viewer.layers] == ["DNA", "tubulin", "actin"]
    assert isinstance(viewer.layers["DNA"].data, da.Array)
