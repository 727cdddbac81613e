"""Opening a plate with its treatments: whichever metadata CSV describes it, a CSV opened by itself, and
channel layers named after the stains the metadata gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenossl.errors import InputError
from phenossl.napari.plate import PlateInfo
from phenossl.napari.reader import napari_get_reader, read_plate

WELLS = ("A01", "A02", "B01")


def _plate(folder, wells=WELLS, channels=(1, 2)):
    """Per-channel ImageXpress files, one field per well; returns the file names by (well, channel)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = {}
    for well in wells:
        for channel in channels:
            name = f"P1_{well}_s1_w{channel}.tif"
            tifffile.imwrite(folder / name, rng.integers(0, 4000, (32, 40), dtype=np.uint16))
            names[well, channel] = name
    return names


def _cellprofiler_table(names, wells=WELLS, path_name=None):
    """A CellProfiler-style image table: FileName_<stain> columns (w1 = DNA, w2 = Actin), a compound."""
    table = pd.DataFrame(
        {
            "Image_FileName_DNA": [names[w, 1] for w in wells],
            "Image_FileName_Actin": [names[w, 2] for w in wells],
            "Image_Metadata_Compound": [f"drug-{w}" for w in wells],
        }
    )
    if path_name is not None:
        table["Image_PathName_DNA"] = path_name
        table["Image_PathName_Actin"] = path_name
    return table


def _read(path):
    reader = napari_get_reader(str(path) if not isinstance(path, list) else [str(p) for p in path])
    assert reader is not None, f"phenossl did not claim {path}"
    layers = reader(str(path) if not isinstance(path, list) else [str(p) for p in path])
    return layers, PlateInfo.from_metadata(layers[0][1]["metadata"])


def test_the_folders_only_metadata_csv_is_joined_whatever_its_name_and_names_the_channels(tmp_path):
    names = _plate(tmp_path)
    _cellprofiler_table(names).to_csv(tmp_path / "plate_layout.csv", index=False)
    (tmp_path / "notes.csv").write_text("remark,by\nrerun,anna\n")  # loads, but joins nothing: ignored
    layers, info = _read(tmp_path)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["DNA", "Actin"]  # not w1, w2
    assert info.metadata_path == str((tmp_path / "plate_layout.csv").resolve())
    assert info.channel_map == {"w1": "DNA", "w2": "Actin"}
    assert [row["compound"] for row in info.field_table] == ["drug-A01", "drug-A02", "drug-B01"]


def test_several_tables_prefer_metadata_csv(tmp_path, notifications):
    names = _plate(tmp_path)
    _cellprofiler_table(names).to_csv(tmp_path / "metadata.csv", index=False)
    other = _cellprofiler_table(names).assign(Image_Metadata_Compound="other")
    other.to_csv(tmp_path / "another.csv", index=False)
    _, info = _read(tmp_path)
    assert info.metadata_path.endswith("metadata.csv") and info.field_table[0]["compound"] == "drug-A01"
    assert not [n for n in notifications if "several metadata tables" in str(n.message)]


def test_without_metadata_csv_the_best_matching_table_is_used_and_the_user_told(tmp_path, notifications):
    names = _plate(tmp_path)
    _cellprofiler_table(names).to_csv(tmp_path / "b_full.csv", index=False)
    _cellprofiler_table(names, wells=WELLS[:1]).to_csv(tmp_path / "a_partial.csv", index=False)
    _, info = _read(tmp_path)
    assert info.metadata_path.endswith("b_full.csv")
    assert all(row["compound"] for row in info.field_table)
    told = [str(n.message) for n in notifications if "several metadata tables" in str(n.message)]
    assert told and "used b_full.csv" in told[0] and "a_partial.csv" in told[0] and "open that CSV" in told[0]


