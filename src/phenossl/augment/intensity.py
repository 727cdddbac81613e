"""Pixel-level transforms applied to the resampled views: intensity jitter, Gaussian blur, random erasing.

Each transform is drawn for the whole batch at once (:func:`draw_pixel_transform`) and applied with masks and
broadcasting, one tensor operation for all samples, so nothing waits on the host. Samples that do not get a
transform receive its identity parameters (gamma 1, contrast 1, brightness 0, sigma 0, empty box), which leave
them unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from phenossl.augment.geometry import UniformSampler, draw_box_shapes
from phenossl.augment.specs import Blur, Erasing, Intensity

PARAM_NAMES: dict[str, tuple[str, ...]] = {
    # intensity factors are means over channels when drawn per channel (the layout must not depend on C)
    "intensity": ("applied", "brightness", "contrast", "gamma"),
    "blur": ("applied", "sigma"),
    "erasing": ("applied", "width", "height", "center_x", "center_y"),
}


@dataclass(frozen=True)
class PixelDraw:
    """One transform drawn for a batch: ``apply`` (views -> views) and ``params`` (B, k) what was applied."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    params: torch.Tensor


def draw_pixel_transform(
    spec: Intensity | Blur | Erasing, rand: UniformSampler, batch: int, channels: int, out_size: int
) -> PixelDraw:
    """Draw the random parameters of one pixel-level spec, independently for each sample."""
    if spec.kind == "intensity":
        return _draw_intensity(spec, rand, batch, channels)
    if spec.kind == "blur":
        return _draw_blur(spec, rand, batch, out_size)
    return _draw_erasing(spec, rand, batch, out_size)


def _draw_intensity(spec: Intensity, rand: UniformSampler, batch: int, channels: int) -> PixelDraw:
    u = rand(batch)
    applied = (u < spec.p).to(u.dtype)[:, None]
    draws = channels if spec.per_channel else 1
    brightness = applied * spec.brightness * (2 * rand(batch, draws) - 1)
    contrast = 1 + applied * spec.contrast * (2 * rand(batch, draws) - 1)
    log_low, log_high = math.log(spec.gamma[0]), math.log(spec.gamma[1])
    log_gamma = log_low + (log_high - log_low) * rand(batch, draws)  # log-uniform: 0.8 as likely as 1/0.8
    gamma = (applied * log_gamma).exp()
    params = torch.stack([applied[:, 0], brightness.mean(1), contrast.mean(1), gamma.mean(1)], dim=1)
    factors = [value[:, :, None, None] for value in (gamma, contrast, brightness)]
    return PixelDraw(
        functools.partial(jitter_intensity, gamma=factors[0], contrast=factors[1], brightness=factors[2]),
        params,
    )


def jitter_intensity(
    x: torch.Tensor, *, gamma: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor
) -> torch.Tensor:
    """``(max(x,0)^gamma + min(x,0)) * contrast + brightness`` with factors broadcast over (B, C|1, 1, 1).

    The gamma acts on the positive part only: a fractional power of a negative value would be NaN, and
    values below zero (background under the low percentile) carry no stain to reshape.
    """
    shaped = x.clamp(max=0)
    shaped += x.clamp(min=0).pow_(gamma.to(x.dtype))  # in place on fresh tensors: no extra full-size buffers
    return shaped.mul_(contrast.to(x.dtype)).add_(brightness.to(x.dtype))


def _draw_blur(spec: Blur, rand: UniformSampler, batch: int, out_size: int) -> PixelDraw:
    u = rand(batch)
    applied = (u < spec.p).to(u.dtype)
    low, high = spec.sigma
    sigma = applied * (
        low + (high - low) * rand(batch)
    )  # sigma 0 gives a unit impulse: the view is unchanged
    kernel_size = blur_kernel_size(high, out_size)
    return PixelDraw(
        functools.partial(gaussian_blur, sigma=sigma, kernel_size=kernel_size),
        torch.stack([applied, sigma], dim=1),
    )


def blur_kernel_size(max_sigma: float, out_size: int) -> int:
    """Odd kernel covering +-3 sigma of the widest blur, capped so reflect padding fits in the view."""
    return min(2 * math.ceil(3 * max_sigma) + 1, 2 * out_size - 1)


def gaussian_blur(x: torch.Tensor, *, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur sample i with its own ``sigma[i]`` (output pixels): one grouped separable convolution per batch.

    kornia's kernel and separable filter are used directly: ``gaussian_blur2d`` checks that a device sigma is
    positive by reading it on the host, a GPU sync per batch; and sigma 0 ("not applied") is valid here.
    """
    from kornia.filters import filter2d_separable, get_gaussian_kernel1d

    kernel = get_gaussian_kernel1d(kernel_size, sigma[:, None].to(x.dtype))
    return filter2d_separable(x, kernel, kernel, border_type="reflect")


def _draw_erasing(spec: Erasing, rand: UniformSampler, batch: int, out_size: int) -> PixelDraw:
    u = rand(batch)
    applied = u < spec.p
    width, height = draw_box_shapes(rand, batch, spec.scale, spec.ratio)
    width, height = torch.where(applied, width, 0.0), torch.where(applied, height, 0.0)
    center_x = (2 * rand(batch) - 1) * (1 - width)
    center_y = (2 * rand(batch) - 1) * (1 - height)
    box = torch.stack([center_x, center_y, width, height], dim=1)
    params = torch.stack([applied.to(u.dtype), width, height, center_x, center_y], dim=1)
    return PixelDraw(functools.partial(erase_boxes, box=box, value=spec.value), params)


def erase_boxes(x: torch.Tensor, *, box: torch.Tensor, value: float) -> torch.Tensor:
    """Fill, in every channel, the pixels whose centres fall in each sample's box.

    ``box`` is (B, 4): centre x, centre y (normalised [-1, 1]) and width, height (fractions of the side);
    an empty box (width 0) erases nothing.
    """
    size = x.shape[-1]
    centres = (torch.arange(size, device=x.device, dtype=box.dtype) + 0.5) * (2 / size) - 1
    center_x, center_y, width, height = (column[:, None] for column in box.unbind(1))
    inside_x = (centres - center_x).abs() < width  # half-width in normalised units equals the fraction
    inside_y = (centres - center_y).abs() < height
    mask = inside_y[:, None, :, None] & inside_x[:, None, None, :]
    return x.masked_fill(mask, value)
