"""Microscope files other than TIFF, read through bioio (the successor of aicsimageio) and its plugins: ND2
(Nikon), CZI (Zeiss), LIF (Leica) and simple images (PNG, JPEG, BMP). Each scene of a file (an ND2 position,
a CZI / LIF scene) is one field; channel names and pixel sizes come from the file's metadata.

TIFF and OME-TIFF stay read by tifffile (:mod:`phenossl.io.images`). Each format's bioio plugin is imported
only when a file of that format is read; a missing plugin is an InputError naming the ``pip install`` that adds
it. Files are opened per field, so one scene is in memory at a time.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import platform
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phenossl.errors import InputError


@dataclass(frozen=True)
class Format:
    """A file format read through one bioio plugin."""

    name: str  # what messages call it
    plugin: str  # the pip package
    module: str  # its import name (with a ``Reader`` class)


_ND2 = Format("ND2", "bioio-nd2", "bioio_nd2")
_CZI = Format("CZI", "bioio-czi", "bioio_czi")
_LIF = Format("LIF", "bioio-lif", "bioio_lif")
_PNG = Format("PNG", "bioio-imageio", "bioio_imageio")
_JPEG = Format("JPEG", "bioio-imageio", "bioio_imageio")
_BMP = Format("BMP", "bioio-imageio", "bioio_imageio")

BIOIO_FORMATS: dict[str, Format] = {
    ".nd2": _ND2,
    ".czi": _CZI,
    ".lif": _LIF,
    ".png": _PNG,
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
    ".bmp": _BMP,
}
"""File suffix -> the bioio plugin that reads it."""

MICROSCOPE_SUFFIXES = (".nd2", ".czi", ".lif")
"""Vendor files: always taken from a folder (they are never thumbnails)."""
SIMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
"""Simple images: taken from a folder only when it holds no TIFF or microscope file (a plate folder's PNGs are
usually thumbnails or exported figures)."""
BIOIO_SUFFIXES = tuple(BIOIO_FORMATS)

_DEFAULT_CHANNEL_NAME = re.compile(r"^Channel:\d+(:\d+)?$")  # bioio's name for an unnamed channel


def bioio_format(path: Path) -> Format | None:
    """The format of ``path`` by its suffix, or None when bioio is not how phenossl reads it."""
    return BIOIO_FORMATS.get(path.suffix.lower())


def plugin_missing_message(path: Path, fmt: Format, packages: list[str] | None = None) -> str:
    """What to install to read ``path``: ``pip install bioio-XXX``."""
    install = " ".join(packages or [fmt.plugin])
    note = ""
    if fmt is _CZI and sys.platform.startswith("linux") and platform.machine() != "x86_64":
        note = (" (on ARM Linux this builds aicspylibczi from source, which needs a C++ compiler and cmake: "
                "apt-get install build-essential cmake)")
    return (
        f"{path} is a {fmt.name} file; reading {fmt.name} needs the bioio plugin {fmt.plugin}, which is not "
        f"installed. Install it into phenossl's environment: pip install {install}{note}"
    )


def _reader_class(path: Path, fmt: Format) -> Any:
    missing = [package for package, module in (("bioio", "bioio"), (fmt.plugin, fmt.module))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(plugin_missing_message(path, fmt, missing))
    return importlib.import_module(fmt.module).Reader


def _cannot_read(path: Path, fmt: Format, error: BaseException) -> InputError:
    """The message a corrupt TIFF gets (phenossl.io.images.read_tiff), for a file read through bioio."""
    detail = str(error).splitlines()[0] if str(error) else ""
    return InputError(
        f"Cannot read {path}: it is not a readable {fmt.name} file or it is truncated/corrupt "
        f"({type(error).__name__}: {detail}). Re-export or re-copy the file."
    )


def open_image(path: str | Path) -> Any:
    """The ``bioio.BioImage`` of ``path``, opened with its format's plugin (metadata only, no pixels)."""
    path = Path(path)
    fmt = bioio_format(path)
    if fmt is None:
        raise InputError(f"{path} is not a format phenossl reads through bioio ({', '.join(BIOIO_SUFFIXES)}).")
    if not path.is_file():
        raise InputError(f"Image file {path} does not exist (or is not a file).")
    reader = _reader_class(path, fmt)
    from bioio import BioImage

    try:
        with _quiet_bioio():  # bioio logs a warning before raising: the InputError below says it once
            return BioImage(path, reader=reader)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any parser failure: the file cannot be trusted
        raise _cannot_read(path, fmt, _plugin_error(path, reader, error)) from None


