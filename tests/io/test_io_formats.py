"""Microscope files other than per-channel TIFFs: OME-TIFF metadata (tifffile), PNG / JPEG and CZI through bioio.
Every file is written here by a library that writes that format (tifffile, Pillow, pylibCZIrw)."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from phenossl.cli import main
from phenossl.errors import InputError
from phenossl.io import discover_fields, read_field, read_image_file
from phenossl.io.formats import BIOIO_FORMATS, plugin_missing_message


def nuclei_image(size: int = 96) -> np.ndarray:
    """Four bright discs on a dim background: something classical segmentation finds."""
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), 20, np.uint8)
    for cy, cx in ((25, 25), (25, 70), (70, 25), (70, 70)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 10**2] = 200
    return image


def test_ome_tiff_channel_names_and_pixel_size_come_from_its_metadata(tmp_path):
    path = tmp_path / "A01_s1.ome.tif"
    pixels = np.arange(3 * 32 * 40, dtype=np.uint16).reshape(3, 32, 40)
    tifffile.imwrite(path, pixels, metadata={"axes": "CYX", "Channel": {"Name": ["DNA", "tubulin", "actin"]},
                                             "PhysicalSizeY": 0.65, "PhysicalSizeX": 0.325})
    [source] = discover_fields(tmp_path)
    field = read_field(source)
    assert field.channel_names == ["DNA", "tubulin", "actin"] and field.pixel_size == (0.65, 0.325)
    assert (field.well, field.site) == ("A01", 1) and np.array_equal(field.image, pixels)


def test_png_is_a_field_grey_or_rgb(tmp_path):
    Image.fromarray(nuclei_image()).save(tmp_path / "B02_s1.png")
    rgb = np.stack([nuclei_image(), nuclei_image() // 2, np.zeros((96, 96), np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "B02_s2.png")
    grey, colour = (read_field(source) for source in discover_fields(tmp_path))
    assert grey.image.shape == (1, 96, 96) and grey.channel_names == ["ch0"] and grey.pixel_size is None
    assert np.array_equal(grey.image[0], nuclei_image()) and (grey.well, grey.site) == ("B02", 1)
    assert colour.image.shape == (3, 96, 96) and np.array_equal(colour.image[1], nuclei_image() // 2)
    assert read_image_file(tmp_path / "B02_s1.png").shape == (1, 96, 96)


def test_pngs_beside_tiffs_are_left_out_and_a_folder_of_pngs_is_read(tmp_path):
    tifffile.imwrite(tmp_path / "P1_A01_s1_w1.tif", nuclei_image().astype(np.uint16))
    Image.fromarray(nuclei_image()).save(tmp_path / "thumbnail.png")
    assert [s.key for s in discover_fields(tmp_path)] == ["P1_A01_s1"]
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.fromarray(nuclei_image()).save(pngs / "one.png")
    Image.fromarray(nuclei_image()).save(pngs / "two.jpg")
    assert [s.key for s in discover_fields(pngs)] == ["one", "two"]


def test_segment_command_reads_a_png(tmp_path, capsys):
    Image.fromarray(nuclei_image()).save(tmp_path / "x.png")
    assert main(["segment", str(tmp_path / "x.png"), "--out", str(tmp_path / "labels")]) == 0
    assert "x: 4 nuclei" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "labels" / "x_nuclei.tif").max() == 4


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_truncated_png_gets_the_message_a_corrupt_tiff_gets(tmp_path, cut):
    """As tests/io/test_io_fields.py::test_empty_zero_byte_tif_is_an_input_error_naming_the_file."""
    Image.fromarray(nuclei_image()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "full.png").unlink()
    path = tmp_path / "B02_s1.png"
    path.write_bytes(b"" if cut == "empty" else data[: len(data) // 2])
    expected = (rf"^Cannot read {re.escape(str(path))}: it is not a readable PNG file or it is truncated/corrupt "
                r"\(.*\)\. Re-export or re-copy the file\.$")
    with pytest.raises(InputError, match=expected):
        read_image_file(path)
    [source] = discover_fields(tmp_path)  # found by its name: named when the field is read
    with pytest.raises(InputError, match=expected):
        read_field(source)


def test_corrupt_microscope_file_is_named_when_listed(tmp_path):
    (tmp_path / "plate.nd2").write_bytes(b"not an nd2 file" * 10)
    with pytest.raises(InputError, match=r"Cannot read .*plate.nd2: it is not a readable ND2 file or it is truncated"):
        discover_fields(tmp_path)  # its scenes are counted when it is listed


def test_a_format_whose_plugin_is_missing_names_the_pip_install(tmp_path, monkeypatch):
    (tmp_path / "plate.lif").write_bytes(b"\x70" * 64)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bioio_lif" else real(name, *a))
    with pytest.raises(InputError, match=r"plate.lif is a LIF file; .* Install it .*: pip install bioio-lif$"):
        discover_fields(tmp_path)
    assert plugin_missing_message(tmp_path / "x.nd2", BIOIO_FORMATS[".nd2"]).endswith("pip install bioio-nd2")


def test_czi_channel_names_and_pixel_size_come_from_its_metadata(tmp_path):
    pytest.importorskip("bioio_czi")
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    path = tmp_path / "B03.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c in range(3):
            czi.write(data=np.full((40, 48), 100 * (c + 1), np.uint16), plane={"C": c})
        czi.write_metadata(document_name="B03", channel_names={0: "DNA", 1: "tubulin", 2: "actin"},
                           scale_x=0.5e-6, scale_y=0.5e-6)
    [source] = discover_fields(tmp_path)
    field = read_field(source)
    assert field.key == "B03" and field.channel_names == ["DNA", "tubulin", "actin"]
    assert field.pixel_size == pytest.approx((0.5, 0.5)) and field.image.shape == (3, 40, 48)
    assert field.image[:, 0, 0].tolist() == [100, 200, 300]
    lazy = read_field(source, lazy=True)  # napari: metadata now, pixels when shown
    assert not isinstance(lazy.image, np.ndarray) and np.array_equal(np.asarray(lazy.image), field.image)


def test_each_scene_of_a_microscope_file_is_a_field(tmp_path, monkeypatch):
    """ND2 positions / CZI and LIF scenes (no library here writes a multi-scene file: bioio is stood in for)."""
    from phenossl.io import discovery, fields
    from phenossl.io.formats import SceneImage

    (tmp_path / "Plate1_B03.nd2").write_bytes(b"stand-in")
    monkeypatch.setattr(discovery, "scene_count", lambda path: 3)

    def scene(path, index):
        image = np.full((2, 20, 24), index, np.uint16)
        return SceneImage(image.shape, image.dtype, ["DAPI", "GFP"], (0.2, 0.2), image)

    monkeypatch.setattr(fields, "read_scene", scene)
    sources = discover_fields(tmp_path)
    assert [(s.key, s.well, s.site, s.member) for s in sources] == [
        ("Plate1_B03_s1", "B03", 1, "0"), ("Plate1_B03_s2", "B03", 2, "1"), ("Plate1_B03_s3", "B03", 3, "2")]
    field = read_field(sources[2])
    assert field.channel_names == ["DAPI", "GFP"] and field.image[0, 0, 0] == 2 and field.pixel_size == (0.2, 0.2)


def test_each_image_of_a_multi_position_ome_tiff_is_a_field(tmp_path):
    with tifffile.TiffWriter(tmp_path / "run1.ome.tif", ome=True) as writer:
        for position in range(3):
            writer.write(np.full((2, 32, 40), position, np.uint16),
                         metadata={"axes": "CYX", "Channel": {"Name": ["DNA", "actin"]}, "Name": f"Pos{position}",
                                   "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    sources = discover_fields(tmp_path)
    assert [(s.key, s.site, s.member) for s in sources] == [("run1_s1", 1, "0"), ("run1_s2", 2, "1"), ("run1_s3", 3, "2")]
    field = read_field(sources[2])
    assert field.channel_names == ["DNA", "actin"] and field.pixel_size == (0.5, 0.5) and field.image.max() == 2


def test_pngs_named_like_channel_files_are_fields_of_their_own_with_a_warning(tmp_path, caplog):
    for channel in (1, 2):
        Image.fromarray(nuclei_image()).save(tmp_path / f"P1_A01_s1_w{channel}.png")
    with caplog.at_level("WARNING", logger="phenossl.io.fields"):
        sources = discover_fields(tmp_path)
    assert [s.key for s in sources] == ["P1_A01_s1_w1", "P1_A01_s1_w2"]
    assert "2 image(s) such as P1_A01_s1_w1.png are named like one file per channel" in caplog.text
