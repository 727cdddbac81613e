"""Geometric transforms as per-sample 3x3 sampling matrices, composed and applied in one resampling.

Every matrix maps a point of a transform's *output* to the point of its *input* that it shows, in normalised
coordinates (x right, y down, [-1, 1] spanning the image edges: ``align_corners=False``). A list of transforms
``T1, T2, ..., Tn`` (T1 applied first to the tile) therefore samples the tile at ``M1 @ M2 @ ... @ Mn @ out``.
Resizing to the output size is the identity in these coordinates, so it costs nothing; ``affine_grid`` +
``grid_sample`` then resample each tile once, whatever the number of transforms (no cumulative blur).

Angles are counter-clockwise as displayed (row 0 at the top), like ``torch.rot90(x, 1, dims=(-2, -1))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from phenossl.augment.specs import Affine, CenterCrop, Flip, RandomCrop, Rotation, kept_fraction

# rand(*shape) -> uniform [0, 1) tensor on the batch's device, from the caller's generator.
UniformSampler = Callable[..., torch.Tensor]

# Per-sample values each transform reports, in this order (see pipeline.Augmenter.param_names).
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "rotation": ("applied", "cos", "sin"),
    "center_crop": ("applied",),
    "random_crop": ("applied", "width", "height", "center_x", "center_y"),
    "flip": ("horizontal", "vertical"),
    "affine": ("applied", "translate_x", "translate_y", "scale", "shear_x", "shear_y"),
}

# Box shapes are drawn this many times per sample; the first that fits is kept (as torchvision does, batched).
SHAPE_ATTEMPTS = 10


@dataclass(frozen=True)
class GeometricDraw:
    """One transform drawn for a batch: ``matrix`` (B, 3, 3) output->input; ``params`` (B, k) as applied."""

    matrix: torch.Tensor
    params: torch.Tensor


def draw_geometry(
    spec: Rotation | CenterCrop | RandomCrop | Flip | Affine, rand: UniformSampler, batch: int
) -> GeometricDraw:
    """Draw the random parameters of one geometric spec, independently for each of ``batch`` samples."""
    drawers = {
        "rotation": _draw_rotation,
        "center_crop": _draw_center_crop,
        "random_crop": _draw_random_crop,
        "flip": _draw_flip,
        "affine": _draw_affine,
    }
    return drawers[spec.kind](spec, rand, batch)


def _draw_rotation(spec: Rotation, rand: UniformSampler, batch: int) -> GeometricDraw:
    applied, u = rand(batch) < spec.p, rand(batch)
    if spec.multiples_of_90:
        quarter = (u * 4).floor().clamp(max=3)
        # exact 0/1/-1 entries (no rounding in cos(pi/2)), so these views equal torch.rot90
        cos = (quarter == 0).to(u.dtype) - (quarter == 2).to(u.dtype)
        sin = (quarter == 1).to(u.dtype) - (quarter == 3).to(u.dtype)
    else:
        angle = (2 * u - 1) * math.radians(spec.degrees)
        cos, sin = angle.cos(), angle.sin()
    cos, sin = torch.where(applied, cos, 1.0), torch.where(applied, sin, 0.0)
    zero = torch.zeros_like(cos)
    matrix = _matrices(cos, -sin, zero, sin, cos, zero)
    return GeometricDraw(matrix, torch.stack([applied.to(u.dtype), cos, sin], dim=1))


def _draw_center_crop(spec: CenterCrop, rand: UniformSampler, batch: int) -> GeometricDraw:
    u = rand(batch)
    applied = (u < spec.p).to(u.dtype)
    fraction = 1 + applied * (spec.fraction - 1)
    zero = torch.zeros_like(fraction)
    return GeometricDraw(_matrices(fraction, zero, zero, zero, fraction, zero), applied[:, None])


def _draw_random_crop(spec: RandomCrop, rand: UniformSampler, batch: int) -> GeometricDraw:
    applied = rand(batch) < spec.p
    width, height = draw_box_shapes(rand, batch, spec.scale, spec.ratio)
    width = torch.where(applied, width, 1.0)
    height = torch.where(applied, height, 1.0)
    center_x = (2 * rand(batch) - 1) * (1 - width)  # uniform over the positions that keep the box inside
    center_y = (2 * rand(batch) - 1) * (1 - height)
    zero = torch.zeros_like(width)
    matrix = _matrices(width, zero, center_x, zero, height, center_y)
    params = torch.stack([applied.to(width.dtype), width, height, center_x, center_y], dim=1)
    return GeometricDraw(matrix, params)


def _draw_flip(spec: Flip, rand: UniformSampler, batch: int) -> GeometricDraw:
    u = rand(batch, 2)
    horizontal = ((u[:, 0] < spec.p) & spec.horizontal).to(u.dtype)
    vertical = ((u[:, 1] < spec.p) & spec.vertical).to(u.dtype)
    zero = torch.zeros_like(horizontal)
    matrix = _matrices(1 - 2 * horizontal, zero, zero, zero, 1 - 2 * vertical, zero)
    return GeometricDraw(matrix, torch.stack([horizontal, vertical], dim=1))


def _draw_affine(spec: Affine, rand: UniformSampler, batch: int) -> GeometricDraw:
    """Forward map ``out = s * Shx @ Shy @ in + t``; the sampling matrix is its closed-form inverse."""
    u = rand(batch)
    applied = (u < spec.p).to(u.dtype)
    translate = (2 * rand(batch, 2) - 1) * spec.translate * applied[:, None]  # fraction of the side
    low, high = spec.scale
    scale = 1 + applied * (low + (high - low) * rand(batch) - 1)
    shear = (2 * rand(batch, 2) - 1) * math.radians(spec.shear) * applied[:, None]
    tan_x, tan_y = shear.tan().unbind(1)
    shift_x, shift_y = (2 * translate).unbind(1)  # normalised coordinates span 2 per side
    # inverse of s * [[1, tx], [0, 1]] @ [[1, 0], [ty, 1]]  is  [[1, -tx], [-ty, 1 + tx*ty]] / s
    a, b, c, d = 1 / scale, -tan_x / scale, -tan_y / scale, (1 + tan_x * tan_y) / scale
    matrix = _matrices(a, b, -(a * shift_x + b * shift_y), c, d, -(c * shift_x + d * shift_y))
    params = torch.cat([applied[:, None], translate, scale[:, None], shear], dim=1)
    return GeometricDraw(matrix, params)


def draw_box_shapes(
    rand: UniformSampler, batch: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Width and height (fractions of the side) of boxes with area in ``scale`` and log-uniform width/height
    ``ratio``. Tries ``SHAPE_ATTEMPTS`` shapes per sample, keeps the first that fits (clamped if none fit)."""
    low, high = scale
    area = low + (high - low) * rand(batch, SHAPE_ATTEMPTS)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = (log_low + (log_high - log_low) * rand(batch, SHAPE_ATTEMPTS)).exp()
    width, height = (area * aspect).sqrt(), (area / aspect).sqrt()
    first_fit = ((width <= 1) & (height <= 1)).to(torch.uint8).argmax(dim=1, keepdim=True)
    return width.gather(1, first_fit)[:, 0].clamp(max=1), height.gather(1, first_fit)[:, 0].clamp(max=1)


