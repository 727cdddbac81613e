"""Read one image file (TIFF / OME-TIFF) as (C, Y, X): find its channel axis, reject pixels that cannot be
intensities, and turn tifffile's logged warnings about truncated files into errors."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import numpy as np

from phenossl.errors import ConfigError, InputError

ChannelAxis = int | Literal["auto"] | None
"""Where the channels are: an axis index of the array as stored, or ``"auto"`` (``None`` means auto)."""

TIFF_SUFFIXES = (".tif", ".tiff")
MAX_CHANNELS = 8
"""Largest axis that auto-detection takes for channels; larger channel counts need ``channel_axis``."""
MIN_IMAGE_SIZE = 16
"""Smallest image side that auto-detection accepts next to a channel axis."""


# ---------------------------------------------------------------------------------------------------
# Pure array helpers


def guess_channel_axis(shape: Sequence[int]) -> int | None:
    """The channel axis of a 3-D shape, or None when it cannot be told.

    Channels are an axis of at most ``MAX_CHANNELS`` at the start or the end, with the two other
    axes at least ``MIN_IMAGE_SIZE``; exactly one axis may qualify. Anything else (tiny images, a
    channel axis in the middle, many channels) is ambiguous and needs an explicit ``channel_axis``.
    """
    if len(shape) != 3:
        return None
    candidates = [
        axis
        for axis in (0, 2)
        if shape[axis] <= MAX_CHANNELS and all(shape[a] >= MIN_IMAGE_SIZE for a in range(3) if a != axis)
    ]
    return candidates[0] if len(candidates) == 1 else None


def check_pixels(array: np.ndarray, source: str, *, check_finite: bool = True) -> None:
    """Reject pixel types that cannot be intensities: bool (a mask?), complex, text/objects, NaN/inf.

    ``check_finite`` reads every float pixel; callers pass False for memory-mapped stacks that must
    not be read in full.
    """
    kind = array.dtype.kind
    if kind == "b":
        raise InputError(
            f"{source} holds boolean pixels (a mask?), not intensities. Give the intensity image instead."
        )
    if kind == "c":
        raise InputError(
            f"{source} holds complex numbers ({array.dtype}); save the magnitude as a real image."
        )
    if kind not in "uif":
        raise InputError(f"{source} holds {array.dtype} values, not numbers; it cannot be used as an image.")
    if kind == "f" and check_finite and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"{source} contains {bad} NaN or infinite pixel values. Replace them (e.g. with 0) "
            "before reading."
        )


def to_cyx(
    array: np.ndarray, *, channel_axis: ChannelAxis = "auto", axes: str | None = None, source: str = "image"
) -> np.ndarray:
    """Return ``array`` as (C, Y, X), finding the channel axis as documented in ``read_image_file``.

    ``axes`` are the letters a file's metadata gives its axes (tifffile's ``series.axes``: C or S for
    channels/samples, Y, X, Z, T; Q and I mean unknown). Singleton axes are dropped first.
    """
    if array.ndim < 2:
        raise InputError(
            f"{source} is {array.ndim}-D (shape {array.shape}); an image needs at least Y and X."
        )
    if channel_axis is not None and channel_axis != "auto":
        return _move_explicit_axis(array, channel_axis, source)
    keep = [axis for axis, size in enumerate(array.shape) if size != 1]
    if axes is not None and len(axes) == array.ndim:
        axes = "".join(axes[axis] for axis in keep)
    else:
        axes = None
    array = array.reshape([array.shape[axis] for axis in keep])
    if array.ndim == 2:
        return array[np.newaxis]
    if array.ndim < 2:
        raise InputError(f"{source} has fewer than two axes longer than 1; it is not an image.")
    for letter, what in (("Z", "z-planes"), ("T", "time points")):
        if axes and letter in axes:
            raise InputError(
                f"{source} has {array.shape[axes.index(letter)]} {what} (axes {axes}, shape {array.shape}). "
                "phenossl reads 2-D multi-channel fields: project or pick one plane first."
            )
    if array.ndim != 3:
        raise InputError(
            f"{source} is {array.ndim}-D (shape {array.shape}) without a clear channel axis. "
            "Save fields as (C, Y, X) or (Y, X, C)."
        )
    axis = _axis_from_letters(axes)
    if axis is None:
        axis = guess_channel_axis(array.shape)
    if axis is None:
        raise InputError(
            f"Cannot tell which axis of {source} (shape {array.shape}) holds the channels. "
            "Pass channel_axis=0 (channels first) or channel_axis=-1 (channels last)."
        )
    return np.moveaxis(array, axis, 0)


def _axis_from_letters(axes: str | None) -> int | None:
    """The channel axis a file declares: exactly one C or S, next to Y and X."""
    if not axes or sorted(axes) not in (sorted("CYX"), sorted("SYX")):
        return None
    return axes.index("C") if "C" in axes else axes.index("S")


def _move_explicit_axis(array: np.ndarray, channel_axis: int, source: str) -> np.ndarray:
    if not isinstance(channel_axis, (int, np.integer)) or not -array.ndim <= channel_axis < array.ndim:
        raise ConfigError(
            f"channel_axis={channel_axis!r} does not fit {source} of shape {array.shape}; "
            f"use an axis index from {-array.ndim} to {array.ndim - 1}, or 'auto'."
        )
    moved = np.moveaxis(array, int(channel_axis), 0)
    rest = [size for size in moved.shape[1:] if size != 1]
    if len(rest) != 2:
        raise InputError(
            f"{source} has shape {array.shape}: after taking axis {channel_axis} as channels it is not "
            "2-D. Save fields as (C, Y, X) or (Y, X, C)."
        )
    return moved.reshape(moved.shape[0], *rest)


# ---------------------------------------------------------------------------------------------------
# Reading TIFF files


class _TiffProblems(logging.Handler):
    """Collect tifffile's warnings in this thread: a truncated multi-page file is read *partly* with
    only a logged warning, which must become an error here."""

    MARKERS = (
        "invalid page offset",
        "invalid offset",
        "corrupted",
        "failed to read",
        "failed to reshape",
        "truncat",
    )

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread == self.thread and any(marker in message for marker in self.MARKERS):
            self.messages.append(message)


@contextmanager
def _catch_tifffile_problems() -> Iterator[_TiffProblems]:
    handler = _TiffProblems()
    tifffile_logger = logging.getLogger("tifffile")
    tifffile_logger.addHandler(handler)
    try:
        yield handler
    finally:
        tifffile_logger.removeHandler(handler)


def read_tiff(path: Path) -> tuple[np.ndarray, str, list[str] | None]:
    """Pixels, axis letters and OME channel names (if any) of a TIFF's first series."""
    array, axes, names, _ = read_tiff_metadata(path)
    return array, axes, names


