"""Fields, their ground-truth tables, and the whole deterministic plate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from skimage import measure

from phenossl.errors import ConfigError, InputError
from phenossl.synthetic.cells import CellParams, draw_cell_params, place_nuclei
from phenossl.synthetic.layout import (
    CHANNELS,
    COMPOUNDS,
    DEFAULT_DENSITIES,
    DEFAULT_TREATMENTS,
    PHENOTYPES,
    PLATE_NAME,
    TILE_SIZE,
    phenotype_strength,
    plate_layout,
)
from phenossl.synthetic.rendering import AUTOFLUORESCENCE, camera, illumination, optics, render_cells
from phenossl.synthetic.shapes import paint_labels

NEIGHBOUR_RADIUS = 100  # px; the other local-density measure
FIELD_MARGIN = 40  # px simulated around each field so that cells are cut by its border, as in real images


@dataclass
class SyntheticPlate:
    """Synthetic fields with their ground truth.

    ``images`` (F, C, Y, X) uint16 in ``channel_names`` order; ``nuclei`` and ``cell_masks`` (F, Y, X)
    uint16 instance labels (a cell's mask has its nucleus' label; 0 is background); ``metadata`` one row
    per field (``field`` key, plate, well, site, compound, concentration, density_condition); ``cells`` one
    row per ground-truth nucleus (see ``cell_table``).
    """

    images: np.ndarray
    nuclei: np.ndarray
    cell_masks: np.ndarray
    metadata: pd.DataFrame
    cells: pd.DataFrame
    channel_names: tuple[str, ...] = CHANNELS

    @property
    def field_keys(self) -> list[str]:
        return list(self.metadata["field"])

    def field(self, key: str) -> np.ndarray:
        """The (C, Y, X) image of one field, by its key (``<plate>_<well>_s<site>``)."""
        if key not in self.field_keys:
            raise InputError(f"No field {key!r} in this plate; its fields are {self.field_keys}.")
        return self.images[self.field_keys.index(key)]


def local_density(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: other nuclei within NEIGHBOUR_RADIUS px; nuclei (itself included) in its TILE_SIZE tile."""
    offsets = centroids[:, None, :] - centroids[None, :, :]
    neighbours = (np.hypot(offsets[..., 0], offsets[..., 1]) <= NEIGHBOUR_RADIUS).sum(axis=1) - 1
    in_tile = (np.abs(offsets) <= TILE_SIZE / 2).all(axis=-1).sum(axis=1)
    return neighbours, in_tile


def cell_table(nuclei: np.ndarray, p: CellParams, field_row: dict) -> pd.DataFrame:
    """Ground truth per nucleus: position, treatment, phenotype strength, cell cycle, orientation, density.

    Cell ``label - 1`` is entry ``label - 1`` of ``p``. Centroids come from the mask, so they match what
    regionprops finds on the bundled masks.
    """
    props = measure.regionprops_table(nuclei, properties=("label", "centroid", "area", "bbox"))
    centroids = np.column_stack([props["centroid-0"], props["centroid-1"]])
    neighbours, in_tile = local_density(centroids)
    index = props["label"] - 1
    height, width = nuclei.shape
    touches_border = (
        (props["bbox-0"] == 0)
        | (props["bbox-1"] == 0)
        | (props["bbox-2"] == height)
        | (props["bbox-3"] == width)
    )
    compound = field_row["compound"]
    return pd.DataFrame(
        {
            "field": field_row["field"],
            "plate": field_row["plate"],
            "well": field_row["well"],
            "site": field_row["site"],
            "label": props["label"].astype(int),
            "centroid_y": np.round(centroids[:, 0], 3),
            "centroid_x": np.round(centroids[:, 1], 3),
            "compound": compound,
            "concentration": field_row["concentration"],
            "density_condition": field_row["density_condition"],
            "phenotype": COMPOUNDS[compound].phenotype,
            "phenotype_strength": np.round(p.strength[index], 4),
            "cell_cycle": np.where(p.g2[index], "G2", "G1"),
            "orientation_deg": np.round(np.degrees(p.orientation[index]) % 180, 2),
            "nucleus_area": props["area"].astype(int),
            "touches_border": touches_border,
            "neighbours_100px": neighbours,
            "cells_in_196px_tile": in_tile,
        }
    )