@contextmanager
def _quiet_bioio() -> Iterator[None]:
    bioio_logger = logging.getLogger("bioio")
    level = bioio_logger.level
    bioio_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bioio_logger.setLevel(level)


def _plugin_error(path: Path, reader: Any, error: BaseException) -> BaseException:
    """The plugin's own reason (bioio's "does not support the image" hides it), else ``error``."""
    if type(error).__name__ != "UnsupportedFileFormatError":
        return error
    try:
        reader(path)
    except Exception as reason:  # noqa: BLE001 - only its message is used
        return reason
    return error


def scene_count(path: str | Path) -> int:
    """How many scenes (fields) a file holds: ND2 positions, CZI / LIF scenes; 1 for a simple image."""
    path = Path(path)
    image = open_image(path)
    try:
        return len(image.scenes)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any parser failure: the file cannot be trusted
        raise _cannot_read(path, bioio_format(path), error) from None  # type: ignore[arg-type]


@dataclass
class SceneImage:
    """One scene: (C, Y, X) pixels (numpy, or None when only described), shape and dtype, channel names (None
    when the file names none) and pixel size (y, x) in micrometres (None when the file does not say)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    channel_names: list[str] | None
    pixel_size: tuple[float, float] | None
    image: np.ndarray | None = None


def describe_scene(path: str | Path, scene: int = 0) -> SceneImage:
    """Shape, dtype, channel names and pixel size of a scene from the file's metadata, without its pixels."""
    return _scene(Path(path), scene, read=False)


def read_scene(path: str | Path, scene: int = 0) -> SceneImage:
    """Scene ``scene`` of ``path`` with its pixels as (C, Y, X) in the file's dtype (RGB samples become
    channels). A scene with several z-planes or time points is refused as a z-stack TIFF is; an unreadable or
    truncated file is an InputError naming it."""
    return _scene(Path(path), scene, read=True)


def _scene(path: Path, scene: int, *, read: bool) -> SceneImage:
    fmt = bioio_format(path)
    image = open_image(path)
    try:
        scenes = image.scenes
        if not 0 <= scene < len(scenes):
            raise InputError(f"{path} has {len(scenes)} scene(s); scene {scene} does not exist.")
        image.set_scene(scene)
        dims = image.dims
        _refuse_stacks(path, scene, dims)
        samples = dims.S if "S" in dims.order else 1
        if samples > 1 and dims.C > 1:
            raise InputError(
                f"{path} has {dims.C} channels of {samples} colour samples each; phenossl reads either "
                "channels or RGB colours. Export the channels as separate grey-level planes."
            )
        channels = samples if samples > 1 else dims.C
        shape = (int(channels), int(dims.Y), int(dims.X))
        names = None if samples > 1 else _channel_names(image, channels)
        data = None
        if read:
            if samples > 1:
                data = np.moveaxis(np.asarray(image.get_image_data("YXS", T=0, C=0, Z=0)), -1, 0)
            else:
                extra = {"S": 0} if "S" in dims.order else {}
                data = np.asarray(image.get_image_data("CYX", T=0, Z=0, **extra))
        result = SceneImage(shape=shape, dtype=np.dtype(image.dtype), channel_names=names,
                            pixel_size=_pixel_size(image), image=data)
    except (InputError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - any parser failure: the file cannot be trusted
        raise _cannot_read(path, fmt, error) from None  # type: ignore[arg-type]
    return result


def _refuse_stacks(path: Path, scene: int, dims: Any) -> None:
    for letter, what in (("Z", "z-planes"), ("T", "time points")):
        size = getattr(dims, letter, 1)
        if size > 1:
            raise InputError(
                f"{path} (scene {scene}) has {size} {what} (dimensions {dims}). phenossl reads 2-D "
                "multi-channel fields: project or pick one plane first."
            )


def _channel_names(image: Any, n_channels: int) -> list[str] | None:
    try:
        names = [str(name) for name in image.channel_names]
    except Exception:  # noqa: BLE001 - a plugin without channel metadata
        return None
    if len(names) != n_channels or any(not name or _DEFAULT_CHANNEL_NAME.match(name) for name in names):
        return None
    return names


def _pixel_size(image: Any) -> tuple[float, float] | None:
    try:
        sizes = image.physical_pixel_sizes
    except Exception:  # noqa: BLE001 - a plugin without pixel sizes
        return None
    if sizes is None or sizes.Y is None or sizes.X is None:
        return None
    return float(sizes.Y), float(sizes.X)
