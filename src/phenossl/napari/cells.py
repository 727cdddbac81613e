"""Nuclei labels, per-cell tables and cluster colours as napari wants them. Pure: arrays and tables only.

Label ids are unique across the whole plate (field 2's nuclei continue after field 1's), so one
``DirectLabelColormap`` can colour every cell by its own cluster, and the ``label`` column of
``layer.features`` names a cell without needing its field. The tile store keeps those same ids (the
labels are given to the core as they are), so a store row and a layer row meet on ``label``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenossl.errors import InputError
from phenossl.napari.plate import PlateInfo

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
UNTILED_COLOR = (0.55, 0.55, 0.55, 0.45)  # nuclei without a tile (border) or without a cluster yet
FEATURE_COLUMNS = (
    "label",
    "field",
    "field_index",
    "plate",
    "well",
    "site",
    "centroid_y",
    "centroid_x",
    "area",
)


def offset_labels(labels: np.ndarray, offset: int) -> np.ndarray:
    """``labels`` with every nucleus id shifted by ``offset`` (background stays 0), as int32."""
    labels = np.asarray(labels)
    out = labels.astype(np.int32, copy=True)
    out[labels > 0] += np.int32(offset)
    return out


def is_plate_unique(stack: np.ndarray) -> bool:
    """True when no nucleus id is used in two fields of an (F, Y, X) label stack."""
    seen: set[int] = set()
    for plane in stack:
        ids = set(np.unique(plane).tolist()) - {0}
        if ids & seen:
            return False
        seen |= ids
    return True


def make_plate_unique(stack: np.ndarray) -> np.ndarray:
    """Relabel an (F, Y, X) label stack so that ids never repeat between fields (field order kept)."""
    out = np.zeros(stack.shape, dtype=np.int32)
    offset = 0
    for f, plane in enumerate(stack):
        plane = np.asarray(plane)
        if plane.any():
            out[f] = offset_labels(plane, offset)
            offset = int(out[f].max())
    return out


def nuclei_table(stack: np.ndarray, info: PlateInfo) -> pd.DataFrame:
    """One row per nucleus of an (F, Y, X) plate-unique label stack: the base of the nuclei layers'
    features (layer_tables adds the tile-store row, treatments and results)."""
    from phenossl.tiles.extract import nucleus_table

    if stack.shape[0] != info.n_fields:
        raise InputError(f"the labels have {stack.shape[0]} field(s), the images {info.n_fields}")
    tables = []
    for f, key in enumerate(info.keys):
        height, width = info.shapes[f]
        table = nucleus_table(np.asarray(stack[f, :height, :width]))
        table.insert(1, "field", key)
        table.insert(2, "field_index", f)
        table.insert(3, "plate", info.plates[f])
        table.insert(4, "well", info.wells[f])
        table.insert(5, "site", info.sites[f])
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FEATURE_COLUMNS)
    return table[list(FEATURE_COLUMNS)]


def point_coordinates(table: pd.DataFrame, ndim: int) -> np.ndarray:
    """Centroids as Points data: (N, 3) [field, y, x] for stacks, (N, 2) [y, x] for a single 2-D field."""
    yx = table[["centroid_y", "centroid_x"]].to_numpy(dtype=float)
    if ndim == 2:
        return yx
    return np.column_stack([table["field_index"].to_numpy(dtype=float), yx])


def cluster_codes(features: pd.DataFrame) -> np.ndarray:
    """Each row's cluster as an int64 array, -1 where it has none (untiled) or there is no cluster column."""
    if "cluster" not in features:
        return np.full(len(features), -1, dtype=np.int64)
    column = features["cluster"]
    if isinstance(column.dtype, pd.CategoricalDtype):  # with_clusters' column: look the codes up once
        codes = column.cat.codes.to_numpy()
        ids = pd.to_numeric(pd.Series(column.cat.categories), errors="coerce")  # "noise" (HDBSCAN) is -1 too
        ids = np.append(ids.fillna(-1).to_numpy(dtype=np.int64), -1)
        return ids[codes]  # code -1 (missing) picks the appended -1
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def rgba_per_row(features: pd.DataFrame, colors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(N, 4) RGBA per row of ``features``: its cluster's colour, grey (UNTILED_COLOR) when it has none
    (or when ``colors`` has no colour for it: a stale cluster column while no clusters are shown)."""
    out = np.tile(np.asarray(UNTILED_COLOR, dtype=dtype), (len(features), 1))
    codes = cluster_codes(features)
    has = (codes >= 0) & (codes < len(colors))
    out[has] = np.asarray(colors, dtype=dtype)[codes[has]]
    return out


def label_color_dict(features: pd.DataFrame, colors: np.ndarray) -> dict:
    """``DirectLabelColormap`` colours: each nucleus its cluster's colour, untiled nuclei grey,
    background and unknown ids transparent. Built with numpy: it runs on the UI thread at every
    recluster, for every nucleus of the plate."""
    palette = [tuple(rgba) for rgba in np.asarray(colors, dtype=float).tolist()] + [UNTILED_COLOR]
    codes = cluster_codes(features)
    codes[codes >= len(colors)] = -1  # -1 (no cluster, or no colour for it) picks the last entry, grey
    labels = features["label"].to_numpy(dtype=np.int64).tolist()
    return {None: TRANSPARENT, 0: TRANSPARENT, **dict(zip(labels, map(palette.__getitem__, codes.tolist())))}


def point_colors(features: pd.DataFrame, colors: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA per point: its cluster's colour, grey when it has none."""
    return rgba_per_row(features, colors, dtype=np.float32)


@dataclass(frozen=True)
class CellLocation:
    """Where a cell is in the layers' data coordinates."""

    field_index: int
    y: float
    x: float
    field: str


def cell_location(cells: pd.DataFrame, cell_id: int, keys: Sequence[str]) -> CellLocation:
    """The field and centroid of store row ``cell_id``, with the field's position in the layer stack."""
    row = cells.iloc[int(cell_id)]
    key = str(row["field"])
    if key not in keys:
        raise InputError(f"cell {cell_id} is in field {key}, which is not among the layers' fields")
    return CellLocation(list(keys).index(key), float(row["centroid_y"]), float(row["centroid_x"]), key)


def field_inputs(
    images: Sequence[np.ndarray], channel_names: Sequence[str], labels: np.ndarray, info: PlateInfo
) -> list:
    """One ``FieldInput`` per field: its channels (C, h, w) and its labels exactly as in the Labels layer.

    A field's pixels are cut out of the layers when tiling reaches it, so lazy (dask) layers of an OME-Zarr
    plate or a microscope file are read one field at a time, never the whole plate at once."""
    from phenossl.io.fields import Field
    from phenossl.tiles.build import FieldInput

    inputs = []
    for f, key in enumerate(info.keys):
        height, width = info.shapes[f]

        def load(f: int = f, key: str = key, height: int = height, width: int = width) -> Field:
            image = np.stack([np.asarray(stack[f, :height, :width]) for stack in images])
            return Field(image=image, channel_names=list(channel_names), key=key, plate=info.plates[f],
                         well=info.wells[f], site=info.sites[f])

        inputs.append(FieldInput(key=key, load=load, labels=np.asarray(labels[f, :height, :width])))
    return inputs


def cell_count(n: int, what: str = "") -> str:
    """'1 cell selected', '27 cells selected': counts read as words in the widgets."""
    text = f"{n} cell" + ("" if n == 1 else "s")
    return f"{text} {what}" if what else text


SIZES_LISTED = 8  # cluster sizes named one by one in the status line up to this k


def cluster_sizes_text(sizes: np.ndarray) -> str:
    """'3 clusters of 40, 52 and 61 cells', or for many clusters '25 clusters of 3-160 cells (median 21)'."""
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    if k == 0:  # HDBSCAN found no dense group: every cell is noise
        return "no clusters"
    if k <= SIZES_LISTED:
        listed = ", ".join(str(s) for s in sizes[:-1].tolist()) + (" and " if k > 1 else "") + str(sizes[-1])
        return f"{k} cluster{'s' if k != 1 else ''} of {listed} cells"
    return f"{k} clusters of {sizes.min()}-{sizes.max()} cells (median {int(np.median(sizes))})"


def row_coordinates(
    cells: pd.DataFrame, rows: np.ndarray, keys: Sequence[str], ndim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points data for tile-store rows ``rows``: ``[field index, y, x]`` (its last ``ndim`` columns), for
    the rows whose field is among ``keys`` (the layers' fields). Returns the coordinates and those rows."""
    rows = np.asarray(rows, dtype=np.int64)
    table = cells.iloc[rows]
    field_index = table["field"].map({key: i for i, key in enumerate(keys)})
    known = field_index.notna().to_numpy()
    coords = np.column_stack(
        [
            field_index.to_numpy(dtype=float),
            table["centroid_y"].to_numpy(dtype=float),
            table["centroid_x"].to_numpy(dtype=float),
        ]
    )
    return coords[known][:, -ndim:], rows[known]


def marker_size(nuclei: pd.DataFrame | None, tile_size: int) -> float:
    """Rings a little larger than a nucleus: from the nuclei's median area when known, else a quarter tile."""
    if nuclei is not None and "area" in nuclei and len(nuclei):
        return float(2.6 * np.sqrt(np.median(nuclei["area"]) / np.pi))
    return float(max(12, tile_size // 4))


def tiles_report_text(store) -> str:
    """The status line after tiling: how many cells, where, and what was padded or left out."""
    report = store.info.get("report", {})
    skipped = report.get("skipped_border", 0)
    padded = report.get("padded", 0)
    return (
        f"{store.n_cells} cells tiled ({store.tile_size}px) into {store.path}"
        + (f"; {padded} tiles reach past the image edge and were padded with black" if padded else "")
        + (f"; {skipped} nuclei too close to a border were left out (grey)" if skipped else "")
    )
