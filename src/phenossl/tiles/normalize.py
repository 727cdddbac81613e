"""Robust per-channel intensity normalisation over a whole image set.

Per-image normalisation would erase real differences between wells (a compound that dims a stain
would look like DMSO), so the low/high percentiles are computed once over the image set and stored
with the run. To keep memory bounded for large plates, each image contributes a seeded random sample
of its pixels rather than all of them.
"""

from __future__ import annotations

import numpy as np

from phenossl.errors import InputError

#: Values beyond this range after normalisation are clipped, which keeps float16 storage finite
#: even for saturated pixels or a nearly constant channel.
CLIP_RANGE = (-1.0, 10.0)


class PercentileSampler:
    """Collect pixel samples image by image, then compute per-channel percentiles."""

    def __init__(self, n_channels: int, samples_per_image: int = 200_000, seed: int = 0):
        self.n_channels = n_channels
        self.samples_per_image = samples_per_image
        self._rng = np.random.default_rng(seed)
        self._samples: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        """Add one (C, ...) image or a (N, C, ...) stack of tiles."""
        if image.ndim >= 4:
            image = np.moveaxis(image, 1, 0)
        if image.shape[0] != self.n_channels:
            raise InputError(
                f"expected {self.n_channels} channels but got an image of shape {image.shape}; "
                "all images of a run must have the same channels"
            )
        flat = image.reshape(self.n_channels, -1)
        n = flat.shape[1]
        if n > self.samples_per_image:
            idx = np.sort(self._rng.choice(n, size=self.samples_per_image, replace=False))
            flat = flat[:, idx]
        self._samples.append(np.asarray(flat, dtype=np.float32))

    def percentiles(self, low: float = 0.5, high: float = 99.5) -> np.ndarray:
        """Return a (C, 2) array of [low, high] intensity per channel."""
        if not self._samples:
            raise InputError("no images were given to compute the intensity percentiles from")
        if not 0 <= low < high <= 100:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
        pixels = np.concatenate(self._samples, axis=1)
        lo_hi = np.percentile(pixels, [low, high], axis=1).T.astype(np.float64)
        flat = lo_hi[:, 1] - lo_hi[:, 0] <= 0
        if flat.any():
            # a constant channel: fall back to min/max so it maps to 0 instead of dividing by zero
            lo_hi[flat, 0] = pixels[flat].min(axis=1)
            lo_hi[flat, 1] = np.maximum(pixels[flat].max(axis=1), lo_hi[flat, 0] + 1.0)
        return lo_hi


def normalize_to_unit(image: np.ndarray, lo_hi: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Map each channel's [low, high] percentile to [0, 1] (float32), clipped to CLIP_RANGE."""
    lo_hi = np.asarray(lo_hi, dtype=np.float32)
    shape = [1] * image.ndim
    shape[channel_axis] = lo_hi.shape[0]
    lo = lo_hi[:, 0].reshape(shape)
    span = (lo_hi[:, 1] - lo_hi[:, 0]).reshape(shape)
    out = (image.astype(np.float32) - lo) / span
    return np.clip(out, *CLIP_RANGE, out=out)
