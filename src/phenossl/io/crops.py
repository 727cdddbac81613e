"""Read pre-cropped single cells (one stack file or a folder of per-cell images) with their per-cell table.

Some users already have single-cell crops (from CellProfiler, a previous run, a public data set) and
skip segmentation and tiling. The crops become the same (N, C, H, W) batch the tile store holds, and
the per-cell table lines up with them row for row, so everything downstream treats them alike.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, InputError
from phenossl.io.fields import (
    TIFF_SUFFIXES,
    ChannelAxis,
    check_pixels,
    guess_channel_axis,
    read_image_file,
    to_cyx,
)
from phenossl.io.filenames import natural_sort_key

CROP_FILE_SUFFIXES = (*TIFF_SUFFIXES, ".npy")


@dataclass
class CropSet:
    """Crops ``images`` (N, C, H, W) and ``cells``, one row per crop in the same order.

    For an ``.npy`` file ``images`` is a read-only memory-mapped view: pixels are read from disk
    only when used, so stacks larger than memory work. ``cells`` always has a ``crop_index`` column
    (the crop's position in the source stack or folder).
    """

    images: np.ndarray
    cells: pd.DataFrame
    channel_names: list[str]
    source: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])


def read_crops(
    path: str | os.PathLike,
    csv: str | os.PathLike | None = None,
    *,
    channel_axis: ChannelAxis = "auto",
    channel_names: Sequence[str] | None = None,
    array_name: str | None = None,
) -> CropSet:
    """Read crops from an ``.npy`` (memory-mapped), an ``.npz`` (the single array, or ``array_name``)
    or a folder of per-cell TIFF/``.npy`` images (natural sort order), plus an optional per-cell CSV.

    ``channel_axis`` is the channel axis *of one crop*: 0 (channels first), -1 (channels last) or
    ``"auto"`` (an end axis of at most 8 next to sides of at least 16). The CSV is matched to the
    crops by its ``crop_index`` column when present, else row by row; the counts must agree.
    """
    path = Path(path)
    if path.is_dir():
        images, file_names = _read_folder(path, channel_axis)
    elif path.is_file():
        images, file_names = _crop_stack(_load_stack(path, array_name), channel_axis, path), None
    else:
        raise InputError(f"Crops {path} do not exist. Give an .npy/.npz file or a folder of per-cell images.")
    memory_mapped = path.is_file() and path.suffix.lower() == ".npy"
    check_pixels(images, str(path), check_finite=not memory_mapped)  # a NaN scan would read the whole file
    names = _channel_names(channel_names, images.shape[1], path)
    cells = _cells_table(csv, len(images), path)
    if file_names is not None and "source_file" not in cells.columns:
        cells.insert(1, "source_file", file_names)
    return CropSet(images=images, cells=cells, channel_names=names, source=path)


def _load_stack(path: Path, array_name: str | None) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return archive[_pick_array(list(archive.files), array_name, path)]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(
            f"Cannot read crops from {path} ({type(error).__name__}: {error}); the file is corrupt, "
            "truncated or holds Python objects. Save the crops with numpy.save / numpy.savez."
        ) from None
    raise InputError(f"{path} is not an .npy or .npz file; give crops as .npy, .npz or a folder of images.")


def _pick_array(names: list[str], array_name: str | None, path: Path) -> str:
    if array_name is not None:
        if array_name not in names:
            raise InputError(f"{path} has no array {array_name!r}; its arrays are {names}.")
        return array_name
    if len(names) != 1:
        raise InputError(
            f"{path} holds {len(names)} arrays {names}; say which one holds the crops (array_name=...)."
        )
    return names[0]


def _crop_stack(array: np.ndarray, channel_axis: ChannelAxis, path: Path) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) / (N, H, W, C) -> (N, C, H, W), as a view (no pixel is read)."""
    if array.ndim == 3:
        return array[:, np.newaxis]
    if array.ndim != 4:
        raise InputError(
            f"Crops in {path} have shape {array.shape}; expected (N, C, H, W), (N, H, W, C) or (N, H, W)."
        )
    if array.shape[0] == 0:
        raise InputError(f"{path} holds no crops (shape {array.shape}).")
    if channel_axis is None or channel_axis == "auto":
        axis = guess_channel_axis(array.shape[1:])
        if axis is None:
            raise InputError(
                f"Cannot tell which axis of the crops in {path} (shape {array.shape}) holds the channels. "
                "Pass channel_axis=0 (channels first) or channel_axis=-1 (channels last)."
            )
    elif channel_axis in (0, -3):
        axis = 0
    elif channel_axis in (2, -1):
        axis = 2
    else:
        raise ConfigError(
            f"channel_axis={channel_axis!r} for crops must be 0 (channels first), -1 (channels last) "
            "or 'auto'."
        )
    return np.moveaxis(array, 1 + axis, 1)


def _read_folder(folder: Path, channel_axis: ChannelAxis) -> tuple[np.ndarray, list[str]]:
    with os.scandir(folder) as entries:
        files = sorted(
            (
                Path(e.path)
                for e in entries
                if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(CROP_FILE_SUFFIXES)
            ),
            key=lambda p: natural_sort_key(p.name),
        )
    if not files:
        raise InputError(f"No crop images (.tif, .tiff, .npy) in {folder}.")
    crops, shape = [], None
    for file in files:
        crop = _read_crop_file(file, channel_axis)
        if shape is None:
            shape = crop.shape
        elif crop.shape != shape:
            raise InputError(
                f"Crop {file} has shape {crop.shape} (C, H, W) but {files[0].name} has {shape}; "
                "all crops must have the same size and channels."
            )
        crops.append(crop)
    return np.stack(crops), [file.name for file in files]


def _read_crop_file(file: Path, channel_axis: ChannelAxis) -> np.ndarray:
    if file.suffix.lower() != ".npy":
        return read_image_file(file, channel_axis=channel_axis)
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"Cannot read crop {file} ({type(error).__name__}: {error}).") from None
    return to_cyx(array, channel_axis=channel_axis, source=str(file))


