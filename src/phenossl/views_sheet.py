"""A PNG of what a composition does to real cells: for each cell, its tile and several random views.

The command-line twin of the napari live preview (``phenossl compose ... --preview``): before a long
training run, a biologist can see which invariances a composition asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from phenossl.atomic import atomic_write
from phenossl.augment.pipeline import preview_views
from phenossl.augment.specs import Composition
from phenossl.errors import InputError
from phenossl.render import composite_rgb


def views_sheet(tiles: np.ndarray, composition: Composition, *, n_views: int, seed: int,
                out_size: int) -> list[list[np.ndarray]]:
    """Rows of RGB images: each cell's tile, then ``n_views`` views (pure; cell i uses seed + i)."""
    rows = []
    for i, tile in enumerate(np.asarray(tiles, dtype=np.float32)):
        views = preview_views(tile, composition, n_views, seed + i, out_size)
        rows.append([composite_rgb(tile)] + [composite_rgb(view) for view in views])
    return rows


def plot_views_sheet(path: str | Path, tiles: np.ndarray, cell_ids: Sequence[int], composition: Composition, *,
                     n_views: int = 6, seed: int = 0, out_size: int = 96, overwrite: bool = False) -> Path:
    """Write the sheet for ``tiles`` (N, C, S, S) of the cells ``cell_ids`` as a PNG, atomically."""
    if len(tiles) == 0:
        raise InputError("no cells to preview")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = views_sheet(tiles, composition, n_views=n_views, seed=seed, out_size=out_size)
    figure, axes = plt.subplots(len(rows), n_views + 1, figsize=(1.4 * (n_views + 1), 1.5 * len(rows)),
                                squeeze=False)
    for r, (row, cell_id) in enumerate(zip(rows, cell_ids, strict=True)):
        for c, image in enumerate(row):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"cell {cell_id}", fontsize=8)
    axes[0, 0].set_title("tile", fontsize=8)
    for c in range(1, n_views + 1):
        axes[0, c].set_title(f"view {c}", fontsize=8)
    figure.suptitle(f"composition '{composition.name}': {', '.join(t.kind for t in composition.transforms) or 'none'}"
                    f" ({out_size} px)", fontsize=9)
    figure.tight_layout()
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110), overwrite=overwrite)
    finally:
        plt.close(figure)
