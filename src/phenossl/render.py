"""Turning tiles and clusters into colours: shared by the overview PNG and the napari widgets."""

from __future__ import annotations

import functools

import numpy as np

# Channel order in BBBC021-style data is DNA, then cytoskeleton stains: DNA shown blue, as biologists expect.
_CHANNEL_COLOURS = {
    1: [(1.0, 1.0, 1.0)],
    2: [(0.2, 0.4, 1.0), (1.0, 0.9, 0.2)],
    3: [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2)],
}


#: The colours phenossl's channels are shown in (napari's blue / green / red / magenta stain colormaps and
#: the overview's DNA blue, tubulin green, actin red) and the black background: cluster colours keep away
#: from them, so that a cluster painted over a stain stays visible.
CHANNEL_RGB = np.array(
    [(0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2), (0, 0, 0)],
    dtype=np.float64,
)
PALETTE_NAME = "phenossl-distinct"
HUE_GAP = 25.0  # degrees of CIELAB hue between a cluster colour and any channel colour
NUCLEAR_HUE_GAP = 60.0  # ... and the nuclear stain's blue, which every painted nucleus lies on
NUCLEAR_ROWS = (0, 4)  # CHANNEL_RGB's blues


def cluster_colors(k: int) -> np.ndarray:
    """(k, 4) RGBA cluster colours, the ``phenossl-distinct`` palette: the same k always gives the same colours
    (napari, the overview PNG and other plugins through the ``cluster_color`` column all agree)."""
    return _distinct_palette(int(k)).copy()


@functools.cache
def _distinct_palette(k: int) -> np.ndarray:
    """Greedy farthest-point colours in CIELAB: each next colour is the candidate farthest (ΔE) from the
    background and every colour already taken, among bright-enough sRGB colours (L* 50-92, so they show on
    a dark plate) whose hue is not a channel's (more than HUE_GAP degrees from each chromatic channel
    colour's hue: a green cluster vanishes on green tubulin however far it is in ΔE). Distinct for ~10
    clusters; past that they get closer."""
    from skimage.color import rgb2lab

    steps = np.linspace(0.0, 1.0, 13)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = rgb2lab(grid[None])[0]
    avoid = rgb2lab(CHANNEL_RGB[None])[0]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1]))
    chromatic = np.hypot(avoid[:, 1], avoid[:, 2]) > 20
    avoid_hue = np.degrees(np.arctan2(avoid[chromatic, 2], avoid[chromatic, 1]))
    gap = np.abs((hue[:, None] - avoid_hue[None] + 180.0) % 360.0 - 180.0)
    # the nuclei are painted over the nuclear stain (blue): keep further from it than from the others
    wide = np.where(np.isin(np.flatnonzero(chromatic), NUCLEAR_ROWS), NUCLEAR_HUE_GAP, HUE_GAP)
    usable = (lab[:, 0] >= 50) & (lab[:, 0] <= 92) & ((gap > wide[None]).all(axis=1) | (chroma < 15))
    grid, lab = grid[usable], lab[usable]
    nearest = np.min(np.linalg.norm(lab[:, None, :] - avoid[None], axis=-1), axis=1)
    chosen = []
    for _ in range(max(k, 0)):
        best = int(np.argmax(nearest))
        chosen.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[best], axis=1))
    rgba = np.ones((len(chosen), 4), dtype=np.float32)
    rgba[:, :3] = grid[chosen]
    rgba.flags.writeable = False
    return rgba


def hex_colors(colors: np.ndarray) -> list[str]:
    """'#rrggbb' for each RGBA row: the ``cluster_color`` column other plugins can read."""
    rgb = np.clip(np.round(np.asarray(colors, dtype=np.float64)[:, :3] * 255), 0, 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


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
