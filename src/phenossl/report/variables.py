"""The per-cell variables a clustering may follow: nuisance or simple biology (density, nucleus size, stain
levels, position on the plate) and the treatments of the metadata.

Each variable is computed from what the tile store really holds; one the store cannot give (pre-cropped cells
have no field, so no density) is returned as *not available* with the reason, never estimated. Tiles are read
in chunks from the memory map, so 100k cells never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from phenossl.tiles.store import TileStore

NUISANCE = "nuisance"
TREATMENT = "treatment"
CATEGORICAL = "categorical"
CONTINUOUS = "continuous"

#: a numeric treatment with at most this many values is a set of levels (doses), not a continuum
MAX_LEVELS = 20
RADIUS_DIAMETERS = 3.0  # neighbours are counted within this many nucleus diameters
DEFAULT_RADIUS_PX = 50.0  # when the store knows no nucleus size
CHUNK_BYTES = 32 * 2**20  # float32 tile bytes read at once


@dataclass(frozen=True)
class Variable:
    """One per-cell variable: ``values`` (one per cell, NaN / None where unknown), or None with the reason it
    is not available in ``note``."""

    name: str
    group: str  # NUISANCE or TREATMENT
    kind: str  # CATEGORICAL or CONTINUOUS
    values: np.ndarray | None
    note: str = ""

    @property
    def available(self) -> bool:
        return self.values is not None


def missing(name: str, group: str, kind: str, reason: str) -> Variable:
    return Variable(name, group, kind, None, f"not available: {reason}")


DENSITY_NAMES = ("nuclei_per_field", "neighbours", "neighbours_in_tile")
FAMILIES = {**dict.fromkeys(DENSITY_NAMES, "local density"), "nucleus_area": "nucleus size",
            "border_distance": "position in the field", "plate": "plate position", "well": "plate position",
            "site": "plate position"}


def family(name: str, group: str) -> str:
    """What a variable measures, for the reading: local density, nucleus size, stain levels...; a treatment is
    its own family."""
    if group == TREATMENT:
        return name
    return FAMILIES.get(name, "stain levels")


def neighbour_counts(centroids: np.ndarray, all_nuclei: np.ndarray, radius: float, p: float = 2) -> np.ndarray:
    """For each cell (row of ``centroids``), the other nuclei of its field (``all_nuclei``, the cell itself among
    them) whose centroids lie within ``radius`` px (``p=inf``: within the square of half-side ``radius``)."""
    from scipy.spatial import cKDTree

    if len(centroids) == 0:
        return np.zeros(0)
    counts = cKDTree(all_nuclei).query_ball_point(centroids, r=radius, p=p, return_length=True)
    return np.maximum(np.asarray(counts, dtype=np.float64) - 1, 0)


def border_distance(centroids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Distance (px) from each centroid (y, x) to the nearest edge of its (height, width) field."""
    y, x = centroids[:, 0], centroids[:, 1]
    return np.minimum.reduce([y, x, height - 1 - y, width - 1 - x]).astype(np.float64)


