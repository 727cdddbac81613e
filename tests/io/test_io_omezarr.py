"""OME-Zarr HCS plates: a real plate written by ome-zarr from the synthetic generator (2 wells x 2 fields x 3
channels), read field by field (lazily for napari), in ``phenossl inspect / tile``, and bad plates."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from phenossl.cli import main
from phenossl.errors import InputError
from phenossl.io import discover_fields, field_table, join_metadata, load_metadata, read_field
from phenossl.io.omezarr import write_plate


def test_fields_are_the_wells_images_with_their_channel_names(hcs_plate, hcs_synthetic):
    assert hcs_plate.name == "SYNTH01.zarr" and (hcs_plate.parent / "metadata.csv").is_file()
    sources = discover_fields(hcs_plate)
    assert [(s.key, s.plate, s.well, s.site, s.member) for s in sources] == [
        ("C02_s1", "SYNTH01", "C02", 1, "C/2/0"), ("C02_s2", "SYNTH01", "C02", 2, "C/2/1"),
        ("C03_s1", "SYNTH01", "C03", 1, "C/3/0"), ("C03_s2", "SYNTH01", "C03", 2, "C/3/1"),
    ]
    for index, source in enumerate(sources):
        field = read_field(source)
        assert field.channel_names == ["DNA", "tubulin", "actin"] and field.image.dtype == np.uint16
        assert np.array_equal(field.image, hcs_synthetic.images[index])
    assert discover_fields(hcs_plate.parent)[0].key == "C02_s1"  # the folder holding the plate finds it too


def test_fields_are_read_lazily_one_at_a_time(hcs_plate, hcs_synthetic):
    import dask.array as da

    fields = [read_field(source, lazy=True) for source in discover_fields(hcs_plate)]
    assert all(isinstance(f.image, da.Array) and f.image.shape == (3, 96, 96) for f in fields)
    assert np.array_equal(fields[3].image[2].compute(), hcs_synthetic.images[3][2])


def test_user_channel_names_and_metadata_join_by_plate_well_site(hcs_plate):
    sources = discover_fields(hcs_plate, channel_names={"DNA": "dna", "actin": "act"})
    assert read_field(sources[0]).channel_names == ["dna", "act"]
    joined = join_metadata(field_table(sources), load_metadata(hcs_plate.parent / "metadata.csv"))
    assert joined["compound"].notna().all() and len(joined) == 4


def test_inspect_and_tile_commands_read_the_plate(hcs_plate, tmp_path, capsys):
    assert main(["inspect", str(hcs_plate)]) == 0
    out = capsys.readouterr().out
    assert "4 field(s)" in out and "C03_s2: plate=SYNTH01 well=C03 site=2 channels=['DNA', 'tubulin', 'actin']" in out
    config = {
        "name": "zarr",
        "input": {"paths": [str(hcs_plate)], "nuclear_channel": "DNA", "metadata": str(hcs_plate.parent / "metadata.csv")},
        "segmentation": {"backend": "classical"},
        "tiles": {"size": 48, "border": "pad"},
        "output": {"dir": str(tmp_path / "run")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["tile", str(tmp_path / "run.yaml")]) == 0
    from phenossl.tiles.store import TileStore

    store = TileStore(tmp_path / "run" / "store")
    assert store.n_cells > 0 and set(store.field_keys()) <= {"C02_s1", "C02_s2", "C03_s1", "C03_s2"}
    assert {"well", "site", "compound"} <= set(store.cells.columns)


def test_a_zarr_that_is_not_a_plate_says_what_to_open(hcs_plate, tmp_path):
    with pytest.raises(InputError, match=r"out/SYNTH01.zarr/C/2 is inside the OME-Zarr plate .*SYNTH01.zarr: open"):
        discover_fields(hcs_plate / "C" / "2")
    image = shutil.copytree(hcs_plate / "C" / "2" / "0", tmp_path / "image.zarr")  # an image by itself
    with pytest.raises(InputError, match=r"image.zarr is a single OME-Zarr image, not a plate"):
        discover_fields(image)
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["something"] = 1
    with pytest.raises(InputError, match=r"other.zarr is not an OME-Zarr HCS plate .*Open the plate's root folder"):
        discover_fields(tmp_path / "other.zarr")


def test_a_missing_well_is_named_with_its_path(hcs_plate):
    shutil.rmtree(hcs_plate / "C" / "3")
    with pytest.raises(InputError, match=r"lists well 'C/3', but .*SYNTH01.zarr/C/3 is missing: the plate is incomplete"):
        discover_fields(hcs_plate)


def test_a_missing_field_image_is_named_with_its_path(hcs_plate):
    shutil.rmtree(hcs_plate / "C" / "3" / "1")
    with pytest.raises(InputError, match=r"SYNTH01.zarr/C/3/1 is missing, but its well .* lists it"):
        discover_fields(hcs_plate)


def test_channel_counts_that_differ_across_wells_are_refused(tmp_path):
    three, two = np.zeros((3, 32, 32), np.uint16), np.zeros((2, 32, 32), np.uint16)
    root = write_plate(tmp_path / "mixed.zarr", {"B02": [three], "B03": [two]}, ["DNA", "tubulin", "actin"])
    with pytest.raises(InputError, match=r"mixed.zarr have different numbers of channels \(.*B/2/0 has 3, .*B/3/0 "
                                         r"has 2\)\. phenossl needs the same channels in every well"):
        discover_fields(root)


def test_pixel_size_is_read_when_the_axes_give_a_unit(tmp_path):
    root = write_plate(tmp_path / "p.zarr", {"A01": [np.ones((1, 32, 32), np.uint8)]}, ["DNA"], pixel_size=0.65)
    assert read_field(discover_fields(root)[0]).pixel_size == (0.65, 0.65)
    image = json.loads((root / "A" / "1" / "0" / "zarr.json").read_text())
    assert image["attributes"]["ome"]["multiscales"][0]["axes"][1] == {"name": "y", "type": "space", "unit": "micrometer"}


def test_synthetic_command_writes_either_format(tmp_path, capsys):
    from phenossl.synthetic import main as module_main

    assert main(["synthetic", str(tmp_path / "z"), "--format", "ome-zarr", "--field-size", "96"]) == 0
    assert "OME-Zarr plate" in capsys.readouterr().out and len(discover_fields(tmp_path / "z")) == 8
    assert main(["synthetic", str(tmp_path / "z"), "--format", "ome-zarr", "--field-size", "96"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert module_main(["--out", str(tmp_path / "t"), "--field-size", "96", "--format", "tiff"]) == 0
    assert (tmp_path / "t" / "SYNTH01_B02_s1_w1.tif").is_file()


def test_a_group_inside_a_plate_names_the_plate_to_open(hcs_plate):
    with pytest.raises(InputError, match=r"out/SYNTH01.zarr/C is inside the OME-Zarr plate .*SYNTH01.zarr: open the plate"):
        discover_fields(hcs_plate / "C")


def test_a_corrupt_chunk_is_named_when_its_field_is_read(hcs_plate):
    chunks = [p for p in (hcs_plate / "C" / "3" / "1").rglob("*") if p.is_file() and p.name[0].isdigit()]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"not a compressed chunk")
    sources = discover_fields(hcs_plate)  # metadata is intact: found
    with pytest.raises(InputError, match=r"Cannot read .*SYNTH01.zarr/C/3/1: its pixels are missing or corrupt"):
        read_field(sources[3])
