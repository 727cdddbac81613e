"""The overview PNG of a run: clusters painted on the plate, and the cells nearest each centroid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_write
from phenossl.render import cluster_colors, composite_rgb, labels_to_cluster_rgba


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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = int(labels.max()) + 1
    colors = cluster_colors(k)
    fields = list(field_images or {})[:max_fields]
    n_nearest = max((len(v) for v in nearest.values()), default=0)
    has_umap = umap_xy is not None
    top_panels = len(fields) + int(has_umap)

    width = max(12.0, 3.2 * max(top_panels, 1))
    tile_inches = min(2.0, 0.95 * width / max(n_nearest, 1))  # square gallery tiles, no wide gaps
    fig = plt.figure(figsize=(width, 3.4 + tile_inches * k), layout="constrained")
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
    plt.close(fig)
    return Path(path)
