"""The Qt-free glue between layers and the core: plate stacks, the reader, labels, per-cell tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenossl.errors import InputError
from phenossl.napari import cells, layer_tables
from phenossl.napari.plate import PlateInfo, as_field_stack, guess_nuclear_index, padding_note, stack_fields
from phenossl.napari.reader import napari_get_reader, sample_plate
from phenossl.render import cluster_colors


def test_sample_plate_is_one_additive_layer_per_stain_with_field_metadata():
    layers = sample_plate()
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == ["DNA", "tubulin", "actin"]
    assert [kwargs["colormap"] for _, kwargs, _ in layers] == ["blue", "green", "red"]
    assert all(kwargs["blending"] == "additive" and kind == "image" for _, kwargs, kind in layers)
    data, kwargs, _ = layers[0]
    assert data.shape == (8, 576, 576)
    info = PlateInfo.from_metadata(kwargs["metadata"])
    assert info.keys[0] == "SYNTH01_B02_s1" and info.wells[:2] == ["B02", "B03"] and info.sites[0] == 1
    assert info.plates[0] == "SYNTH01"  # from the treatment table, not the folder name
    table = info.field_metadata()
    assert {"key", "compound", "density_condition"} <= set(table.columns) and len(table) == 8
    assert info.channel_map == {"w1": "DNA", "w2": "tubulin", "w3": "actin"}


def test_reader_claims_tiff_folders_and_files_only(tmp_path):
    from phenossl.synthetic import sample_data_path

    assert napari_get_reader(str(sample_data_path())) is not None
    assert napari_get_reader(str(tmp_path)) is None  # no TIFF
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None


def test_reader_pads_fields_of_different_sizes_and_keeps_each_size(tmp_path):
    rng = np.random.default_rng(0)
    for well, size in (("A01", (40, 50)), ("A02", (60, 30))):
        for channel in (1, 2):
            tifffile.imwrite(
                tmp_path / f"P1_{well}_s1_w{channel}.tif", rng.integers(0, 4000, size, dtype=np.uint16)
            )
    layers = napari_get_reader(str(tmp_path))(str(tmp_path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["w1", "w2"]
    data, kwargs, _ = layers[0]
    assert data.shape == (2, 60, 50)
    info = PlateInfo.from_metadata(kwargs["metadata"])
    assert info.shapes == [(40, 50), (60, 30)] and info.padded
    assert "padded" in padding_note(info.shapes)


def test_stack_fields_pads_bottom_right():
    stack, shapes = stack_fields([np.ones((2, 3)), np.full((3, 1), 2.0)])
    assert stack.shape == (2, 3, 3) and shapes == [(2, 3), (3, 1)]
    assert stack[0, 2].sum() == 0 and stack[1, :, 0].tolist() == [2, 2, 2] and stack[1, :, 1:].sum() == 0


def test_plain_arrays_are_one_field_or_a_stack_and_rgb_is_refused():
    assert PlateInfo.for_array((30, 40), "dapi").keys == ["dapi"]
    assert PlateInfo.for_array((3, 30, 40), "dapi").keys == ["dapi_f1", "dapi_f2", "dapi_f3"]
    assert as_field_stack(np.zeros((30, 40))).shape == (1, 30, 40)
    with pytest.raises(InputError, match="one layer per channel"):
        PlateInfo.for_array((2, 3, 30, 40))


def test_nuclear_stain_is_guessed_by_name():
    assert guess_nuclear_index(["tubulin", "DAPI", "actin"]) == 1
    assert guess_nuclear_index(["a", "b"]) == 0


def _two_fields() -> tuple[np.ndarray, PlateInfo]:
    stack = np.zeros((2, 20, 20), dtype=np.int32)
    stack[0, 2:6, 2:6] = 1
    stack[0, 10:14, 10:14] = 2
    stack[1, 3:8, 3:8] = 1  # the same id as in field 0: not plate-unique yet
    info = PlateInfo(keys=["f0", "f1"], shapes=[(20, 20), (20, 20)], wells=["A01", "A02"])
    return stack, info


def test_labels_become_plate_unique_and_the_table_names_every_nucleus():
    stack, info = _two_fields()
    assert not cells.is_plate_unique(stack)
    unique = cells.make_plate_unique(stack)
    assert cells.is_plate_unique(unique) and sorted(np.unique(unique).tolist()) == [0, 1, 2, 3]
    table = cells.nuclei_table(unique, info)
    assert table["label"].tolist() == [1, 2, 3]
    assert table["field"].tolist() == ["f0", "f0", "f1"] and table["well"].tolist() == ["A01", "A01", "A02"]
    assert "cell_id" not in table  # a store row only once tiles are made (layer_tables)
    coords = cells.point_coordinates(table, ndim=3)
    assert coords[2].tolist() == [1.0, 5.0, 5.0]


def test_clusters_become_a_categorical_column_and_label_colours():
    stack, info = _two_fields()
    table = cells.nuclei_table(cells.make_plate_unique(stack), info)
    store_cells = pd.DataFrame({"label": [3, 1]})  # nucleus 2 was not tiled (border)
    colors = cluster_colors(2)
    clustering = SimpleNamespace(k=2, labels=np.array([0, 1]), distance=np.zeros(2), nearest_rank=np.ones(2, int))
    clustered = layer_tables.cell_table(table, store_cells, clustering=clustering, colors=colors)
    assert clustered["cell_id"].tolist() == [1, None, 0]
    assert isinstance(clustered["cluster"].dtype, pd.CategoricalDtype)
    assert list(clustered["cluster"].cat.categories) == [0, 1]
    assert clustered["cluster"].iloc[0] == 1 and pd.isna(clustered["cluster"].iloc[1])
    assert "cluster" not in table  # a new table, the nuclei table is never mutated in place
    color_dict = cells.label_color_dict(clustered, colors)
    assert color_dict[1] == tuple(colors[1]) and color_dict[3] == tuple(colors[0])
    assert color_dict[2] == cells.UNTILED_COLOR and color_dict[None] == cells.TRANSPARENT
    assert np.allclose(cells.point_colors(clustered, colors)[0], colors[1])


def test_label_colours_of_a_large_plate_match_the_cell_by_cell_rule():
    """The vectorised colour table gives every nucleus exactly what the per-cell rule gives."""
    rng = np.random.default_rng(0)
    n, k = 5000, 7
    codes = rng.integers(0, k, n).astype(float)
    codes[rng.choice(n, 300, replace=False)] = np.nan  # untiled nuclei
    table = pd.DataFrame({"label": rng.permutation(np.arange(1, n + 1))})
    clustered = table.assign(cluster=pd.Categorical(codes, categories=list(range(k))))
    colors = cluster_colors(k)
    color_dict = cells.label_color_dict(clustered, colors)
    assert len(color_dict) == n + 2 and color_dict[0] == color_dict[None] == cells.TRANSPARENT
    for label, cluster in zip(clustered["label"], clustered["cluster"], strict=True):
        expected = cells.UNTILED_COLOR if pd.isna(cluster) else tuple(colors[int(cluster)])
        assert color_dict[int(label)] == expected
    per_label = [color_dict[int(label)] for label in clustered["label"]]
    assert np.allclose(cells.point_colors(clustered, colors), per_label)
    plain = clustered.assign(cluster=codes)  # a plain column: same colours
    assert cells.label_color_dict(plain, colors) == color_dict
    stale = cells.label_color_dict(clustered, colors[:2])  # clusters without a colour are grey, not an error
    assert set(stale.values()) <= {tuple(colors[0]), tuple(colors[1]), cells.UNTILED_COLOR, cells.TRANSPARENT}
    assert (cells.point_colors(clustered, np.zeros((0, 4))) == np.float32(cells.UNTILED_COLOR)).all()


def test_field_inputs_cut_each_field_to_its_own_size():
    images = [np.arange(2 * 6 * 6).reshape(2, 6, 6), np.ones((2, 6, 6))]
    labels = np.zeros((2, 6, 6), dtype=np.int32)
    labels[1, 1:3, 1:3] = 4
    info = PlateInfo(keys=["a", "b"], shapes=[(6, 6), (4, 5)])
    inputs = cells.field_inputs(images, ["DNA", "actin"], labels, info)
    second = inputs[1].load()
    assert second.image.shape == (2, 4, 5) and second.channel_names == ["DNA", "actin"]
    assert inputs[1].labels.shape == (4, 5) and inputs[1].labels.max() == 4


def test_cell_counts_read_as_words():
    from phenossl.napari.cells import cell_count

    assert cell_count(1, "selected") == "1 cell selected"
    assert cell_count(27, "selected") == "27 cells selected"
    assert cell_count(0) == "0 cells"