def center_crop_matrix(
    specs: Sequence[CenterCrop], batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The deterministic geometry (centre crops that apply at least half the time) for embedding tiles."""
    matrix = torch.eye(3, device=device, dtype=dtype)
    matrix[0, 0] = matrix[1, 1] = kept_fraction(specs)
    return matrix.expand(batch, 3, 3)


def orientation_matrix(angle: float, flip: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(3, 3) sampling matrix of a turn by ``angle`` degrees (counter-clockwise as displayed) after an optional
    left-right mirror, about the tile centre. Multiples of 90 degrees have exact 0 / +-1 entries, so those
    views equal ``torch.rot90`` / ``torch.flip`` of the tile."""
    quarter = round(angle / 90.0)
    if math.isclose(angle, 90.0 * quarter, abs_tol=1e-9):
        cos, sin = ((1, 0), (0, 1), (-1, 0), (0, -1))[quarter % 4]
    else:
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    mirror = -1.0 if flip else 1.0
    # the view shows the tile turned by +angle: sample at R(-angle) @ out (see _draw_rotation), mirrored first
    return torch.tensor([[mirror * cos, -mirror * sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]],
                        device=device, dtype=dtype)


def compose(
    matrices: Sequence[torch.Tensor], batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``M1 @ M2 @ ... @ Mn``: the tile point shown by each output point when T1 is applied first."""
    composed = torch.eye(3, device=device, dtype=dtype).expand(batch, 3, 3)
    for matrix in matrices:
        composed = composed @ matrix
    return composed


def warp(x: torch.Tensor, matrix: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample each tile once through its matrix to ``out_size`` x ``out_size``; outside the tile is 0."""
    theta = matrix[:, :2, :].to(x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _matrices(*entries: torch.Tensor) -> torch.Tensor:
    """Stack six per-sample (B,) entries ``a..f`` into (B, 3, 3) ``[[a, b, c], [d, e, f], [0, 0, 1]]``."""
    zero = torch.zeros_like(entries[0])
    return torch.stack([*entries, zero, zero, zero + 1], dim=1).view(-1, 3, 3)
