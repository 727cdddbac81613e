"""Batched augmentation on the training device: a composition turned into per-sample random views.

Every random parameter is drawn per sample from the caller's generator on the batch's device, so a batch of
identical tiles gives different views and a seed gives the same views again. The geometric transforms of a
sample are composed into one matrix and resampled once (:mod:`phenossl.augment.geometry`); the pixel-level
transforms follow in list order (:mod:`phenossl.augment.intensity`). Nothing reads values back to the host.

``AugmentedBatch.params`` (B, P) records what each sample got, for projectors conditioned on the augmentation
(CASSLE). Its columns are named by ``Augmenter.param_names`` as ``"<index>.<kind>.<name>"``, a block per
transform in list order:

==============  =====================================================================================
kind            names (``applied`` is 1.0 where the transform was drawn, else 0.0)
==============  =====================================================================================
rotation        applied, cos, sin  (counter-clockwise angle as displayed; 1, 0 when not applied)
center_crop     applied
random_crop     applied, width, height (fractions of the side), center_x, center_y (normalised [-1, 1])
flip            horizontal, vertical (1.0 where mirrored)
affine          applied, translate_x, translate_y (fractions of the side), scale, shear_x, shear_y (radians)
intensity       applied, brightness, contrast, gamma (means over channels when drawn per channel)
blur            applied, sigma (output pixels; 0 when not applied)
erasing         applied, width, height (fractions of the side; 0 when not applied), center_x, center_y
==============  =====================================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from phenossl.augment import geometry, intensity
from phenossl.augment.specs import GEOMETRIC_KINDS, CenterCrop, Composition, resolve_composition
from phenossl.errors import ConfigError, InputError

PARAM_NAMES: dict[str, tuple[str, ...]] = {**geometry.PARAM_NAMES, **intensity.PARAM_NAMES}


class AugmentedBatch(NamedTuple):
    """Views (B, C, out, out) in the input's dtype and device; params (B, P) float32, see ``param_names``."""

    views: torch.Tensor
    params: torch.Tensor


class Augmenter:
    """Callable turning a batch of tiles into one random view per tile, following a composition.

    ``Augmenter(composition, out_size)(x, generator)`` with ``x`` (B, C, S, S) floating point on the training
    device (channels_last and float16/bfloat16 welcome: the work runs in float32 and the views come back
    in the input's dtype and memory format) and an optional ``torch.Generator`` on the same device (without
    one, the device's default generator is used).
    """

    def __init__(self, composition: Composition, out_size: int) -> None:
        composition = resolve_composition(composition, None, None)  # training resolves 'auto' for its tiles first
        self.composition = composition
        self.out_size = _checked_out_size(out_size)
        self.param_names: tuple[str, ...] = tuple(
            f"{index}.{spec.kind}.{name}"
            for index, spec in enumerate(composition.transforms)
            for name in PARAM_NAMES[spec.kind]
        )
        geometric = [spec for spec in composition.transforms if spec.kind in GEOMETRIC_KINDS]
        self._moves_pixels = any(spec.p > 0 for spec in geometric)

    @property
    def param_dim(self) -> int:
        """P, the length of each sample's parameter vector (fixed by the composition, whatever C or B)."""
        return len(self.param_names)

    def __repr__(self) -> str:
        return f"Augmenter({self.composition.name!r}, out_size={self.out_size}, param_dim={self.param_dim})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> AugmentedBatch:
        _check_batch(x, generator)
        batch, channels = x.shape[:2]
        work = x.to(_working_dtype(x.dtype))
        rand = functools.partial(_uniform, generator=generator, device=x.device, dtype=work.dtype)
        matrices, pixel_steps, params = [], [], []
        for spec in self.composition.transforms:
            if spec.kind in GEOMETRIC_KINDS:
                drawn = geometry.draw_geometry(spec, rand, batch)
                matrices.append(drawn.matrix)
            else:
                drawn = intensity.draw_pixel_transform(spec, rand, batch, channels, self.out_size)
                pixel_steps.append(drawn.apply)
            params.append(drawn.params)
        if self._moves_pixels or x.shape[-1] != self.out_size:
            views = geometry.warp(
                work, geometry.compose(matrices, batch, x.device, work.dtype), self.out_size
            )
        else:
            views = work.clone()  # nothing moves: skip the resampling, the identity stays exact
        for apply in pixel_steps:
            views = apply(views)
        all_params = torch.cat(params, dim=1) if params else work.new_zeros((batch, 0))
        return AugmentedBatch(_like_input(views, x), all_params.float())


