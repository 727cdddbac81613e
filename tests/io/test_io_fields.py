"""Finding and reading fields: channel axes, per-channel files, and every way an input can be wrong."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phenossl.errors import ConfigError, InputError
from phenossl.io import discovery as discovery_module
from phenossl.io.fields import (
    MULTICHANNEL_KEY,
    Field,
    discover_fields,
    field_table,
    guess_channel_axis,
    list_image_files,
    read_field,
    read_image_file,
    to_cyx,
)

SHAPE = (24, 32)


def uuid(n: int) -> str:
    return f"{n:08X}-AAAA-BBBB-CCCC-{n:012X}"


def write_tif(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, array, **kwargs)
    return path


def plane(value: int, shape=SHAPE, dtype=np.uint16) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def write_bbbc021_field(folder: Path, prefix: str, well: str, site: int, channels=("w1", "w2", "w4")) -> None:
    """One field, one file per channel; every pixel holds the channel number so the order can be checked."""
    for i, channel in enumerate(channels):
        write_tif(
            folder / f"{prefix}{well}_s{site}_{channel}{uuid(100 * site + i)}.tif", plane(int(channel[1:]))
        )


# --- channel axis ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((3, 32, 40), 0),
        ((32, 40, 3), 2),
        ((8, 16, 16), 0),
        ((3, 32, 3), None),
        ((5, 5, 5), None),
        ((12, 32, 40), None),
        ((32, 4, 40), None),
        ((3, 10, 40), None),
    ],
)
def test_guess_channel_axis(shape, axis):
    assert guess_channel_axis(shape) == axis


def test_to_cyx_moves_channels_last_to_first_without_changing_pixels(rng):
    image = rng.integers(0, 4000, size=(20, 30, 3), dtype=np.uint16)
    result = to_cyx(image)
    assert result.shape == (3, 20, 30)
    np.testing.assert_array_equal(result[1], image[:, :, 1])


def test_to_cyx_uses_declared_axes_over_the_shape_rule():
    image = np.zeros((20, 12, 30), dtype=np.uint8)  # 12 channels: too many for the shape rule
    assert to_cyx(image, axes="YCX").shape == (12, 20, 30)
    with pytest.raises(InputError, match="channel_axis"):
        to_cyx(image)


def test_to_cyx_drops_singleton_axes():
    assert to_cyx(np.zeros((1, 3, 20, 30))).shape == (3, 20, 30)
    assert to_cyx(np.zeros((1, 20, 30))).shape == (1, 20, 30)


def test_explicit_channel_axis_settles_an_ambiguous_shape():
    image = np.arange(3 * 32 * 3).reshape(3, 32, 3)
    with pytest.raises(InputError, match="Cannot tell"):
        to_cyx(image)
    assert to_cyx(image, channel_axis=0).shape == (3, 32, 3)
    np.testing.assert_array_equal(to_cyx(image, channel_axis=-1)[2], image[:, :, 2])


def test_explicit_channel_axis_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="channel_axis=5"):
        to_cyx(np.zeros((3, 20, 20)), channel_axis=5)


def test_z_stack_is_refused_with_what_to_do():
    with pytest.raises(InputError, match="z-planes"):
        to_cyx(np.zeros((4, 2, 20, 30)), axes="ZCYX")


# --- reading one file -----------------------------------------------------------------------------


def test_read_2d_tif_is_one_channel_in_its_own_dtype(tmp_path):
    path = write_tif(tmp_path / "a.tif", plane(7))
    image = read_image_file(path)
    assert image.shape == (1, *SHAPE) and image.dtype == np.uint16 and image.max() == 7


@pytest.mark.parametrize("channels_last", [False, True])
def test_read_multichannel_tif_channels_first_or_last(tmp_path, rng, channels_last):
    cyx = rng.integers(0, 60000, size=(3, *SHAPE), dtype=np.uint16)
    stored = np.moveaxis(cyx, 0, -1) if channels_last else cyx
    path = write_tif(tmp_path / "a.tif", stored, photometric="rgb" if channels_last else "minisblack")
    np.testing.assert_array_equal(read_image_file(path), cyx)


def test_ome_tiff_axes_and_channel_names_are_used(tmp_path, rng):
    cyx = rng.random((10, *SHAPE)).astype(np.float32)  # 10 channels: only the metadata can tell
    names = [f"stain{i}" for i in range(10)]
    path = write_tif(
        tmp_path / "plate_B03_s2.ome.tif", cyx, metadata={"axes": "CYX", "Channel": {"Name": names}}
    )
    np.testing.assert_array_equal(read_image_file(path), cyx)
    [source] = discover_fields(tmp_path)
    field = read_field(source)
    assert field.channel_names == names
    assert (source.key, source.well, source.site) == ("plate_B03_s2", "B03", 2)


def test_ome_zstack_is_refused(tmp_path):
    path = write_tif(tmp_path / "z.ome.tif", np.zeros((3, 2, *SHAPE), np.uint16), metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match="3 z-planes"):
        read_image_file(path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(SHAPE, dtype=bool), "boolean"),
        (np.zeros(SHAPE, dtype=np.complex64), "complex"),
        (np.array([[1.0, np.nan], [0.0, 1.0]] * 12, dtype=np.float32), "NaN"),
        (np.zeros((2, 3, *SHAPE), dtype=np.uint16), "4-D"),
    ],
)
def test_unusable_pixels_are_input_errors_naming_the_file(tmp_path, array, message):
    path = write_tif(tmp_path / "bad.tif", array)
    with pytest.raises(InputError, match=message) as error:
        read_image_file(path)
    assert "bad.tif" in str(error.value)


def test_one_dimensional_array_is_refused():
    with pytest.raises(InputError, match="1-D"):
        to_cyx(np.zeros(10), source="x.tif")


def test_text_file_renamed_tif_is_an_input_error(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("plate layout: see the spreadsheet\n")
    with pytest.raises(InputError, match="notes.tif"):
        read_image_file(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_multipage_tif_is_an_input_error(tmp_path, rng, compression):
    """zlib-compressed pages make tifffile read the first page and only log a warning: still an error here."""
    full = write_tif(
        tmp_path / "full.tif", rng.integers(0, 9, (3, 64, 64), dtype=np.uint16), compression=compression
    )
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.tif"):
        read_image_file(cut)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image_file(tmp_path / "nope.tif")


# --- discovery of per-channel files ---------------------------------------------------------------


def test_discover_bbbc021_folder_with_channel_roles(tmp_path):
    plate = tmp_path / "Week1_22123"
    write_bbbc021_field(plate, "Week1_150607_", "C02", 3)
    write_bbbc021_field(plate, "Week1_150607_", "C02", 1)
    sources = discover_fields(plate, channel_names={"w1": "DNA", "w2": "tubulin", "w4": "actin"})
    assert [s.key for s in sources] == ["Week1_150607_C02_s1", "Week1_150607_C02_s3"]
    first = sources[0]
    assert (first.plate, first.well, first.site) == ("Week1_22123", "C02", 1)
    assert list(first.paths) == ["DNA", "tubulin", "actin"]
    field = read_field(first)
    assert field.channel_names == ["DNA", "tubulin", "actin"]
    assert field.image.shape == (3, *SHAPE) and field.image.dtype == np.uint16
    assert field.image[:, 0, 0].tolist() == [1, 2, 4]
    assert field.channel("actin")[0, 0] == 4


def test_mapping_selects_and_orders_channels(tmp_path):
    write_bbbc021_field(tmp_path, "", "G10", 1)
    [source] = discover_fields(tmp_path, channel_names={"w4": "actin", "1": "DNA"})
    field = read_field(source)
    assert field.channel_names == ["actin", "DNA"]
    assert field.image[:, 0, 0].tolist() == [4, 1]


def test_channel_list_names_channels_in_natural_order(tmp_path):
    for channel in ("w1", "w2", "w10"):
        write_tif(tmp_path / f"P_A01_s1_{channel}.tif", plane(int(channel[1:])))
    [source] = discover_fields(tmp_path, channel_names=["DNA", "ER", "mito"])
    field = read_field(source)
    assert field.channel_names == ["DNA", "ER", "mito"]
    assert field.image[:, 0, 0].tolist() == [1, 2, 10]


def test_without_names_the_tokens_are_the_channel_names(tmp_path):
    write_bbbc021_field(tmp_path, "", "A01", 1)
    assert discover_fields(tmp_path)[0].channel_names == ("w1", "w2", "w4")


def test_wrong_number_of_channel_names_is_a_config_error(tmp_path):
    write_bbbc021_field(tmp_path, "", "A01", 1)
    with pytest.raises(ConfigError, match="2 name"):
        discover_fields(tmp_path, channel_names=["DNA", "actin"])


def test_mapping_of_a_channel_no_file_has_is_a_config_error(tmp_path):
    write_bbbc021_field(tmp_path, "", "A01", 1)
    with pytest.raises(ConfigError, match="w3"):
        discover_fields(tmp_path, channel_names={"w1": "DNA", "w3": "ER"})


def test_incomplete_field_names_the_field_and_the_missing_channel(tmp_path):
    write_bbbc021_field(tmp_path, "Week1_150607_", "C02", 3)
    write_bbbc021_field(tmp_path, "Week1_150607_", "D05", 1, channels=("w1", "w4"))
    with pytest.raises(InputError) as error:
        discover_fields(tmp_path, channel_names={"w1": "DNA", "w2": "tubulin", "w4": "actin"})
    message = str(error.value)
    assert "Week1_150607_D05_s1" in message and "'tubulin' (w2)" in message
    assert "C02" not in message


def test_two_files_for_one_channel_is_an_input_error(tmp_path):
    write_bbbc021_field(tmp_path, "", "A01", 1, channels=("w1",))
    write_tif(tmp_path / f"A01_s1_w1{uuid(999)}.tif", plane(1))
    with pytest.raises(InputError, match="2 files for channel"):
        discover_fields(tmp_path)


def test_channel_files_of_different_shapes_are_mismatched(tmp_path):
    write_tif(tmp_path / "A01_s1_w1.tif", plane(1))
    write_tif(tmp_path / "A01_s1_w2.tif", plane(2, shape=(24, 33)))
    [source] = discover_fields(tmp_path)
    with pytest.raises(InputError, match="mismatched channel files") as error:
        read_field(source)
    assert "A01_s1_w2.tif (24, 33)" in str(error.value)


def test_per_channel_file_with_several_channels_is_refused(tmp_path):
    write_tif(tmp_path / "A01_s1_w1.tif", np.zeros((3, *SHAPE), np.uint16))
    [source] = discover_fields(tmp_path)
    with pytest.raises(InputError, match="holds 3 channels"):
        read_field(source)


def test_corrupt_channel_file_is_named_when_the_field_is_read(tmp_path):
    write_tif(tmp_path / "A01_s1_w1.tif", plane(1))
    (tmp_path / "A01_s1_w2.tif").write_bytes(b"II*\x00garbage")
    [source] = discover_fields(tmp_path)
    with pytest.raises(InputError, match="A01_s1_w2.tif"):
        read_field(source)


def test_unparsed_files_beside_screening_names_are_skipped_and_logged(tmp_path, caplog):
    write_tif(tmp_path / "Plate1_A01_s1_w1.tif", plane(1))
    write_tif(tmp_path / "Plate1_A01_s1_w1_thumb8A2B3C4D-1111-2222-3333-444455556666.tif", plane(9))
    (tmp_path / "._Plate1_A01_s1_w2.tif").write_bytes(b"macOS resource fork")
    (tmp_path / "layout.csv").write_text("well\nA01\n")
    with caplog.at_level(logging.WARNING, logger="phenossl.io.fields"):
        [source] = discover_fields(tmp_path)
    assert source.source_files == (tmp_path / "Plate1_A01_s1_w1.tif",)
    assert "Skipped 1" in caplog.text and "thumb" in caplog.text


def test_fields_are_sorted_naturally_and_deterministically(tmp_path):
    for well in ("A10", "A2", "B1"):
        for site in (10, 2):
            write_tif(tmp_path / f"X_{well}_s{site}_w1.tif", plane(1))
    keys = [s.key for s in discover_fields(tmp_path)]
    assert keys == ["X_A02_s2", "X_A02_s10", "X_A10_s2", "X_A10_s10", "X_B01_s2", "X_B01_s10"]
    assert keys == [s.key for s in discover_fields(tmp_path)]


def test_same_field_names_in_two_plate_folders_get_unique_keys(tmp_path):
    for plate in ("P2", "P1"):
        write_tif(tmp_path / plate / "A01_s1_w1.tif", plane(1))
    sources = discover_fields(tmp_path, recursive=True)
    assert [(s.key, s.plate) for s in sources] == [("P1/A01_s1", "P1"), ("P2/A01_s1", "P2")]
    assert discover_fields(tmp_path / "P1", plate="run7")[0].plate == "run7"


def test_user_regex_with_plate_group(tmp_path):
    write_tif(tmp_path / "P7-B3-f2-ch1.tif", plane(1))
    write_tif(tmp_path / "P7-B3-f2-ch2.tif", plane(2))
    pattern = r"^(?P<plate>P\d+)-(?P<well>[A-P]\d+)-f(?P<site>\d+)-ch(?P<channel>\d)\.tif$"
    [source] = discover_fields(tmp_path, pattern=pattern, channel_names={"1": "DNA", "2": "actin"})
    assert (source.plate, source.well, source.site) == ("P7", "B03", 2)
    assert read_field(source).image[:, 0, 0].tolist() == [1, 2]


def test_explicit_pattern_matching_nothing_is_an_input_error(tmp_path):
    write_tif(tmp_path / "Plate1_A01_s1_w1.tif", plane(1))
    with pytest.raises(InputError, match="No file name matches"):
        discover_fields(tmp_path, pattern="bbbc021")


def test_discovery_lists_a_folder_once_and_reads_no_file(tmp_path, monkeypatch):
    folder = tmp_path / "plate"
    folder.mkdir()
    for j in range(100):
        for channel in (1, 2, 3):
            (folder / f"P_{'ABCDEFGH'[j % 8]}{j // 8 % 12 + 1:02d}_s{j // 96 + 1}_w{channel}.tif").touch()
    calls = []
    real_scandir = os.scandir
    monkeypatch.setattr(discovery_module.os, "scandir", lambda p: calls.append(p) or real_scandir(p))
    sources = discover_fields(folder)
    assert calls == [folder]
    assert len(sources) == 100 and all(len(s.paths) == 3 for s in sources)


# --- discovery of multi-channel files -------------------------------------------------------------


def test_folder_of_multichannel_files_gives_one_field_per_file(tmp_path, rng):
    for name in ("field_2.tif", "field_10.tif"):
        write_tif(tmp_path / name, rng.integers(0, 9, (3, *SHAPE), dtype=np.uint8))
    sources = discover_fields(tmp_path, channel_names=["DNA", "tubulin", "actin"])
    assert [s.key for s in sources] == ["field_2", "field_10"]
    assert sources[0].is_multichannel_file and list(sources[0].paths) == [MULTICHANNEL_KEY]
    field = read_field(sources[0])
    assert field.channel_names == ["DNA", "tubulin", "actin"] and field.image.dtype == np.uint8
    assert [s.channel_names for s in discover_fields(tmp_path)] == [None, None]
    assert read_field(discover_fields(tmp_path)[0]).channel_names == ["ch0", "ch1", "ch2"]


def test_mapping_picks_channels_of_a_multichannel_file(tmp_path):
    write_tif(tmp_path / "f.tif", np.stack([plane(v) for v in (10, 20, 30)]))
    [source] = discover_fields(tmp_path, channel_names={2: "actin", "0": "DNA"})
    field = read_field(source)
    assert field.channel_names == ["actin", "DNA"] and field.image[:, 0, 0].tolist() == [30, 10]
    [bad] = discover_fields(tmp_path, channel_names={5: "DNA"})
    with pytest.raises(InputError, match="has no channel '5'"):
        read_field(bad)


def test_channel_name_count_must_fit_a_multichannel_file(tmp_path):
    write_tif(tmp_path / "f.tif", np.zeros((3, *SHAPE), np.uint16))
    [source] = discover_fields(tmp_path, channel_names=["DNA", "actin"])
    with pytest.raises(InputError, match="3 channel"):
        read_field(source)


def test_channel_axis_override_reaches_the_reader(tmp_path):
    write_tif(tmp_path / "tiny.tif", np.zeros((4, 20, 4), np.uint16))
    with pytest.raises(InputError, match="channel_axis"):
        read_field(discover_fields(tmp_path)[0])
    assert read_field(discover_fields(tmp_path, channel_axis=-1)[0]).image.shape == (4, 4, 20)


# --- bad paths, table, helpers --------------------------------------------------------------------


def test_missing_path_empty_folder_and_non_image_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_fields(tmp_path / "nowhere")
    with pytest.raises(InputError, match="No TIFF files"):
        discover_fields(tmp_path)
    (tmp_path / "notes.txt").write_text("plate layout: see the spreadsheet\n")
    with pytest.raises(InputError, match=r"notes.txt is not an image file phenossl reads; give TIFF"):
        list_image_files(tmp_path / "notes.txt")


def test_field_table_has_one_row_per_field_with_file_names(tmp_path):
    write_bbbc021_field(tmp_path / "P1", "", "A01", 1, channels=("w1", "w2"))
    table = field_table(discover_fields(tmp_path / "P1", channel_names={"w1": "DNA", "w2": "actin"}))
    assert list(table.columns) == ["key", "plate", "well", "site", "file_DNA", "file_actin"]
    assert table.loc[0, "file_DNA"] == f"A01_s1_w1{uuid(100)}.tif" and table.loc[0, "site"] == 1


def test_unknown_channel_name_on_a_field_lists_the_names():
    field = Field(image=np.zeros((2, 4, 4)), channel_names=["DNA", "actin"], key="A01_s1")
    with pytest.raises(InputError, match=r"A01_s1 has no channel named 'dapi'.*\['DNA', 'actin'\]"):
        field.channel_index("dapi")


def test_empty_zero_byte_tif_is_an_input_error_naming_the_file(tmp_path):
    write_tif(tmp_path / "A01_s1_w1.tif", plane(1))
    empty = tmp_path / "A01_s1_w2.tif"
    empty.write_bytes(b"")  # a copy that never finished, an export that failed
    expected = (rf"^Cannot read {re.escape(str(empty))}: it is not a readable TIFF or it is truncated/corrupt "
                r"\(.*\)\. Re-export or re-copy the file\.$")
    with pytest.raises(InputError, match=expected):
        read_image_file(empty)
    [source] = discover_fields(tmp_path)  # found as a channel file: named when its field is read
    with pytest.raises(InputError, match=expected):
        read_field(source)
