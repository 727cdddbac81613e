"""Turning tiles and clusters into colours: shared by the overview PNG and the napari widgets."""

from __future__ import annotations

import numpy as np

# Channel order in BBBC021-style data is DNA, then cytoskeleton stains: DNA shown blue, as biologists expect.
_CHANNEL_COLOURS = {
    1: [(1.0, 1.0, 1.0)],
    2: [(0.2, 0.4, 1.0), (1.0, 0.9, 0.2)],
    3: [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2)],
}


def cluster_colors(k: int) -> np.ndarray:
    """(k, 4) RGBA colours, distinct for up to 20 clusters (matplotlib's tab10/tab20), cycling beyond."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N) for i in range(k)], dtype=np.float32)


def composite_rgb(tile: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """An RGB (H, W, 3) float image of a (C, H, W) normalised tile, one colour per channel, additive."""
    tile = np.asarray(tile, dtype=np.float32)
    n_channels = tile.shape[0]
    colours = _CHANNEL_COLOURS.get(n_channels)
    if colours is None:  # many channels: spread them over the hue circle
        from matplotlib import colormaps

        hsv = colormaps["hsv"]
        colours = [hsv(i / n_channels)[:3] for i in range(n_channels)]
    scaled = np.clip((tile - low) / (high - low), 0.0, 1.0)
    rgb = np.tensordot(scaled, np.asarray(colours, dtype=np.float32), axes=([0], [0]))
    return np.clip(rgb, 0.0, 1.0)


def labels_to_cluster_rgba(labels: np.ndarray, label_to_cluster: dict[int, int], colors: np.ndarray) -> np.ndarray:
    """Paint each nucleus of a label image with its cluster's colour (transparent elsewhere)."""
    lut = np.zeros((int(labels.max()) + 1, 4), dtype=np.float32)
    for label, cluster in label_to_cluster.items():
        if 0 < label < len(lut):
            lut[label] = colors[cluster]
    return lut[labels]
