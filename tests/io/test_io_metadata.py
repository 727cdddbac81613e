"""Treatment metadata: CellProfiler column names, and joins that say what they did."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from phenossl.errors import InputError, MetadataJoinError
from phenossl.io.metadata import join_metadata, load_metadata, normalize_column_name, normalize_column_names

CELLPROFILER_CSV = """\
TableNumber,ImageNumber,Image_FileName_DAPI,Image_PathName_DAPI,Image_FileName_Actin,Image_Metadata_Plate_DAPI,Image_Metadata_Well_DAPI,Replicate,Image_Metadata_Compound,Image_Metadata_Concentration
1,1,P1_A01_s1_w1AAAAAAAA-0000-0000-0000-000000000001.tif,Week1/P1,P1_A01_s1_w4AAAAAAAA-0000-0000-0000-000000000002.tif,P1,A01,1,DMSO,0.0
1,2,P1_A01_s2_w1AAAAAAAA-0000-0000-0000-000000000003.tif,Week1/P1,P1_A01_s2_w4AAAAAAAA-0000-0000-0000-000000000004.tif,P1,A01,1,DMSO,0.0
1,3,P1_B02_s1_w1AAAAAAAA-0000-0000-0000-000000000005.tif,Week1/P1,P1_B02_s1_w4AAAAAAAA-0000-0000-0000-000000000006.tif,P1,B02,1,taxol,0.3
1,4,P1_B02_s2_w1AAAAAAAA-0000-0000-0000-000000000007.tif,Week1/P1,P1_B02_s2_w4AAAAAAAA-0000-0000-0000-000000000008.tif,P1,B02,1,taxol,0.3
"""


@pytest.fixture
def metadata_csv(tmp_path):
    path = tmp_path / "image.csv"
    path.write_text(CELLPROFILER_CSV)
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Image_Metadata_Compound", "compound"),
        ("Image_Metadata_Concentration", "concentration"),
        ("Image_Metadata_Plate_DAPI", "plate"),
        ("Image_Metadata_Well_DAPI", "well"),
        ("Metadata_Site", "site"),
        ("Image_FileName_DAPI", "file_name_dapi"),
        ("TableNumber", "table_number"),
        ("Cell Count (raw)", "cell_count_raw"),
        ("MoA", "mo_a"),
        ("plate", "plate"),
    ],
)
def test_normalize_column_name(raw, expected):
    assert normalize_column_name(raw) == expected


def test_clashing_names_keep_their_long_form():
    names = normalize_column_names(["Image_Metadata_Plate_DAPI", "Image_Metadata_Plate_Actin", "plate"])
    assert names == ["plate", "plate_actin", "plate_2"]


def test_load_metadata_normalises_names_and_takes_the_site_from_file_names(metadata_csv):
    table = load_metadata(metadata_csv)
    assert list(table.columns) == [
        "table_number",
        "image_number",
        "file_name_dapi",
        "path_name_dapi",
        "file_name_actin",
        "plate",
        "well",
        "replicate",
        "compound",
        "concentration",
        "site",
    ]
    assert table["site"].tolist() == [1, 2, 1, 2]


def test_load_metadata_reads_tsv(tmp_path):
    path = tmp_path / "layout.tsv"
    path.write_text("Well\tCompound\nA1\tDMSO\n")
    assert load_metadata(path).to_dict("records") == [{"well": "A1", "compound": "DMSO"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "Cannot read"), (b"well\n", "no rows"), (b"\xff\xfe\x00\x81\x82", "Cannot read")],
)
def test_unreadable_metadata_is_an_input_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "meta.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        load_metadata(path)
    assert "meta.csv" in str(error.value)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_metadata(tmp_path / "none.csv")


def fields_table(plate="folder_name"):
    return pd.DataFrame(
        {
            "key": ["P1_B02_s2", "P1_A01_s1"],
            "plate": [plate, plate],
            "well": ["B02", "A01"],
            "site": [2, 1],
            "file_DNA": [
                "P1_B02_s2_w1AAAAAAAA-0000-0000-0000-000000000007.tif",
                "/data/P1_A01_s1_w1AAAAAAAA-0000-0000-0000-000000000001.tif",
            ],
        }
    )


def test_auto_join_goes_through_file_names_and_metadata_plate_wins(metadata_csv):
    joined = join_metadata(fields_table(), load_metadata(metadata_csv))
    assert joined["key"].tolist() == ["P1_B02_s2", "P1_A01_s1"]  # table order kept
    assert joined["compound"].tolist() == ["taxol", "DMSO"]
    assert joined["plate"].tolist() == ["P1", "P1"]  # folder name replaced by the metadata's plate
    assert joined.attrs["metadata_join"] == {
        "on": "file_DNA = metadata file_name_dapi",
        "matched": 2,
        "unmatched": 0,
    }


def test_join_accepts_a_path(metadata_csv):
    assert join_metadata(fields_table(), metadata_csv)["concentration"].tolist() == [0.3, 0.0]


def test_location_join_normalises_wells_and_sites():
    cells = pd.DataFrame(
        {
            "plate": ["P1", "P1", "P1"],
            "well": ["a1", "B2", "b02"],
            "site": ["s1", "s2", "s1"],
            "area": [10, 20, 30],
        }
    )
    metadata = pd.DataFrame(
        {
            "plate": ["P1"] * 4,
            "well": ["A01", "A01", "B02", "B02"],
            "site": [1, 2, 1, 2],
            "compound": ["DMSO", "DMSO", "taxol", "nocodazole"],
        }
    )
    joined = join_metadata(cells, metadata)
    assert joined["compound"].tolist() == ["DMSO", "nocodazole", "taxol"]
    assert joined["well"].tolist() == ["a1", "B2", "b02"]  # the table's own columns are left as they were
    assert joined.attrs["metadata_join"]["on"] == "plate+well+site"


def test_falls_back_to_well_when_the_table_has_no_plate():
    joined = join_metadata(pd.DataFrame({"well": ["C3"]}), pd.DataFrame({"well": ["C03"], "compound": ["x"]}))
    assert joined["compound"].tolist() == ["x"] and joined.attrs["metadata_join"]["on"] == "well"


def test_partial_join_warns_and_leaves_unmatched_rows_empty(caplog):
    table = pd.DataFrame({"well": ["A01", "H12", "A01"]})
    metadata = pd.DataFrame({"well": ["A1"], "compound": ["DMSO"]})
    with caplog.at_level(logging.WARNING, logger="phenossl.io.metadata"):
        joined = join_metadata(table, metadata)
    assert joined["compound"].iloc[[0, 2]].tolist() == ["DMSO", "DMSO"] and pd.isna(
        joined["compound"].iloc[1]
    )
    assert joined.attrs["metadata_join"] == {"on": "well", "matched": 2, "unmatched": 1}
    assert "1 of 3 row(s) found no metadata row" in caplog.text and "'H12'" in caplog.text


def test_nothing_joined_names_keys_and_examples():
    table = pd.DataFrame({"plate": ["plateA"], "well": ["A01"], "site": [1]})
    metadata = pd.DataFrame({"plate": ["Week1_22123"], "well": ["B05"], "site": [3], "compound": ["DMSO"]})
    with pytest.raises(MetadataJoinError) as error:
        join_metadata(table, metadata)
    message = str(error.value)
    for expected in ("plate+well+site", "plate+well", "well:", "'plateA'", "'Week1_22123'", "'B05'"):
        assert expected in message


def test_tables_without_shared_columns_cannot_join():
    with pytest.raises(MetadataJoinError, match="share no file-name column"):
        join_metadata(pd.DataFrame({"area": [1]}), pd.DataFrame({"compound": ["x"]}))


def test_one_row_matching_several_metadata_rows_is_an_error(metadata_csv):
    metadata = load_metadata(metadata_csv).drop(columns=["site", "file_name_dapi", "file_name_actin"])
    with pytest.raises(MetadataJoinError, match="ambiguous.*matches 2 rows"):
        join_metadata(pd.DataFrame({"plate": ["P1"], "well": ["A01"]}), metadata)


def test_duplicates_the_table_does_not_use_do_not_matter():
    metadata = pd.DataFrame({"well": ["A01", "B01", "B01"], "compound": ["x", "y", "z"]})
    assert join_metadata(pd.DataFrame({"well": ["A01"]}), metadata)["compound"].tolist() == ["x"]


def test_explicit_keys(metadata_csv):
    table = pd.DataFrame({"plate": ["P1"], "well": ["B2"], "site": [np.int64(1)]})
    assert join_metadata(table, metadata_csv, on=["plate", "well", "site"])["compound"].tolist() == ["taxol"]
    with pytest.raises(MetadataJoinError, match="table has no column"):
        join_metadata(table, metadata_csv, on=["plate", "compound"])


def test_falling_back_to_the_well_with_a_one_plate_table_is_noted(caplog):
    images = pd.DataFrame({"plate": ["my_folder", "my_folder"], "well": ["B02", "B03"]})
    metadata = pd.DataFrame({"plate": ["Week1_22123", "Week1_22123"], "well": ["B02", "B03"],
                             "compound": ["DMSO", "taxol"]})
    with caplog.at_level(logging.INFO, logger="phenossl.io.metadata"):
        joined = join_metadata(images, metadata)
    assert list(joined["compound"]) == ["DMSO", "taxol"] and set(joined["plate"]) == {"Week1_22123"}
    assert joined.attrs["metadata_join"]["fell_back_from"] == "plate+well"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "joined on well only" in caplog.text and "'my_folder'" in caplog.text and "one plate" in caplog.text


def test_falling_back_to_the_well_across_several_plates_is_a_warning(caplog):
    images = pd.DataFrame({"plate": ["folder_a", "folder_b"], "well": ["B02", "C05"]})
    metadata = pd.DataFrame({"plate": ["P1", "P2"], "well": ["B02", "C05"], "compound": ["DMSO", "taxol"]})
    with caplog.at_level(logging.WARNING, logger="phenossl.io.metadata"):
        joined = join_metadata(images, metadata)
    assert list(joined["plate"]) == ["P1", "P2"]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "joined on well only" in warning and "2 plates may share well names" in warning


def test_a_full_match_does_not_warn(caplog):
    images = pd.DataFrame({"plate": ["P1"], "well": ["B02"]})
    with caplog.at_level(logging.WARNING):
        joined = join_metadata(images, pd.DataFrame({"plate": ["P1"], "well": ["B02"], "compound": ["DMSO"]}))
    assert "fell_back_from" not in joined.attrs["metadata_join"] and not caplog.records
