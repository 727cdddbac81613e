"""Plate fields as napari layers, and back: one Image layer per channel, fields stacked on a leading axis.

A plate is many fields (sites) of C channels. napari shows it best as one (F, Y, X) Image layer per
channel (additive blending, DNA blue), so the field slider walks the plate. What each field is (key,
plate, well, site, its own size, its files, its treatment) travels in ``layer.metadata["phenossl"]``
as plain data, so the widgets can cut each field back out exactly as the core read it. Pure: no Qt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.errors import InputError

META_KEY = "phenossl"

#: Colour by stain name first (what biologists expect), by position otherwise.
STAIN_COLORMAPS: dict[str, str] = {
    "dna": "blue",
    "dapi": "blue",
    "hoechst": "blue",
    "nuclei": "blue",
    "nucleus": "blue",
    "tubulin": "green",
    "microtubules": "green",
    "actin": "red",
    "phalloidin": "red",
}
POSITION_COLORMAPS: tuple[str, ...] = ("blue", "green", "red", "magenta", "cyan", "yellow", "gray")
NUCLEAR_NAMES = ("dna", "dapi", "hoechst", "nuclei", "nucleus", "h33342")


@dataclass
class PlateInfo:
    """What each field of an (F, Y, X) stack is. Stored as a plain dict in ``layer.metadata``."""

    keys: list[str]
    shapes: list[tuple[int, int]]  # each field's own (height, width): stacks are padded to the largest
    plates: list[str | None] = field(default_factory=list)
    wells: list[str | None] = field(default_factory=list)
    sites: list[int | None] = field(default_factory=list)
    channel: str | None = None
    source_paths: list[str] = field(default_factory=list)  # what the reader was given (for the run config)
    channel_map: dict[str, str] | None = None  # file-name channel token -> name, when names were mapped
    metadata_path: str | None = None  # the treatment table joined to the fields, if any
    field_table: list[dict[str, Any]] | None = None  # one row per field (key + treatment columns)

    def __post_init__(self) -> None:
        n = len(self.keys)
        self.shapes = [tuple(int(v) for v in s) for s in self.shapes]
        for name in ("plates", "wells", "sites"):
            if not getattr(self, name):
                setattr(self, name, [None] * n)

    @property
    def n_fields(self) -> int:
        return len(self.keys)

    @property
    def padded(self) -> bool:
        return len(set(self.shapes)) > 1

    def to_metadata(self) -> dict[str, Any]:
        return {META_KEY: asdict(self)}

    def field_metadata(self) -> pd.DataFrame | None:
        """The per-field treatment table (``key`` column) for ``build_store_from_fields``, if known."""
        return None if not self.field_table else pd.DataFrame(self.field_table)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> PlateInfo | None:
        data = (metadata or {}).get(META_KEY)
        if not isinstance(data, Mapping) or "keys" not in data:
            return None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    @classmethod
    def for_array(cls, shape: Sequence[int], name: str | None = None) -> PlateInfo:
        """Plain arrays (no reader metadata): a 2-D image is one field, a 3-D one a stack of fields."""
        fields, height, width = field_stack_shape(shape)
        stem = name or "field"
        keys = [stem] if fields == 1 else [f"{stem}_f{i + 1}" for i in range(fields)]
        return cls(keys=keys, shapes=[(height, width)] * fields, channel=name)


def treatment_columns(info: PlateInfo) -> list[str]:
    """The per-field columns that describe a treatment (compound, dose, density...): what clusters are
    scored against (AMI). File names and field coordinates are not treatments."""
    from phenossl.io.metadata import treatment_column_names

    return treatment_column_names([c for row in info.field_table or [] for c in row])


def field_stack_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(fields, height, width) of an image layer's data: (Y, X) is one field, (F, Y, X) many."""
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    raise InputError(
        f"phenossl needs 2-D fields or a stack of fields (F, Y, X), one layer per channel; this layer has "
        f"shape {tuple(shape)}. Split RGB or multi-channel layers into one layer per channel "
        "(right-click the layer > Split Stack) and keep one plane per field."
    )


def as_field_stack(data: Any) -> Any:
    """View (Y, X) data as (1, Y, X); (F, Y, X) data is returned as it is (numpy or dask, not loaded)."""
    field_stack_shape(data.shape)
    return data[None] if data.ndim == 2 else data