def _channel_names(channel_names: Sequence[str] | None, n_channels: int, path: Path) -> list[str]:
    if channel_names is None:
        return [f"ch{i}" for i in range(n_channels)]
    if isinstance(channel_names, str):
        raise ConfigError(
            f"channel_names={channel_names!r} is a single string; give a list, one name per channel."
        )
    names = [str(name) for name in channel_names]
    if len(names) != n_channels:
        raise InputError(
            f"Crops in {path} have {n_channels} channel(s) but {len(names)} channel name(s) were given: "
            f"{names}."
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"channel_names {names} repeats a name; each channel needs its own.")
    return names


def _cells_table(csv: str | os.PathLike | None, n_crops: int, crops_path: Path) -> pd.DataFrame:
    """The per-cell table in crop order, with ``crop_index``."""
    if csv is None:
        return pd.DataFrame({"crop_index": np.arange(n_crops)})
    csv = Path(csv)
    if not csv.is_file():
        raise InputError(f"Per-cell table {csv} does not exist.")
    try:
        cells = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"Cannot read per-cell table {csv} ({type(error).__name__}: {error}).") from None
    if len(cells) != n_crops:
        raise InputError(
            f"{csv} has {len(cells)} row(s) but {crops_path} holds {n_crops} crop(s); "
            "the per-cell table needs exactly one row per crop."
        )
    if "crop_index" not in cells.columns:
        cells.insert(0, "crop_index", np.arange(n_crops))
        return cells
    index = pd.to_numeric(cells["crop_index"], errors="coerce")
    if index.isna().any() or not (index % 1 == 0).all() or sorted(index.astype(int)) != list(range(n_crops)):
        raise InputError(
            f"The crop_index column of {csv} must number the {n_crops} crops 0..{n_crops - 1}, each once; "
            f"it holds {index.nunique()} distinct value(s) from {index.min()} to {index.max()}."
        )
    cells["crop_index"] = index.astype(int)
    return cells.sort_values("crop_index", kind="stable").reset_index(drop=True)