def read_tiff_metadata(
    path: Path, series: int = 0
) -> tuple[np.ndarray, str, list[str] | None, tuple[float, float] | None]:
    """``read_tiff`` of series ``series`` (an OME-TIFF's image: a stage position), and the OME pixel size (y, x)
    in micrometres when the file has one."""
    import tifffile

    if not path.is_file():
        raise InputError(f"Image file {path} does not exist (or is not a file).")
    try:
        with _catch_tifffile_problems() as problems, tifffile.TiffFile(path) as tif:
            if not 0 <= series < len(tif.series):
                raise InputError(f"{path} has {len(tif.series)} image series; series {series} does not exist.")
            image_series = tif.series[series]
            array = image_series.asarray()
            axes = image_series.axes
            names = _ome_channel_names(tif.ome_metadata, series) if tif.is_ome else None
            pixel_size = _ome_pixel_size(tif.ome_metadata, series) if tif.is_ome else None
    except (MemoryError, InputError):
        raise
    except Exception as error:  # any parser failure means the file cannot be trusted
        raise InputError(
            f"Cannot read {path}: it is not a readable TIFF or it is truncated/corrupt "
            f"({type(error).__name__}: {error}). Re-export or re-copy the file."
        ) from None
    if problems.messages:
        raise InputError(
            f"Cannot read {path} completely: it looks truncated or corrupt ({problems.messages[0]}). "
            "Re-export or re-copy the file."
        )
    return array, axes, names, pixel_size


def ome_series_count(path: Path) -> int:
    """How many images (stage positions) an OME-TIFF holds, from its header; 1 for anything else, and for a file
    that does not open (reading it then says why). Only images stored in this file count: the files of a
    multi-file OME-TIFF are each one field."""
    import tifffile

    try:
        with tifffile.TiffFile(path, _multifile=False) as tif:
            if not tif.is_ome:
                return 1
            return max(1, len(tif.series))
    except Exception:  # noqa: BLE001 - reading the field reports the problem with its message
        return 1


def _ome_image(ome_xml: str | None, index: int = 0) -> ElementTree.Element | None:
    """The ``index``-th OME Image element, or None."""
    if not ome_xml:
        return None
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    images = [el for el in root.iter() if el.tag.endswith("}Image") or el.tag == "Image"]
    return images[index] if 0 <= index < len(images) else None


def _ome_channel_names(ome_xml: str | None, index: int = 0) -> list[str] | None:
    """Channel names of the ``index``-th OME Image (the first by default), or None when some are missing."""
    image = _ome_image(ome_xml, index)
    if image is None:
        return None
    names = [el.get("Name") for el in image.iter() if el.tag.endswith("}Channel") or el.tag == "Channel"]
    return names if names and all(names) else None  # type: ignore[return-value]


_UNITS_IN_UM = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}


def _ome_pixel_size(ome_xml: str | None, index: int = 0) -> tuple[float, float] | None:
    """PhysicalSizeY / PhysicalSizeX of the ``index``-th OME Image's Pixels, in micrometres, or None."""
    image = _ome_image(ome_xml, index)
    if image is None:
        return None
    pixels = next((el for el in image.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("Y", "X"):
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is None or unit not in _UNITS_IN_UM:
            return None
        try:
            sizes.append(float(value) * _UNITS_IN_UM[unit])
        except ValueError:
            return None
    return sizes[0], sizes[1]


def read_image_file(path: str | os.PathLike, channel_axis: ChannelAxis = "auto") -> np.ndarray:
    """Read a TIFF / OME-TIFF as (C, Y, X) in its own dtype (other formats: the first scene, through bioio).

    Channel axis: an explicit ``channel_axis`` (index into the array tifffile returns) wins; otherwise
    the axes the file declares (OME, ImageJ or tifffile metadata: one C or S axis beside Y and X);
    otherwise a leading or trailing axis of at most 8 next to image axes of at least 16. 2-D images
    are one channel. Unreadable files, 1-D or ambiguous 4-D data, z-stacks, bool/complex pixels and
    NaNs raise InputError naming the file.
    """
    path = Path(path)
    from phenossl.io.formats import bioio_format, read_scene

    if bioio_format(path) is not None:
        image = read_scene(path).image
        check_pixels(image, str(path))
        return image
    array, axes, _ = read_tiff(path)
    image = to_cyx(array, channel_axis=channel_axis, axes=axes, source=str(path))
    check_pixels(image, str(path))
    return image
