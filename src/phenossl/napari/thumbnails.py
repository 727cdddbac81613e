"""Gallery thumbnails that show morphology: the part of each tile the model embedded (its centre crop), with the
central nucleus outlined, at a size the user picks. Pure numpy (no Qt), so the images can be made in a worker
and tested on their own."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenossl.render import composite_rgb

#: White: visible on every channel colour (blue DNA, green/yellow/red cytoskeleton) and on the dark background.
OUTLINE_RGB = (255, 255, 255)
#: Without a centre crop in the run (measured cells, random crops, ``embed.view: full``), the gallery shows about
#: this many nucleus diameters around the nucleus: roughly one cell (what ``center_crop: auto`` keeps too).
DEFAULT_DIAMETERS = 3.0
MIN_FRACTION = 0.2


@dataclass(frozen=True)
class ThumbnailView:
    """Which central square of a tile a thumbnail shows: ``crop_px`` of the ``tile_size`` px side."""

    fraction: float
    tile_size: int
    reason: str  # in words, for the gallery's note

    @property
    def crop_px(self) -> int:
        """The crop's side: the same parity as the tile's, so that it sits exactly on the tile's centre."""
        margin = round((self.tile_size - self.fraction * self.tile_size) / 2)
        return int(min(self.tile_size, max(self.tile_size % 2 or 2, self.tile_size - 2 * margin)))

    @property
    def start(self) -> int:
        return (self.tile_size - self.crop_px) // 2

    def describe(self) -> str:
        if self.crop_px == self.tile_size:
            return f"the whole {self.tile_size} px tile ({self.reason})"
        return f"the central {self.crop_px} px of the {self.tile_size} px tile ({self.reason})"


def embedded_view(config, nucleus_diameter: float | None, tile_size: int) -> ThumbnailView:
    """The centre crop a run's encoder saw when it embedded the cells (the main composition's crops, ``auto``
    resolved for these tiles as training resolves it); for runs that embed no crop, ~3 nucleus diameters."""
    from phenossl.augment.specs import kept_fraction, resolve_composition

    if config.representation != "cellprofiler" and config.embed.view == "auto":
        composition = resolve_composition(config.train.main_composition(), nucleus_diameter, tile_size)
        fraction = float(kept_fraction(composition.transforms))
        if fraction < 1.0:
            return ThumbnailView(fraction, int(tile_size), f"the centre crop the run embedded, {composition.name}")
        why = "the run embeds the whole tile"
    elif config.representation == "cellprofiler":
        why = "the run measured the cells"
    else:
        why = "the run embeds the whole tile"
    if not nucleus_diameter:
        return ThumbnailView(1.0, int(tile_size), f"{why}; nucleus size unknown")
    fraction = float(np.clip(DEFAULT_DIAMETERS * nucleus_diameter / tile_size, MIN_FRACTION, 1.0))
    return ThumbnailView(fraction, int(tile_size), f"{why}: about {DEFAULT_DIAMETERS:g} nucleus diameters shown")


def _resize_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resample one axis to ``size`` samples: box-averaged by an integer factor first when shrinking (no
    aliasing), then linear with pixel centres aligned (as ``align_corners=False``)."""
    n = image.shape[axis]
    factor = n // size
    if factor >= 2:
        n_keep = (n // factor) * factor
        start = (n - n_keep) // 2
        image = np.take(image, np.arange(start, start + n_keep), axis=axis)
        shape = list(image.shape)
        shape[axis : axis + 1] = [n_keep // factor, factor]
        image = image.reshape(shape).mean(axis=axis + 1)
        n = image.shape[axis]
    if n == size:
        return image
    centres = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    weight_shape = [1] * image.ndim
    weight_shape[axis] = size
    weight = (centres - low).reshape(weight_shape).astype(image.dtype)
    return np.take(image, low, axis=axis) * (1 - weight) + np.take(image, high, axis=axis) * weight


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, ...) float image resampled to (size, size, ...)."""
    return _resize_axis(_resize_axis(np.asarray(image, dtype=np.float32), size, 0), size, 1)


def outline(mask: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the contour of a nucleus mask at thumbnail size (resampled smoothly, then thresholded,
    so it is no staircase); 2 px wide (inside and outside the edge) on thumbnails of 128 px and more. A nucleus
    cut by the crop gets no line along the crop's edge."""
    inside = resize_image(np.asarray(mask, dtype=np.float32), size) >= 0.5
    padded = np.pad(inside, 1, mode="edge")
    up, down, left, right = padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]
    edge = inside & ~(up & down & left & right)
    if size >= 128:
        edge |= ~inside & (up | down | left | right)
    return edge


def thumbnail(tile: np.ndarray, mask: np.ndarray | None, view: ThumbnailView, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the ``view`` crop of a normalised (C, S, S) tile in the channel colours, with its
    nucleus ``mask`` (S, S) outlined in OUTLINE_RGB (no outline without a mask)."""
    if size < 8:
        raise ValueError(f"a thumbnail must be at least 8 px, got {size}")
    tile = np.asarray(tile)
    if tile.ndim != 3 or tile.shape[1] != view.tile_size or tile.shape[2] != view.tile_size:
        raise ValueError(f"tile of shape {tile.shape} does not match {view.tile_size} px tiles")
    box = slice(view.start, view.start + view.crop_px)
    rgb = composite_rgb(np.asarray(tile[:, box, box], dtype=np.float32))
    image = (np.clip(resize_image(rgb, size), 0.0, 1.0) * 255).astype(np.uint8)
    if mask is not None:
        image[outline(np.asarray(mask)[box, box], size)] = OUTLINE_RGB
    return np.ascontiguousarray(image)


def gallery_thumbnails(
    tiles: np.ndarray, masks: np.ndarray | None, cells: dict[int, list[int]], view: ThumbnailView, size: int
) -> dict[int, list[np.ndarray]]:
    """The thumbnails of each cluster's cells (``cells``: cluster -> store rows), read from the (memory-mapped)
    tiles and masks of a store; one read of the rows, in order."""
    rows = sorted({row for members in cells.values() for row in members})
    if not rows:
        return {cluster: [] for cluster in cells}
    tile_of = dict(zip(rows, np.asarray(tiles[rows]), strict=True))
    mask_of = dict(zip(rows, np.asarray(masks[rows]), strict=True)) if masks is not None else {}
    return {
        cluster: [thumbnail(tile_of[row], mask_of.get(row), view, size) for row in members]
        for cluster, members in cells.items()
    }
