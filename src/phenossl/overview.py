"""The overview PNG of a run: clusters painted on the plate, and the cells nearest each centroid.

Drawn on a plain matplotlib ``Figure`` (no pyplot): napari saves runs from worker threads, and pyplot's global
figure list and backend switch belong to the main thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_write
from phenossl.errors import PhenosslError
from phenossl.render import cluster_colors, composite_rgb, labels_to_cluster_rgba

if TYPE_CHECKING:
    from phenossl.cluster.kmeans import Clustering
    from phenossl.config import RunConfig
    from phenossl.tiles.store import TileStore

logger = logging.getLogger(__name__)


def plot_overview(
    path: str | Path,
    cells: pd.DataFrame,
    labels: np.ndarray,
    nearest: dict[int, np.ndarray],
    tiles: np.ndarray,
    *,
    field_images: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    umap_xy: np.ndarray | None = None,
    title: str = "",
    max_fields: int = 4,
    overwrite: bool = True,
) -> Path:
    """Write the overview figure.

    ``labels`` are cluster ids per cell (row order of ``cells``); ``nearest`` maps cluster → cell
    indices nearest its centroid; ``field_images`` maps a field key → (nuclear image, nuclei labels)
    for painting clusters on the plate (cells need ``field`` and ``label`` columns).
    """
    from matplotlib.figure import Figure

    k = max(int(labels.max()) + 1, 1)
    colors = np.vstack([cluster_colors(k), [0.5, 0.5, 0.5, 1.0]])  # HDBSCAN's noise, -1: the last colour, grey
    fields = list(field_images or {})[:max_fields]
    n_nearest = max((len(v) for v in nearest.values()), default=0)
    has_umap = umap_xy is not None
    top_panels = len(fields) + int(has_umap)

    width = max(12.0, 3.2 * max(top_panels, 1))
    tile_inches = min(2.0, 0.95 * width / max(n_nearest, 1))  # square gallery tiles, no wide gaps
    fig = Figure(figsize=(width, 3.4 + tile_inches * k), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[3.2, tile_inches * k])
    top = grid[0].subgridspec(1, max(top_panels, 1))
    for i, key in enumerate(fields):
        ax = fig.add_subplot(top[0, i])
        image, nuclei = field_images[key]
        rows = cells.index[cells["field"] == key]
        mapping = dict(zip(cells.loc[rows, "label"].astype(int), labels[rows].astype(int)))
        lo, hi = np.percentile(image, [1, 99.5])
        ax.imshow(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray")
        ax.imshow(labels_to_cluster_rgba(nuclei, mapping, colors), alpha=0.6)
        ax.set_title(str(key), fontsize=8)
        ax.axis("off")
    if has_umap:
        ax = fig.add_subplot(top[0, top_panels - 1])
        ax.scatter(umap_xy[:, 0], umap_xy[:, 1], c=colors[labels], s=4, linewidths=0)
        ax.set_title("UMAP of the embeddings", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])

    gallery = grid[1].subgridspec(k, max(n_nearest, 1))
    for cluster in range(k):
        members = nearest.get(cluster, [])
        for j in range(max(n_nearest, 1)):
            ax = fig.add_subplot(gallery[cluster, j])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colors[cluster])
                spine.set_linewidth(3)
            if j < len(members):
                ax.imshow(composite_rgb(tiles[int(members[j])]))
            if j == 0:
                ax.set_ylabel(f"cluster {cluster}\n(n={int((labels == cluster).sum())})", fontsize=8)
    fig.suptitle(title or "phenossl clusters: on the plate, and the cells nearest each centroid", fontsize=10)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), overwrite=overwrite)
    return Path(path)


def write_run_overview(path: str | Path, config: RunConfig, store: TileStore, clustering: Clustering,
                       umap_xy: np.ndarray | None, max_fields: int = 4) -> Path:
    """A run's overview: its clusters on (up to ``max_fields``) plate fields, its UMAP, and the cells nearest
    each centroid, titled with the run's method, views and k."""
    field_images = {}
    if config.input.kind == "plate" and "field" in store.cells.columns:
        field_images = _nuclear_images(config, store, max_fields)
    title = (f"{config.name}: {config.train.method} / {config.train.encoder}, "
             f"A={config.train.composition_a.name} (w={config.train.weight_a:g}), "
             f"B={config.train.composition_b.name}, k={clustering.k}")
    return plot_overview(path, store.cells, clustering.labels, clustering.nearest, store.tiles,
                         field_images=field_images, umap_xy=None if umap_xy is None else np.asarray(umap_xy),
                         title=title, max_fields=max_fields)


def _nuclear_images(config: RunConfig, store: TileStore, max_fields: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Re-read the nuclear channel of the first fields (the store keeps labels, not raw images). A run whose
    images cannot be read again (a napari session's layers had no files, or the files moved) gets an overview
    without the plate panels rather than no saved clustering."""
    from phenossl.io import discover_fields, read_field
    from phenossl.tiles.build import nuclear_channel_index

    if not config.input.paths:
        return {}
    wanted = list(dict.fromkeys(store.cells["field"]))[:max_fields]
    images = {}
    try:
        sources = discover_fields(config.input.paths, channel_names=config.input.channel_names,
                                  pattern=config.input.filename_pattern, plate=config.input.plate,
                                  channel_axis=config.input.channel_axis)
        for source in sources:
            if source.key in wanted:
                fld = read_field(source)
                labels = store.labels(source.key)
                if labels is not None:
                    index = nuclear_channel_index(fld.channel_names, config.input.nuclear_channel)
                    images[source.key] = (fld.image[index], labels)
    except (PhenosslError, OSError) as exc:
        logger.warning("overview without the plate fields: the run's images could not be read again (%s)", exc)
        return {}
    return {key: images[key] for key in wanted if key in images}
