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


#: pixels drawn from each image (per channel) for the set-wide percentiles
SAMPLES_PER_IMAGE = 200_000


class PercentileSampler:
    """Collect pixel samples image by image, then compute per-channel percentiles.

    One seeded random stream serves the images in order, so the percentiles depend on the images' order.
    A distributed build draws each field's sample elsewhere (:func:`draw_sample`, from :meth:`state`) and
    keeps the stream in step with :meth:`skip`: the same samples, hence the same percentiles, as adding the
    images here one after the other.
    """

    def __init__(self, n_channels: int, samples_per_image: int = SAMPLES_PER_IMAGE, seed: int = 0):
        self.n_channels = n_channels
        self.samples_per_image = samples_per_image
        self._rng = np.random.default_rng(seed)
        self._samples: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        """Add one (C, ...) image or a (N, C, ...) stack of tiles."""
        self._samples.append(draw_sample(image, self.n_channels, self.samples_per_image, self._rng))

    def add_sample(self, sample: np.ndarray) -> None:
        """Add a (C, k) sample that :func:`draw_sample` drew from this sampler's :meth:`state`."""
        if sample.ndim != 2 or sample.shape[0] != self.n_channels:
            raise InputError(f"expected a ({self.n_channels}, k) pixel sample, got shape {sample.shape}")
        self._samples.append(np.asarray(sample, dtype=np.float32))

    def state(self) -> dict:
        """The random stream's state: what :func:`draw_sample` needs to draw the next image's sample."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Put the random stream in ``state`` (from :meth:`state`)."""
        self._rng.bit_generator.state = state

    def skip(self, n_pixels: int) -> None:
        """Advance the stream as :meth:`add` of an image of ``n_pixels`` pixels per channel would."""
        _draw_indices(self._rng, n_pixels, self.samples_per_image)

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


def _draw_indices(rng: np.random.Generator, n: int, samples: int) -> np.ndarray | None:
    """The sorted pixel indices sampled from an image of ``n`` pixels (None: all of them, no draw)."""
    if n <= samples:
        return None
    return np.sort(rng.choice(n, size=samples, replace=False))


def generator_at(state: dict) -> np.random.Generator:
    """A random generator in ``state`` (from :meth:`PercentileSampler.state`)."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def draw_sample(image: np.ndarray, n_channels: int, samples_per_image: int,
                rng: np.random.Generator | None) -> np.ndarray:
    """(C, k) float32: up to ``samples_per_image`` pixels of every channel of a (C, ...) image or a (N, C, ...)
    stack, drawn from ``rng`` (all of them when there are fewer: then no ``rng`` is needed)."""
    if image.ndim >= 4:
        image = np.moveaxis(image, 1, 0)
    if image.shape[0] != n_channels:
        raise InputError(
            f"expected {n_channels} channels but got an image of shape {image.shape}; "
            "all images of a run must have the same channels"
        )
    flat = image.reshape(n_channels, -1)
    idx = _draw_indices(rng, flat.shape[1], samples_per_image)
    if idx is not None:
        flat = flat[:, idx]
    return np.asarray(flat, dtype=np.float32)


def normalize_to_unit(image: np.ndarray, lo_hi: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Map each channel's [low, high] percentile to [0, 1] (float32), clipped to CLIP_RANGE."""
    lo_hi = np.asarray(lo_hi, dtype=np.float32)
    shape = [1] * image.ndim
    shape[channel_axis] = lo_hi.shape[0]
    lo = lo_hi[:, 0].reshape(shape)
    span = (lo_hi[:, 1] - lo_hi[:, 0]).reshape(shape)
    out = (image.astype(np.float32) - lo) / span
    return np.clip(out, *CLIP_RANGE, out=out)