def crop_and_relabel(
    nuclei: np.ndarray, cells: np.ndarray, crop: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop the labels to the field; nuclei visible in it get labels 1..n in cell order.

    Returns the cropped nuclei, the cropped whole-cell masks (only cells whose nucleus is visible) and the
    original cell index of each new label.
    """
    nuclei, cells = nuclei[crop], cells[crop]
    visible = np.unique(nuclei[nuclei > 0])
    lookup = np.zeros(max(nuclei.max(), cells.max()) + 1, np.uint16)
    lookup[visible] = np.arange(1, visible.size + 1)
    return lookup[nuclei], lookup[cells], visible - 1


def make_field(
    rng: np.random.Generator,
    field_row: dict,
    cells_per_tile: float,
    field_size: int,
    min_distance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """One field: (C, Y, X) uint16 image, nuclei labels, whole-cell labels and its cell table."""
    side = field_size + 2 * FIELD_MARGIN
    n_cells = int(rng.poisson(cells_per_tile * side**2 / TILE_SIZE**2))
    centres = place_nuclei(rng, n_cells, (side, side), min_distance)
    compound = field_row["compound"]
    effect = PHENOTYPES[COMPOUNDS[compound].phenotype]
    params = draw_cell_params(rng, centres, effect, phenotype_strength(compound, field_row["concentration"]))
    nuclei, cells = paint_labels(params, (side, side))
    signal = render_cells(rng, params, nuclei, cells) + AUTOFLUORESCENCE[:, None, None]
    photons = optics(signal * illumination(rng, (side, side)), psf_sigma=rng.uniform(1.0, 1.4))
    crop = (slice(FIELD_MARGIN, FIELD_MARGIN + field_size),) * 2
    image = camera(rng, photons[(slice(None), *crop)])
    nuclei, cells, kept = crop_and_relabel(nuclei, cells, crop)
    return image, nuclei, cells, cell_table(nuclei, params.subset(kept), field_row)


def make_synthetic_plate(
    seed: int = 0,
    *,
    wells_per_condition: int = 1,
    sites_per_well: int = 1,
    field_size: int = 576,
    treatments: Sequence[tuple[str, float]] = DEFAULT_TREATMENTS,
    densities: dict[str, float] | None = None,
    min_distance: float = 28.0,
    plate: str = PLATE_NAME,
    field_keys: Sequence[str] | None = None,
) -> SyntheticPlate:
    """A deterministic synthetic plate: every treatment crossed with every density condition.

    ``densities`` maps a condition name to the expected number of cells per 196x196 px (default:
    sparse 2.5, dense 12). ``min_distance`` is the smallest distance between nucleus centres (px).
    ``field_keys`` generates only those fields (``<plate>_<well>_s<site>``), identical to the same fields
    of the whole plate: each field has its own random stream (seed, position in the layout).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if field_size < 64:
        raise ConfigError(f"field_size must be at least 64 px, got {field_size}.")
    densities = dict(DEFAULT_DENSITIES if densities is None else densities)
    if not densities or min(densities.values()) <= 0:
        raise ConfigError(f"densities must map condition names to positive cells per tile, got {densities}.")
    layout = plate_layout(treatments, tuple(densities), wells_per_condition, sites_per_well, plate)
    wanted = layout["field"].isin(layout["field"] if field_keys is None else list(field_keys))
    unknown = set(field_keys or ()) - set(layout["field"])
    if unknown or not wanted.any():
        raise ConfigError(f"Unknown field key(s) {sorted(unknown)}; this layout has {list(layout['field'])}.")
    metadata = layout[wanted].reset_index(drop=True)
    results = [
        make_field(
            np.random.default_rng([seed, index]),
            row,
            densities[row["density_condition"]],
            field_size,
            min_distance,
        )
        for index, row in layout[wanted].iterrows()
    ]
    images, nuclei, cells, tables = zip(*results)
    return SyntheticPlate(
        images=np.stack(images),
        nuclei=np.stack(nuclei),
        cell_masks=np.stack(cells),
        metadata=metadata,
        cells=pd.concat(tables, ignore_index=True),
    )
