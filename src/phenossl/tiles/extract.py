"""Cut one fixed-size tile per nucleus, centred on its centroid.

Pure functions on arrays: the caller decides where images come from and where tiles go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, InputError

BorderPolicy = Literal["skip", "pad"]


@dataclass(frozen=True)
class TileCut:
    """Tiles of one image and the nuclei they belong to."""

    tiles: np.ndarray  # (n, C, size, size)
    cells: pd.DataFrame  # one row per tile: label, centroid_y, centroid_x, area, padded
    n_skipped_border: int
    masks: np.ndarray | None = None  # (n, size, size) bool: the central nucleus of each tile, when labels given
    rows: np.ndarray | None = None  # (n,) the position in ``nuclei`` of each tile's nucleus


def tile_cells(nuclei: pd.DataFrame, rows: np.ndarray, padded: np.ndarray) -> pd.DataFrame:
    """The cell table of tiles cut around the nuclei at positions ``rows`` of ``nuclei`` (``padded``: which of
    them reach past the image border)."""
    cells = nuclei.iloc[rows].reset_index(drop=True).copy()
    cells["padded"] = padded
    return cells


def nucleus_table(labels: np.ndarray) -> pd.DataFrame:
    """Label, centroid (y, x) and area of every nucleus in an instance label image."""
    from skimage.measure import regionprops_table

    if labels.ndim != 2:
        raise InputError(f"nuclei labels must be a 2-D image, got shape {labels.shape}")
    props = regionprops_table(np.asarray(labels), properties=("label", "centroid", "area"))
    return pd.DataFrame(
        {
            "label": props["label"].astype(np.int64),
            "centroid_y": props["centroid-0"],
            "centroid_x": props["centroid-1"],
            "area": props["area"].astype(np.int64),
        }
    )


def _tile_origins(nuclei: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of each tile so that the centroid falls on the tile's centre pixel."""
    half = size // 2
    y0 = np.round(nuclei["centroid_y"].to_numpy()).astype(np.int64) - half
    x0 = np.round(nuclei["centroid_x"].to_numpy()).astype(np.int64) - half
    return y0, x0


def tiles_inside(nuclei: pd.DataFrame, size: int, height, width) -> np.ndarray:
    """Which nuclei's ``size`` tiles lie wholly inside their image (``height``/``width``: scalars or per row)."""
    y0, x0 = _tile_origins(nuclei, size)
    return (y0 >= 0) & (x0 >= 0) & (y0 + size <= np.asarray(height)) & (x0 + size <= np.asarray(width))


def cut_tiles(
    image: np.ndarray,
    nuclei: pd.DataFrame,
    size: int = 196,
    border: BorderPolicy = "skip",
    pad_value: float = 0.0,
    labels: np.ndarray | None = None,
) -> TileCut:
    """Cut a (C, size, size) tile around each nucleus of ``nuclei`` (from :func:`nucleus_table`).

    ``border="skip"`` drops nuclei whose tile would leave the image (counted in ``n_skipped_border``);
    ``"pad"`` keeps them and fills the outside with ``pad_value`` (0 is background after normalisation).
    With the image's nuclei ``labels`` (Y, X), each tile also gets the mask of its own nucleus (the pixels
    of its label, not its neighbours'), which the CellProfiler measurements need.
    """
    if image.ndim != 3:
        raise InputError(f"expected a (C, Y, X) image, got shape {image.shape}")
    if size < 8:
        raise ConfigError(f"tile size must be at least 8 px, got {size}")
    if border not in ("skip", "pad"):
        raise ConfigError(f"border policy must be 'skip' or 'pad', got {border!r}")
    n_channels, height, width = image.shape
    y0, x0 = _tile_origins(nuclei, size)
    inside = tiles_inside(nuclei, size, height, width)
    keep = inside if border == "skip" else np.ones_like(inside)
    kept = np.flatnonzero(keep)

    if labels is not None and labels.shape != (height, width):
        raise InputError(f"labels of shape {labels.shape} do not match the image's {(height, width)}")
    tiles = np.empty((len(kept), n_channels, size, size), dtype=image.dtype)
    masks = np.empty((len(kept), size, size), dtype=bool) if labels is not None else None
    if border == "pad" and not inside.all():
        margin = size
        source = np.pad(image, ((0, 0), (margin, margin), (margin, margin)), constant_values=pad_value)
        label_source = None if labels is None else np.pad(labels, margin)
        shift = margin
    else:
        source, label_source, shift = image, labels, 0
    label_ids = nuclei["label"].to_numpy()
    for out_index, row in enumerate(kept):
        ys, xs = y0[row] + shift, x0[row] + shift
        tiles[out_index] = source[:, ys : ys + size, xs : xs + size]
        if masks is not None:
            masks[out_index] = label_source[ys : ys + size, xs : xs + size] == label_ids[row]

    cells = tile_cells(nuclei, kept, ~inside[kept])
    return TileCut(tiles=tiles, cells=cells, n_skipped_border=int((~keep).sum()), masks=masks, rows=kept)