def eval_view(
    composition: Composition, out_size: int, *, angle: float = 0.0, flip: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic view for embedding tiles after training: the composition's centre crop (those with
    p >= 0.5, i.e. what most training views showed) and the resize; random transforms are left out.
    ``angle`` (degrees, counter-clockwise) and ``flip`` (left-right) turn the tile about its centre first:
    the views that :func:`eval_views` averages over."""
    composition = resolve_composition(composition, None, None)
    crops = [spec for spec in composition.transforms if spec.kind == "center_crop"]
    return functools.partial(_deterministic_view, crops=crops, out_size=_checked_out_size(out_size),
                             angle=float(angle), flip=bool(flip))


def eval_views(composition: Composition, out_size: int, average: str = "none") -> list[Callable]:
    """The views an embedding is averaged over: ``none`` (one view), ``d4`` (the 8 rotations by multiples of
    90 degrees, with and without a mirror: exact, no interpolation) or ``rot-N`` (N evenly spaced angles).
    Cells have no preferred orientation, so the average is an orientation-free embedding."""
    return [eval_view(composition, out_size, angle=angle, flip=flip) for angle, flip in orientations(average)]


def orientations(average: str) -> list[tuple[float, bool]]:
    """(angle in degrees, mirrored) of each view that ``average`` names (see :func:`eval_views`)."""
    if average == "none":
        return [(0.0, False)]
    if average == "d4":
        return [(90.0 * quarter, flip) for flip in (False, True) for quarter in range(4)]
    if average.startswith("rot-") and average[4:].isdigit() and 2 <= int(average[4:]) <= 360:
        n = int(average[4:])
        return [(360.0 * i / n, False) for i in range(n)]
    raise ConfigError(f"embed.average must be none, d4 or rot-N with 2 <= N <= 360 (e.g. rot-8); got {average!r}")


def _deterministic_view(
    x: torch.Tensor, *, crops: list[CenterCrop], out_size: int, angle: float = 0.0, flip: bool = False
) -> torch.Tensor:
    _check_batch(x, None)
    work = x.to(_working_dtype(x.dtype))
    matrix = geometry.center_crop_matrix(crops, x.shape[0], x.device, work.dtype)
    if angle or flip:
        matrix = geometry.orientation_matrix(angle, flip, x.device, work.dtype) @ matrix
    return _like_input(geometry.warp(work, matrix, out_size), x)


def preview_views(tile: np.ndarray, composition: Composition, n: int, seed: int, out_size: int) -> np.ndarray:
    """``n`` random views (n, C, out, out) float32 of one tile (C, H, W), reproducible with ``seed``: the live
    preview of a composition in the napari widget (CPU)."""
    tile = np.asarray(tile)
    if tile.ndim != 3:
        raise InputError(f"preview needs one tile shaped (C, H, W), got shape {tile.shape}")
    if n < 1:
        raise ConfigError(f"number of preview views must be at least 1, got {n}")
    batch = torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32))[None].expand(n, *tile.shape)
    generator = torch.Generator().manual_seed(int(seed))
    return Augmenter(composition, out_size)(batch.contiguous(), generator).views.numpy()


def _uniform(
    *shape: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the batch's device from the caller's generator (no host round trip)."""
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else runs in float32 (half-precision grid coordinates would misplace
    pixels by up to ~0.1 px on a 196 px tile)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _like_input(views: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Back to the input's dtype, and to channels_last when the input was (the encoder then needs no copy)."""
    views = views.to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        views = views.contiguous(memory_format=torch.channels_last)
    return views


def _checked_out_size(out_size: int) -> int:
    if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or out_size < 1:
        raise ConfigError(
            f"out_size (the training resolution in pixels) must be a positive integer, got {out_size!r}"
        )
    return int(out_size)


def _check_batch(x: torch.Tensor, generator: torch.Generator | None) -> None:
    """Shape, dtype and device checks only (metadata: no values are read, so no device sync)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"augmentation needs a batch of tiles shaped (B, C, S, S), got {shape}")
    if 0 in x.shape:
        raise InputError(f"augmentation needs a non-empty batch of tiles, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(
            f"augmentation needs normalised floating-point tiles, got {x.dtype}; normalise them first"
        )
    if x.shape[-1] != x.shape[-2]:
        raise InputError(f"augmentation needs square tiles, got {x.shape[-2]}x{x.shape[-1]} pixels")
    if generator is not None and not _same_device(generator.device, x.device):
        raise InputError(
            f"the generator is on {generator.device} but the batch is on {x.device}; "
            f"create it with torch.Generator(device=x.device)"
        )


def _same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' are the same device when one of them leaves the index unsaid."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
