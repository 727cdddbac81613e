"""Find and read multi-channel fields of view, from one TIFF per field or one TIFF per channel, a scene of a
microscope file (ND2, CZI, LIF, PNG... through bioio) or a field of an OME-Zarr HCS plate.

A *field* is one site of one well: the unit that is segmented and tiled. Discovery only lists and
parses names (:mod:`phenossl.io.discovery`, where the plate rule is documented); pixels are read one
field at a time by :func:`read_field`, so a whole plate never has to fit in memory. Naming rules are in
:mod:`phenossl.io.field_names`, single image files are read by :mod:`phenossl.io.images`; this module
reads whole fields and is where callers import all of it from.
"""

from __future__ import annotations

import numpy as np

from phenossl.errors import InputError
from phenossl.io.discovery import discover_fields, list_image_files
from phenossl.io.field_names import ChannelNames, channel_position
from phenossl.io.field_source import MULTICHANNEL_KEY, Field, FieldSource, field_table
from phenossl.io.formats import bioio_format, describe_scene, read_scene
from phenossl.io.images import (
    MAX_CHANNELS,
    MIN_IMAGE_SIZE,
    TIFF_SUFFIXES,
    ChannelAxis,
    check_pixels,
    guess_channel_axis,
    read_image_file,
    read_tiff_metadata,
    to_cyx,
)
from phenossl.io.omezarr import open_field as open_zarr_field
from phenossl.io.omezarr import read_field_pixels as read_zarr_field

__all__ = [
    "MAX_CHANNELS",
    "MIN_IMAGE_SIZE",
    "MULTICHANNEL_KEY",
    "TIFF_SUFFIXES",
    "ChannelAxis",
    "ChannelNames",
    "Field",
    "FieldSource",
    "check_pixels",
    "discover_fields",
    "field_table",
    "guess_channel_axis",
    "is_lazy_source",
    "list_image_files",
    "read_field",
    "read_image_file",
    "to_cyx",
]


def read_field(source: FieldSource, *, lazy: bool = False) -> Field:
    """Load one field as (C, Y, X) with its channel names, keeping the files' dtype.

    Per-channel files must each hold one 2-D plane of the same shape ("mismatched channel files"
    otherwise); different integer dtypes are promoted losslessly with numpy's rules.

    ``lazy``: a field of an OME-Zarr plate or a bioio file comes back as a dask array (its metadata read, its
    pixels not), for napari; TIFF fields are always read.
    """
    if source.is_multichannel_file:
        return _read_multichannel_field(source, lazy=lazy)
    planes, shapes = [], {}
    for role, path in source.paths.items():
        image = read_image_file(path, channel_axis="auto")
        if image.shape[0] != 1:
            raise InputError(
                f"{path} holds {image.shape[0]} channels, but it is the {role!r} file of field {source.key} "
                "and per-channel files must hold one. Read multi-channel files without a screening pattern."
            )
        planes.append(image[0])
        shapes[path.name] = image.shape[1:]
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise InputError(
            f"Field {source.key} has mismatched channel files (different shapes): {listed}. "
            "All channels of one field must have the same size."
        )
    dtype = np.result_type(*planes)
    image = np.stack([plane.astype(dtype, copy=False) for plane in planes])
    return _field_from(source, image, list(source.paths))


def is_lazy_source(source: FieldSource) -> bool:
    """Whether ``read_field(source, lazy=True)`` gives a dask array (OME-Zarr and bioio fields)."""
    path = source.paths.get(MULTICHANNEL_KEY)
    return path is not None and (path.is_dir() or bioio_format(path) is not None)


def _read_multichannel_field(source: FieldSource, *, lazy: bool = False) -> Field:
    path = source.paths[MULTICHANNEL_KEY]
    pixel_size = None
    where = str(path) if source.member is None else f"{path} ({source.member})"
    if path.is_dir():  # an OME-Zarr plate
        if lazy:
            opened = open_zarr_field(path, source.member or "")
            image, stored_names, pixel_size = opened.image, opened.channel_names, opened.pixel_size
        else:
            image, stored_names, pixel_size = read_zarr_field(path, source.member or "")
        check_pixels(image, where, check_finite=not lazy)
    elif bioio_format(path) is not None:
        scene = int(source.member or 0)
        if lazy:
            info = describe_scene(path, scene)
            import dask
            import dask.array as da

            pixels = dask.delayed(_scene_pixels, pure=True)(path, scene)
            image = da.from_delayed(pixels, shape=info.shape, dtype=info.dtype)
        else:
            info = read_scene(path, scene)
            image = info.image
        stored_names, pixel_size = info.channel_names, info.pixel_size
        check_pixels(image, where, check_finite=not lazy)
    else:
        array, axes, stored_names, pixel_size = read_tiff_metadata(path, int(source.member or 0))
        image = to_cyx(array, channel_axis=source.channel_axis, axes=axes, source=str(path))
        check_pixels(image, str(path))
    n_channels = image.shape[0]
    if stored_names is not None and len(stored_names) != n_channels:
        stored_names = None
    available = stored_names or [f"ch{i}" for i in range(n_channels)]
    if source.channel_map is not None:
        indices = [channel_position(key, available, path) for key, _ in source.channel_map]
        return _field_from(source, image[indices], [role for _, role in source.channel_map], pixel_size)
    if source.channel_names is not None:
        if len(source.channel_names) != n_channels:
            raise InputError(
                f"{path} has {n_channels} channel(s) (shape {image.shape}) but {len(source.channel_names)} "
                f"channel name(s) were given: {list(source.channel_names)}. Give one name per channel, or "
                "a mapping {index: name} to pick channels."
            )
        return _field_from(source, image, list(source.channel_names), pixel_size)
    return _field_from(source, image, list(available), pixel_size)


def _scene_pixels(path, scene: int) -> np.ndarray:
    return read_scene(path, scene).image


def _field_from(source: FieldSource, image: np.ndarray, names: list[str],
                pixel_size: tuple[float, float] | None = None) -> Field:
    return Field(
        image=image,
        channel_names=names,
        key=source.key,
        plate=source.plate,
        well=source.well,
        site=source.site,
        source_files=source.source_files,
        pixel_size=pixel_size,
    )
