"""OME-Zarr HCS plates (NGFF ``plate`` -> ``well`` -> field images), read through ``ome-zarr``.

Layout (OME-NGFF 0.4 / 0.5)::

    MyPlate.zarr/              plate metadata: rows, columns, wells (``B/3``), name
      B/3/                     well metadata: its field images (``0``, ``1``, ...)
        0/                     one field: multiscales (level 0 is read), omero channel labels
        1/
      B/4/...

A plate is one phenossl field per well image: ``plate`` is the plate's name (else the folder's name without
``.zarr``), ``well`` the well (``B03``), ``site`` the field's position in the well's list plus one (field ``0`` is
site 1, as microscopes number sites), channel names the ``omero`` labels. Discovery reads only metadata (and checks
that every well exists and that all fields have the same channels); pixels are read one field at a time, as dask
arrays for napari.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phenossl.errors import InputError

ZARR_SUFFIXES = (".zarr",)
_METADATA_FILES = ("zarr.json", ".zattrs", ".zgroup")


def is_zarr(path: Path) -> bool:
    """A folder that is a Zarr group (v2 or v3), by its metadata files or a ``.zarr`` name."""
    return path.is_dir() and (path.name.lower().endswith(ZARR_SUFFIXES)
                              or any((path / name).is_file() for name in _METADATA_FILES))


def _attrs(path: Path) -> dict[str, Any]:
    """The OME attributes of a Zarr group (v3: ``attributes.ome``; v2: ``.zattrs``), {} when it has none."""
    v3 = path / "zarr.json"
    try:
        if v3.is_file():
            attributes = json.loads(v3.read_text()).get("attributes", {}) or {}
            return dict(attributes.get("ome", attributes))
        v2 = path / ".zattrs"
        if v2.is_file():
            return dict(json.loads(v2.read_text()))
    except (OSError, ValueError) as error:
        raise InputError(
            f"Cannot read the Zarr metadata of {path} ({type(error).__name__}: {error}); the store is corrupt or "
            "was not copied completely. Re-copy it."
        ) from None
    return {}


def plate_name(root: Path) -> str:
    attrs = _attrs(root).get("plate", {})
    name = attrs.get("name") if isinstance(attrs, dict) else None
    stem = root.name
    for suffix in (".ome.zarr", ".zarr"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return str(name) if name else stem


def _not_a_plate(root: Path) -> InputError:
    attrs = _attrs(root)
    plate_root = next((parent for parent in list(root.parents)[:3] if "plate" in _attrs(parent)), None)
    if plate_root is not None:
        return InputError(f"{root} is inside the OME-Zarr plate {plate_root}: open the plate folder itself.")
    if "well" in attrs:
        what = f"a well of an OME-Zarr plate; open the plate folder that holds it ({root.parent.parent})"
    elif "multiscales" in attrs:
        what = ("a single OME-Zarr image, not a plate; phenossl reads OME-Zarr HCS plates (plate -> wells -> "
                "fields): open the plate's root folder, or save the image as an OME-TIFF")
    else:
        what = ("not an OME-Zarr HCS plate (its root has no 'plate' metadata listing the wells). Open the plate's "
                "root folder (the one whose metadata lists rows, columns and wells)")
    return InputError(f"{root} is {what}.")


@dataclass(frozen=True)
class ZarrField:
    """One field image of a plate: its path inside the plate (``B/3/0``), well and site."""

    member: str
    well: str
    site: int


def plate_fields(root: str | Path) -> list[ZarrField]:
    """Every field of the plate at ``root``, from metadata only (no pixels), in the plate's well order.

    InputError naming the path for a Zarr that is not a plate, a well the plate lists but that is missing or
    has no field, and fields whose channel counts differ.
    """
    from phenossl.io.filenames import normalize_well

    root = Path(root)
    plate = _attrs(root).get("plate")
    if not isinstance(plate, dict) or not plate.get("wells"):
        raise _not_a_plate(root)
    fields: list[ZarrField] = []
    channels: dict[int, str] = {}
    for well in plate["wells"]:
        well_path = str(well.get("path", "")).strip("/")
        where = root / well_path
        images = _attrs(where).get("well", {}).get("images") if where.is_dir() else None
        if not images:
            raise InputError(
                f"The plate {root} lists well {well_path!r}, but {where} "
                f"{'is missing' if not where.is_dir() else 'has no well metadata listing its fields'}: the plate "
                "is incomplete (a copy that did not finish?). Re-copy or re-export the plate, or remove the well "
                "from the plate's metadata."
            )
        row, _, column = well_path.partition("/")
        name = normalize_well(f"{row}{column}")
        for index, image in enumerate(images):
            member = f"{well_path}/{str(image.get('path', index)).strip('/')}"
            n_channels = _channel_count(root, member)
            channels.setdefault(n_channels, member)
            if len(channels) > 1:
                listed = ", ".join(f"{where} has {n}" for n, where in channels.items())
                raise InputError(
                    f"The fields of the plate {root} have different numbers of channels ({listed}). phenossl "
                    "needs the same channels in every well: re-export the plate with the same channels everywhere, "
                    "or open the wells that match."
                )
            fields.append(ZarrField(member=member, well=name, site=index + 1))
    return fields


def _image_metadata(root: Path, member: str) -> tuple[dict[str, Any], list[str]]:
    """The first multiscale of a field image, and its axis names."""
    where = root / member
    attrs = _attrs(where) if where.is_dir() else {}
    multiscales = attrs.get("multiscales")
    if not multiscales:
        raise InputError(
            f"{where} is {'missing' if not where.is_dir() else 'not an OME-Zarr image (no multiscales metadata)'}, "
            f"but its well in the plate {root} lists it. Re-copy or re-export the plate."
        )
    axes = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in multiscales[0].get("axes", [])]
    return multiscales[0], axes


def _level0(root: Path, member: str) -> Any:
    """The full-resolution array of a field as a lazy dask array (ome-zarr's loader)."""
    from ome_zarr.io import parse_url

    multiscale, _ = _image_metadata(root, member)
    location = parse_url(str(root / member))
    if location is None:
        raise InputError(f"{root / member} cannot be opened as an OME-Zarr image. Re-copy or re-export the plate.")
    try:
        return location.load(multiscale["datasets"][0]["path"])
    except Exception as error:  # noqa: BLE001 - a store that does not open: its message is passed on
        raise InputError(
            f"Cannot read {root / member}: its pixels are missing or corrupt ({type(error).__name__}: {error}). "
            "Re-copy or re-export the plate."
        ) from None


def _channel_count(root: Path, member: str) -> int:
    multiscale, axes = _image_metadata(root, member)
    if "c" not in axes:
        return 1
    shape = _array_shape(root / member / multiscale["datasets"][0]["path"])
    return int(shape[axes.index("c")]) if shape is not None else int(_level0(root, member).shape[axes.index("c")])


def _array_shape(array_dir: Path) -> list[int] | None:
    """An array's shape from its metadata file (v3 ``zarr.json`` or v2 ``.zarray``), without opening it."""
    for name, key in (("zarr.json", "shape"), (".zarray", "shape")):
        path = array_dir / name
        if path.is_file():
            try:
                return list(json.loads(path.read_text())[key])
            except (OSError, ValueError, KeyError):
                return None
    return None


@dataclass
class ZarrImage:
    """One field as a (C, Y, X) dask array (nothing read yet), its channel names and pixel size (y, x)."""

    image: Any
    channel_names: list[str] | None
    pixel_size: tuple[float, float] | None


def open_field(root: str | Path, member: str) -> ZarrImage:
    """A plate field as a lazy (C, Y, X) array: z and t must be single planes (else InputError)."""
    root = Path(root)
    multiscale, axes = _image_metadata(root, member)
    data = _level0(root, member)
    where = root / member
    if len(axes) != data.ndim:
        axes = ["t", "c", "z", "y", "x"][-data.ndim:]
    for letter, what in (("z", "z-planes"), ("t", "time points")):
        if letter in axes and data.shape[axes.index(letter)] > 1:
            raise InputError(
                f"{where} has {data.shape[axes.index(letter)]} {what} (axes {''.join(axes)}, shape {data.shape}). "
                "phenossl reads 2-D multi-channel fields: project or pick one plane first."
            )
    index = tuple(0 if name in ("t", "z") else slice(None) for name in axes)
    data = data[index]
    kept = [name for name in axes if name not in ("t", "z")]
    if "c" not in kept:
        data, kept = data[None], ["c", *kept]
    data = data.transpose([kept.index("c"), kept.index("y"), kept.index("x")])
    return ZarrImage(image=data, channel_names=_omero_names(root, member, data.shape[0]),
                     pixel_size=_pixel_size(multiscale, axes))


def read_field_pixels(root: str | Path, member: str) -> tuple[np.ndarray, list[str] | None, tuple[float, float] | None]:
    """A plate field's pixels in memory as (C, Y, X), with its channel names and pixel size."""
    opened = open_field(root, member)
    try:
        pixels = np.asarray(opened.image)
    except Exception as error:  # noqa: BLE001 - a chunk that does not decode: its message is passed on
        raise InputError(
            f"Cannot read {Path(root) / member}: its pixels are missing or corrupt ({type(error).__name__}: "
            f"{error}). Re-copy or re-export the plate."
        ) from None
    return pixels, opened.channel_names, opened.pixel_size


def _omero_names(root: Path, member: str, n_channels: int) -> list[str] | None:
    channels = _attrs(root / member).get("omero", {}).get("channels") or []
    names = [str(channel.get("label") or "") for channel in channels if isinstance(channel, dict)]
    return names if len(names) == n_channels and all(names) else None


_UNITS_IN_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6, "angstrom": 1e-4}


