"""Pre-cropped single cells: stacks and folders in, (N, C, H, W) with a matching per-cell table out."""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenossl.errors import ConfigError, InputError
from phenossl.io.crops import read_crops


def is_memory_mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


@pytest.fixture
def crops_nhwc(rng):
    return rng.integers(0, 4000, size=(5, 20, 20, 3), dtype=np.uint16)


def test_npy_channels_last_is_memory_mapped_and_moved_to_channels_first(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    crops = read_crops(tmp_path / "crops.npy")
    assert crops.images.shape == (5, 3, 20, 20) and crops.images.dtype == np.uint16
    assert is_memory_mapped(crops.images) and not crops.images.flags.writeable
    np.testing.assert_array_equal(crops.images[2, 1], crops_nhwc[2, :, :, 1])
    assert crops.cells["crop_index"].tolist() == [0, 1, 2, 3, 4] and len(crops) == 5
    assert crops.channel_names == ["ch0", "ch1", "ch2"]


def test_npy_channels_first_with_names(tmp_path, crops_nhwc):
    nchw = np.ascontiguousarray(crops_nhwc.transpose(0, 3, 1, 2))
    np.save(tmp_path / "crops.npy", nchw)
    crops = read_crops(tmp_path / "crops.npy", channel_names=["DNA", "actin", "tubulin"])
    np.testing.assert_array_equal(crops.images, nchw)
    assert crops.channel_names == ["DNA", "actin", "tubulin"]


def test_grayscale_stack_gets_one_channel(tmp_path, rng):
    np.save(tmp_path / "gray.npy", rng.random((4, 20, 20), dtype=np.float32))
    assert read_crops(tmp_path / "gray.npy").images.shape == (4, 1, 20, 20)


def test_npz_single_array_or_named_array(tmp_path, crops_nhwc):
    np.savez_compressed(tmp_path / "one.npz", crops=crops_nhwc)
    assert read_crops(tmp_path / "one.npz").images.shape == (5, 3, 20, 20)
    np.savez(tmp_path / "two.npz", crops=crops_nhwc, labels=np.arange(5))
    with pytest.raises(InputError, match=r"2 arrays \['crops', 'labels'\]"):
        read_crops(tmp_path / "two.npz")
    assert read_crops(tmp_path / "two.npz", array_name="crops").images.shape == (5, 3, 20, 20)
    with pytest.raises(InputError, match="no array 'cells'"):
        read_crops(tmp_path / "two.npz", array_name="cells")


def test_ambiguous_axes_need_channel_axis(tmp_path):
    np.save(tmp_path / "tiny.npy", np.zeros((2, 4, 10, 4), np.uint8))
    with pytest.raises(InputError, match="channel_axis"):
        read_crops(tmp_path / "tiny.npy")
    assert read_crops(tmp_path / "tiny.npy", channel_axis=-1).images.shape == (2, 4, 4, 10)
    assert read_crops(tmp_path / "tiny.npy", channel_axis=0).images.shape == (2, 4, 10, 4)
    with pytest.raises(ConfigError, match="channel_axis=1"):
        read_crops(tmp_path / "tiny.npy", channel_axis=1)


def test_csv_is_reordered_by_crop_index(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    pd.DataFrame({"crop_index": [3, 0, 4, 1, 2], "compound": list("daebc")}).to_csv(
        tmp_path / "cells.csv", index=False
    )
    crops = read_crops(tmp_path / "crops.npy", tmp_path / "cells.csv")
    assert crops.cells["crop_index"].tolist() == [0, 1, 2, 3, 4]
    assert crops.cells["compound"].tolist() == list("abcde")


def test_csv_without_crop_index_matches_by_row_order(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    pd.DataFrame({"compound": list("vwxyz")}).to_csv(tmp_path / "cells.csv", index=False)
    cells = read_crops(tmp_path / "crops.npy", tmp_path / "cells.csv").cells
    assert cells.columns.tolist() == ["crop_index", "compound"] and cells["compound"].tolist() == list(
        "vwxyz"
    )


def test_csv_with_another_count_names_both_counts(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    pd.DataFrame({"compound": list("abcd")}).to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(InputError, match=r"cells.csv has 4 row\(s\) but .*crops.npy holds 5 crop"):
        read_crops(tmp_path / "crops.npy", tmp_path / "cells.csv")


def test_crop_index_with_a_repeat_is_refused(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    pd.DataFrame({"crop_index": [0, 1, 2, 2, 4]}).to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(InputError, match="crop_index"):
        read_crops(tmp_path / "crops.npy", tmp_path / "cells.csv")


def test_folder_of_tiffs_in_natural_order(tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    for i in (10, 2, 1):
        tifffile.imwrite(
            folder / f"cell_{i}.tif", np.full((20, 20, 2), i, np.uint16), photometric="minisblack"
        )
    (folder / "notes.txt").write_text("ignored")
    crops = read_crops(folder)
    assert crops.images.shape == (3, 2, 20, 20)
    assert crops.images[:, 0, 0, 0].tolist() == [1, 2, 10]
    assert crops.cells["source_file"].tolist() == ["cell_1.tif", "cell_2.tif", "cell_10.tif"]


def test_folder_of_npy_crops_with_different_sizes_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 20, 20)))
    np.save(tmp_path / "b.npy", np.zeros((2, 20, 24)))
    with pytest.raises(InputError, match=r"b.npy has shape \(2, 20, 24\)"):
        read_crops(tmp_path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 20, 20), dtype=bool), "boolean"),
        (np.zeros((3, 20, 20), dtype=object), "Python objects"),
        (np.zeros((3, 2, 2, 20, 20), dtype=np.uint8), "expected"),
    ],
)
def test_unusable_stacks_are_input_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(InputError, match=message):
        read_crops(tmp_path / "bad.npy")


def test_nan_in_a_loaded_stack_is_refused(tmp_path):
    stack = np.zeros((2, 20, 20), np.float32)
    stack[1, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", crops=stack)
    with pytest.raises(InputError, match="NaN"):
        read_crops(tmp_path / "nan.npz")


@pytest.mark.parametrize("name", ["crops.npy", "crops.npz"])
def test_truncated_files_are_input_errors_naming_the_file(tmp_path, crops_nhwc, name):
    path = tmp_path / name
    (np.save if name.endswith(".npy") else np.savez)(path, crops_nhwc)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match=name):
        read_crops(path)


def test_channel_name_count_must_fit(tmp_path, crops_nhwc):
    np.save(tmp_path / "crops.npy", crops_nhwc)
    with pytest.raises(InputError, match="3 channel"):
        read_crops(tmp_path / "crops.npy", channel_names=["DNA"])


def test_missing_paths(tmp_path):
    with pytest.raises(InputError, match="do not exist"):
        read_crops(tmp_path / "nothing.npy")
    (tmp_path / "crops.h5").write_bytes(b"x")
    with pytest.raises(InputError, match="not an .npy or .npz"):
        read_crops(tmp_path / "crops.h5")