def density_variables(cells: pd.DataFrame, fields: dict[str, tuple[np.ndarray, tuple[int, int] | None]],
                      radius: float, source: str, tile_size: int) -> list[Variable]:
    """Nuclei per field, neighbours within ``radius``, other nuclei inside the cell's tile (what the network
    sees) and distance to the field border for every cell.

    ``fields`` maps a field key to (the centroids (n, 2) of all its nuclei, its (height, width) or None);
    ``source`` says where those centroids came from, for the notes."""
    n = len(cells)
    per_field, neighbours, border = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    in_tile = np.full(n, np.nan)
    shapes_known = all(shape is not None for _, shape in fields.values())
    all_centroids = cells[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    for key, rows in cells.groupby("field", sort=False).indices.items():
        nuclei, shape = fields[key]
        centroids = all_centroids[rows]
        per_field[rows] = len(nuclei)
        neighbours[rows] = neighbour_counts(centroids, nuclei, radius)
        in_tile[rows] = neighbour_counts(centroids, nuclei, tile_size / 2, p=np.inf)
        if shape is not None:
            border[rows] = border_distance(centroids, *shape)
    out = [Variable("nuclei_per_field", NUISANCE, CONTINUOUS, per_field, f"nuclei counted in {source}"),
           Variable("neighbours", NUISANCE, CONTINUOUS, neighbours,
                    f"other nuclei within {radius:.0f} px of the cell's centroid ({source})"),
           Variable("neighbours_in_tile", NUISANCE, CONTINUOUS, in_tile,
                    f"other nuclei centred inside the cell's {tile_size} px tile ({source})")]
    if shapes_known:
        out.append(Variable("border_distance", NUISANCE, CONTINUOUS, border,
                            "px from the centroid to the nearest field edge"))
    else:
        out.append(missing("border_distance", NUISANCE, CONTINUOUS,
                           "the field size is unknown (the store kept no label images of its fields)"))
    return out


def store_fields(store: TileStore) -> tuple[dict[str, tuple[np.ndarray, tuple[int, int] | None]], str]:
    """Each field's nuclei centroids and size: from its kept label image (every nucleus, those whose tile was
    skipped at the border too), else from the cell table (the tiled cells only, size unknown)."""
    from phenossl.tiles.extract import nucleus_table

    cells = store.cells
    fields: dict[str, tuple[np.ndarray, tuple[int, int] | None]] = {}
    from_labels = 0
    all_centroids = cells[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    for key, rows in cells.groupby("field", sort=False).indices.items():
        labels = store.labels(str(key))
        if labels is not None:
            table = nucleus_table(labels)
            fields[key] = (table[["centroid_y", "centroid_x"]].to_numpy(np.float64), tuple(labels.shape))
            from_labels += 1
        else:
            fields[key] = (all_centroids[rows], None)
    source = ("the field's segmentation" if from_labels == len(fields)
              else "the tiled cells of the field" if from_labels == 0
              else f"the segmentation of {from_labels}/{len(fields)} fields, the tiled cells elsewhere")
    return fields, source


def nucleus_area(store: TileStore) -> Variable:
    """The nucleus area (px): the segmentation's, else the tile's central-nucleus mask."""
    if "area" in store.cells.columns:
        area = pd.to_numeric(store.cells["area"], errors="coerce").to_numpy(np.float64)
        return Variable("nucleus_area", NUISANCE, CONTINUOUS, area, "px, from the segmentation")
    masks = store.masks
    if masks is None:
        return missing("nucleus_area", NUISANCE, CONTINUOUS, "the store has neither nucleus areas nor masks")
    chunk = max(1, CHUNK_BYTES // store.tile_size ** 2)
    area = np.concatenate([np.asarray(masks[i:i + chunk], dtype=bool).sum(axis=(1, 2))
                           for i in range(0, store.n_cells, chunk)]).astype(np.float64)
    area[area == 0] = np.nan  # no nucleus found in that crop
    return Variable("nucleus_area", NUISANCE, CONTINUOUS, area, "px, from the tile's nucleus mask")


def intensity_means(tiles: np.ndarray, masks: np.ndarray | None, chunk: int) -> tuple[np.ndarray, ...]:
    """Per cell and channel: the mean inside the nucleus mask, outside it (the rest of the tile), and over the
    whole tile; read ``chunk`` tiles at a time. Without masks the first two are None."""
    n, n_channels = tiles.shape[:2]
    inside = np.full((n, n_channels), np.nan) if masks is not None else None
    outside = np.full((n, n_channels), np.nan) if masks is not None else None
    whole = np.empty((n, n_channels))
    for start in range(0, n, chunk):
        block = np.asarray(tiles[start:start + chunk], dtype=np.float32)
        stop = start + len(block)
        whole[start:stop] = block.mean(axis=(2, 3))
        if masks is not None:
            mask = np.asarray(masks[start:stop], dtype=bool)[:, None]
            n_in = mask.sum(axis=(2, 3))
            total = block.sum(axis=(2, 3), dtype=np.float64)
            in_sum = np.where(mask, block, 0).sum(axis=(2, 3), dtype=np.float64)
            n_out = block.shape[2] * block.shape[3] - n_in
            with np.errstate(invalid="ignore", divide="ignore"):
                inside[start:stop] = np.where(n_in > 0, in_sum / n_in, np.nan)
                outside[start:stop] = np.where(n_out > 0, (total - in_sum) / n_out, np.nan)
    return inside, outside, whole


def intensity_variables(store: TileStore) -> list[Variable]:
    """Each channel's mean intensity inside and around the nucleus, and the tile's overall brightness, in the
    store's normalised units (one percentile scale per channel for the whole plate)."""
    names = store.channel_names
    per_tile = len(names) * store.tile_size ** 2 * 4
    inside, outside, whole = intensity_means(store.tiles, store.masks, max(1, CHUNK_BYTES // per_tile))
    out = []
    for c, name in enumerate(names):
        if inside is None:
            out.append(missing(f"{name}_nucleus", NUISANCE, CONTINUOUS, "the store has no nucleus masks"))
            out.append(Variable(f"{name}_tile", NUISANCE, CONTINUOUS, whole[:, c], "mean over the whole tile"))
        else:
            out.append(Variable(f"{name}_nucleus", NUISANCE, CONTINUOUS, inside[:, c], "mean inside the nucleus"))
            out.append(Variable(f"{name}_around", NUISANCE, CONTINUOUS, outside[:, c],
                                "mean over the tile outside the nucleus"))
    out.append(Variable("brightness", NUISANCE, CONTINUOUS, whole.mean(axis=1), "mean of every channel and pixel"))
    return out


def position_variables(cells: pd.DataFrame) -> list[Variable]:
    """Plate, well and site as categories; one that has a single value has nothing to follow."""
    out = []
    for column in ("plate", "well", "site"):
        if column not in cells.columns:
            out.append(missing(column, NUISANCE, CATEGORICAL, f"the cell table has no '{column}' column"))
            continue
        values = cells[column].astype(object).where(cells[column].notna(), None).to_numpy()
        distinct = cells[column].dropna().unique()
        if len(distinct) < 2:
            out.append(missing(column, NUISANCE, CATEGORICAL, f"one value only ({distinct[0] if len(distinct) else 'none'})"))
        else:
            out.append(Variable(column, NUISANCE, CATEGORICAL, values, f"{len(distinct)} values"))
    return out


def treatment_names(cells: pd.DataFrame, label_columns: Sequence[str] | None = None) -> list[str]:
    """The treatment columns: the run's ``label_columns`` when it names them, then every other column of the
    metadata (``treatment_column_names``, the napari plugin's and the exports' rule too)."""
    from phenossl.cluster.metrics import label_columns_to_score
    from phenossl.io.metadata import CELL_COLUMNS, treatment_column_names

    named = label_columns_to_score(cells, label_columns) if label_columns else []
    position = {"field", "plate", "well", "site"}  # nuisance rows already, even when the run scores them
    candidates = dict.fromkeys([*named, *treatment_column_names(list(cells.columns))])
    return [c for c in candidates if c not in CELL_COLUMNS and c not in position]


def treatment_variables(cells: pd.DataFrame, label_columns: Sequence[str] | None = None) -> list[Variable]:
    """One variable per treatment column: levels (text, or numbers with few values such as doses) are
    categorical, many numeric values continuous."""
    out = []
    for column in treatment_names(cells, label_columns):
        series = cells[column]
        distinct = series.dropna().unique()
        if len(distinct) < 2:
            out.append(missing(column, TREATMENT, CATEGORICAL, f"one value only ({distinct[0] if len(distinct) else 'none'})"))
            continue
        numeric = pd.api.types.is_numeric_dtype(series)
        if numeric and len(distinct) > MAX_LEVELS:
            out.append(Variable(column, TREATMENT, CONTINUOUS, series.to_numpy(np.float64), "numeric"))
        else:
            values = series.astype(object).where(series.notna(), None).to_numpy()
            out.append(Variable(column, TREATMENT, CATEGORICAL, values, f"{len(distinct)} levels"))
    return out


def neighbour_radius(store: TileStore) -> float:
    """The radius within which neighbours are counted: a few nucleus diameters."""
    diameter = store.nucleus_diameter
    return RADIUS_DIAMETERS * diameter if diameter else DEFAULT_RADIUS_PX


def store_variables(store: TileStore, label_columns: Sequence[str] | None = None,
                    radius: float | None = None) -> list[Variable]:
    """Every variable of section 1 the store allows: density, border, nucleus area, intensities, plate / well /
    site (nuisance), then the treatments."""
    cells = store.cells
    has_fields = {"field", "centroid_y", "centroid_x"} <= set(cells.columns)
    if has_fields:
        fields, source = store_fields(store)
        density = density_variables(cells, fields, radius or neighbour_radius(store), source, store.tile_size)
    else:
        reason = "the store holds pre-cropped cells without field positions (no field / centroid columns)"
        density = [missing(name, NUISANCE, CONTINUOUS, reason)
                   for name in (*DENSITY_NAMES, "border_distance")]
    return [*density, nucleus_area(store), *intensity_variables(store), *position_variables(cells),
            *treatment_variables(cells, label_columns)]