def _pixel_size(multiscale: dict[str, Any], axes: list[str]) -> tuple[float, float] | None:
    """The level-0 scale of y and x in micrometres, when the axes name a length unit (a scale without a unit is
    a placeholder: ome-zarr writes 1 when it is not told)."""
    if "y" not in axes or "x" not in axes:
        return None
    units = {str(a.get("name", "")).lower(): a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict)}
    factors = [_UNITS_IN_UM.get(str(units.get(axis)).lower()) for axis in ("y", "x")]
    scale = None
    for transform in multiscale["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform.get("scale")
    if not scale or len(scale) != len(axes) or None in factors:
        return None
    return float(scale[axes.index("y")]) * factors[0], float(scale[axes.index("x")]) * factors[1]


def write_plate(
    root: str | Path,
    images: dict[str, list[np.ndarray]],
    channel_names: list[str],
    *,
    name: str | None = None,
    pixel_size: float | None = None,
) -> Path:
    """Write an OME-Zarr HCS plate with ``ome-zarr``: ``images`` maps a well (``B03``) to its fields' (C, Y, X)
    arrays. Used by ``phenossl synthetic --format ome-zarr`` and the tests."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    from phenossl.io.filenames import normalize_well

    root = Path(root)
    wells = {}
    for well in images:
        normal = normalize_well(well)
        wells[well] = (normal[0], str(int(normal[1:])))
    rows = sorted({row for row, _ in wells.values()})
    columns = sorted({column for _, column in wells.values()}, key=int)
    store = parse_url(str(root), mode="w").store
    group = zarr.group(store=store)
    write_plate_metadata(group, rows, columns, [f"{r}/{c}" for r, c in wells.values()],
                         name=name or plate_name(root), field_count=max(len(f) for f in images.values()))
    omero = {"channels": [{"label": label} for label in channel_names]}
    physical = {"scale": {"y": pixel_size, "x": pixel_size}, "axes_units": {"y": "micrometer", "x": "micrometer"}}
    for well, fields in images.items():
        row, column = wells[well]
        well_group = group.require_group(row).require_group(column)
        write_well_metadata(well_group, [str(i) for i in range(len(fields))])
        for index, field_image in enumerate(fields):
            write_image(np.asarray(field_image), well_group.require_group(str(index)), axes="cyx", scale_factors=[],
                        metadata={"omero": omero}, **(physical if pixel_size else {}))
    return root