def channel_name(layer: Any) -> str:
    """A channel layer's stain name: the reader's channel name, else the layer's name."""
    info = PlateInfo.from_metadata(getattr(layer, "metadata", None))
    return info.channel if info is not None and info.channel else str(layer.name)


def stain_colormap(name: str, position: int) -> str:
    return STAIN_COLORMAPS.get(name.lower(), POSITION_COLORMAPS[position % len(POSITION_COLORMAPS)])


def guess_nuclear_index(names: Sequence[str]) -> int:
    """The channel most likely to be the nuclear stain (DNA, DAPI, Hoechst...), else the first."""
    for index, name in enumerate(names):
        if name.lower() in NUCLEAR_NAMES:
            return index
    return 0


def display_limits(stack: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.8)) -> tuple[float, float]:
    """Contrast limits from robust percentiles of a subsample, so dim stains are visible at once."""
    sample = np.asarray(stack).ravel()[:: max(1, stack.size // 2_000_000)]
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high if high > low else low + 1)


def stack_fields(images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Stack (Y, X) planes of possibly different sizes into (F, Ymax, Xmax), padding with zeros at the
    bottom/right (each field keeps its pixel coordinates). Returns the stack and the original shapes."""
    shapes = [tuple(int(v) for v in image.shape) for image in images]
    height = max(s[0] for s in shapes)
    width = max(s[1] for s in shapes)
    dtype = np.result_type(*images)
    stack = np.zeros((len(images), height, width), dtype=dtype)
    for i, image in enumerate(images):
        stack[i, : image.shape[0], : image.shape[1]] = image
    return stack, shapes


def stack_fields_lazy(images: Sequence[Any]) -> tuple[Any, list[tuple[int, int]]]:
    """``stack_fields`` for dask (or numpy) planes without reading them: a dask (F, Ymax, Xmax) stack, each
    field padded at the bottom/right, read one field at a time when napari shows it."""
    import dask.array as da

    shapes = [tuple(int(v) for v in image.shape) for image in images]
    height = max(s[0] for s in shapes)
    width = max(s[1] for s in shapes)
    planes = [da.asarray(image) for image in images]
    planes = [plane if plane.shape == (height, width) else
              da.pad(plane, ((0, height - plane.shape[0]), (0, width - plane.shape[1])))
              for plane in planes]
    return da.stack(planes), shapes


def plate_layer_data(
    fields: Sequence[Any],
    *,
    source_paths: Sequence[str | os.PathLike] = (),
    channel_map: Mapping[str, str] | None = None,
    metadata_path: str | os.PathLike | None = None,
    field_table: pd.DataFrame | None = None,
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """napari layer data tuples, one Image layer per channel, for fields read by ``io.read_field``.

    Fields read lazily (dask arrays: OME-Zarr plates, bioio files) stay lazy: the layers are dask stacks and only
    the first field is read, for the contrast limits."""
    if not fields:
        raise InputError("no fields to show")
    names = list(fields[0].channel_names)
    for fld in fields:
        if list(fld.channel_names) != names:
            raise InputError(f"field {fld.key} has channels {fld.channel_names}, the first field had {names}")
    table = None
    if field_table is not None:
        table = [{k: _plain(v) for k, v in row.items()} for row in field_table.to_dict("records")]
    layers = []
    shapes: list[tuple[int, int]] = []
    lazy = any(not isinstance(fld.image, np.ndarray) for fld in fields)
    first = np.asarray(fields[0].image) if lazy else None
    for c, name in enumerate(names):
        if lazy:
            stack, shapes = stack_fields_lazy([fld.image[c] for fld in fields])
        else:
            stack, shapes = stack_fields([fld.image[c] for fld in fields])
        info = PlateInfo(
            keys=[fld.key for fld in fields],
            shapes=shapes,
            plates=[fld.plate for fld in fields],
            wells=[fld.well for fld in fields],
            sites=[None if fld.site is None else int(fld.site) for fld in fields],
            channel=name,
            source_paths=[str(Path(p).resolve()) for p in source_paths],
            channel_map=dict(channel_map) if channel_map else None,
            metadata_path=None if metadata_path is None else str(Path(metadata_path).resolve()),
            field_table=table,
        )
        data = stack if len(fields) > 1 else stack[0]
        kwargs = {
            "name": name,
            "colormap": stain_colormap(name, c),
            "blending": "additive",
            "contrast_limits": display_limits(first[c] if lazy else stack),
            "metadata": info.to_metadata(),
        }
        layers.append((data, kwargs, "image"))
    return layers


def padding_note(shapes: Sequence[tuple[int, int]]) -> str | None:
    """A sentence for the user when fields of different sizes had to be padded to stack them."""
    if len(set(shapes)) <= 1:
        return None
    sizes = sorted(set(shapes))
    return (
        f"The fields have different sizes ({', '.join(f'{h}x{w}' for h, w in sizes[:4])}"
        f"{', ...' if len(sizes) > 4 else ''}); they are padded with zeros to stack them. "
        "Segmentation and tiles use each field's own size."
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def layer_plate(layer: Any) -> PlateInfo:
    """What each field of an image layer is: the reader's PlateInfo, else one field (2-D) or a plain stack."""
    return PlateInfo.from_metadata(getattr(layer, "metadata", None)) or PlateInfo.for_array(
        layer.data.shape, layer.name
    )


def stack_shape_text(layer: Any) -> str:
    """'8 fields of 576 x 576' for a layer, for labels in the widgets."""
    fields, height, width = field_stack_shape(layer.data.shape)
    return f"{fields} field{'s' if fields != 1 else ''} of {height} x {width}"


def plate_from_store(store: Any, layers: Sequence[Any] = ()) -> PlateInfo:
    """The fields of a reopened tile store, in the open images' field order when one of ``layers`` is a plate
    holding every field of the store; else rebuilt from the store (its keys, label shapes, plate / well /
    site columns)."""
    keys = store.field_keys()
    shown = (PlateInfo.from_metadata(getattr(layer, "metadata", None)) for layer in layers)
    image_info = next((info for info in shown if info is not None), None)
    if image_info is not None and set(image_info.keys) >= set(keys):
        return image_info
    per_field = store.cells.drop_duplicates("field").set_index("field")

    def column(name: str) -> list:
        return [per_field[name].get(k) if name in per_field else None for k in keys]

    has_sites = "site" in per_field
    sites = [int(per_field["site"][k]) if has_sites and k in per_field.index else None for k in keys]
    return PlateInfo(
        keys=keys,
        shapes=[store.labels(key).shape for key in keys],
        plates=column("plate"),
        wells=column("well"),
        sites=sites,
    )


def check_tile_inputs(image_layers: Sequence[Any], nuclear_layer: Any, labels_layer: Any) -> list:
    """The channel layers to tile (the nuclear one first if it was not ticked), or an InputError saying
    what to fix. Layers are read for their name, data shape and metadata only."""
    if not image_layers:
        raise InputError("tick at least one image layer (channel) to put in the tiles")
    if labels_layer is None:
        raise InputError("segment the nuclei first (or pick a Labels layer of nuclei)")
    if nuclear_layer is None:
        raise InputError("pick the nuclear stain (an image layer) to tile around")
    image_layers = list(image_layers)
    if nuclear_layer not in image_layers:
        image_layers = [nuclear_layer, *image_layers]
    names = [channel_name(layer) for layer in image_layers]
    if len(set(names)) != len(names):
        raise InputError(f"two channel layers have the same name ({names}); rename one")
    shapes = {tuple(layer.data.shape) for layer in image_layers}
    if len(shapes) != 1:
        raise InputError(
            "the channel layers must have the same shape (fields x height x width); got "
            + ", ".join(f"{layer.name} {tuple(layer.data.shape)}" for layer in image_layers)
        )
    if tuple(labels_layer.data.shape) != shapes.pop():
        raise InputError(
            f"the labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, "
            f"the images {tuple(nuclear_layer.data.shape)}"
        )
    return image_layers


def run_input_section(info: PlateInfo, names: Sequence[str], nuclear: str) -> dict[str, Any]:
    """The run config's input section, so the CLI can redo a napari run from the files."""
    tokens = {name: token for token, name in (info.channel_map or {}).items()}
    section: dict[str, Any] = {
        "kind": "plate",
        "paths": list(info.source_paths),
        "channel_names": {tokens.get(name, name): name for name in names},
        "nuclear_channel": nuclear,
    }
    if info.metadata_path:
        section["metadata"] = info.metadata_path
    return section