def test_opening_a_metadata_csv_opens_the_images_it_names(tmp_path, notifications):
    names = _plate(tmp_path / "Week1" / "P1")
    table = _cellprofiler_table(names, path_name="Week1/P1")
    extra = pd.DataFrame(  # a row of a field that was never copied here
        {"Image_FileName_DNA": ["P1_C09_s1_w1.tif"], "Image_FileName_Actin": ["P1_C09_s1_w2.tif"],
         "Image_Metadata_Compound": ["lost"], "Image_PathName_DNA": ["Week1/P1"], "Image_PathName_Actin": ["Week1/P1"]}
    )
    csv = tmp_path / "Image.csv"
    pd.concat([table, extra]).to_csv(csv, index=False)
    layers, info = _read(csv)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["DNA", "Actin"]
    assert info.keys == ["P1_A01_s1", "P1_A02_s1", "P1_B01_s1"] and layers[0][0].shape == (3, 32, 40)
    assert info.metadata_path == str(csv.resolve()) and info.field_table[2]["compound"] == "drug-B01"
    assert any("2 of the 8 image files named in Image.csv were not found" in str(n.message) for n in notifications)


def test_a_csv_without_file_names_opens_the_tiffs_beside_it(tmp_path):
    _plate(tmp_path)
    pd.DataFrame({"plate": "P1", "well": list(WELLS), "dose": [0.1, 1.0, 10.0]}).to_csv(
        tmp_path / "doses.csv", index=False
    )
    layers, info = _read(tmp_path / "doses.csv")
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["w1", "w2"]  # the table names no stains
    assert [row["dose"] for row in info.field_table] == [0.1, 1.0, 10.0]


def test_images_opened_with_a_csv_use_that_csv_and_a_mismatch_is_an_error_naming_it(tmp_path):
    names = _plate(tmp_path / "images")
    _cellprofiler_table(names).to_csv(tmp_path / "images" / "metadata.csv", index=False)
    chosen = _cellprofiler_table(names).assign(Image_Metadata_Compound="chosen")
    chosen.to_csv(tmp_path / "mine.csv", index=False)
    _, info = _read([tmp_path / "images", tmp_path / "mine.csv"])
    assert info.metadata_path.endswith("mine.csv") and info.field_table[0]["compound"] == "chosen"

    pd.DataFrame({"plate": ["Z9"], "well": ["H12"], "dose": [1]}).to_csv(tmp_path / "wrong.csv", index=False)
    with pytest.raises(InputError, match=r"wrong\.csv cannot be used with these images"):
        read_plate([str(tmp_path / "images"), str(tmp_path / "wrong.csv")])


def test_csvs_that_are_not_plate_metadata_are_left_to_other_readers(tmp_path):
    (tmp_path / "notes.csv").write_text("remark,by\nrerun,anna\n")
    assert napari_get_reader(str(tmp_path / "notes.csv")) is None  # no wells, no image files
    pd.DataFrame({"well": ["A01"], "dose": [1]}).to_csv(tmp_path / "layout.csv", index=False)
    assert napari_get_reader(str(tmp_path / "layout.csv")) is None  # no TIFFs beside it
    pd.DataFrame({"Image_FileName_DNA": ["P1_A01_s1_w1.tif"]}).to_csv(tmp_path / "gone.csv", index=False)
    reader = napari_get_reader(str(tmp_path / "gone.csv"))  # plate metadata: claimed, to say what is missing
    with pytest.raises(InputError, match=r"None of the 1 image files named in gone\.csv \(e\.g\. P1_A01_s1_w1"):
        reader(str(tmp_path / "gone.csv"))


@pytest.mark.shared_data
def test_real_bbbc021_field_opened_from_its_metadata_row_is_named_dapi(shared_data):
    folder = shared_data / "bbbc021-fullfield-dapi"
    for path in (folder, folder / "metadata_row.csv"):  # the folder, or the table that names its image
        layers, info = _read(path)
        assert [kwargs["name"] for _, kwargs, _ in layers] == ["DAPI"]
        assert info.plates == ["Week1_22123"] and info.field_table[0]["compound"] == "DMSO"
        assert info.metadata_path.endswith("metadata_row.csv")
