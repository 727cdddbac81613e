"""Rendering: fluorescence of each cell (one window per cell, each channel a small vectorised function), then
image formation (illumination, optics, camera) into 12-bit values stored as uint16."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from phenossl.synthetic.cells import CellParams
from phenossl.synthetic.layout import CHANNELS
from phenossl.synthetic.shapes import (
    Window,
    cell_centre_offset,
    nucleus_axes,
    nucleus_rho,
    nucleus_window,
    whole_cell_window,
)

# Brightness of cytoskeletal structures, counts above background (the DNA level is DNA_LEVEL).
TUBULIN_DIFFUSE, TUBULIN_FILAMENT, TUBULIN_PUNCTUM = 14.0, 20.0, 250.0
ACTIN_CORTEX, ACTIN_CYTOPLASM, ACTIN_FIBRE = 55.0, 15.0, 38.0


@dataclass(frozen=True)
class Textures:
    """Smooth random fields (zero mean, unit std) shared by all cells of a field, cut per window."""

    fine: np.ndarray  # chromatin grain
    coarse: np.ndarray  # chromatin clumps
    cytoplasm: np.ndarray  # uneven cytoplasmic staining
    cortex: np.ndarray  # uneven cortical actin along the membrane

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int]) -> Textures:
        return cls(*(standard_noise(rng, shape, sigma) for sigma in (1.0, 1.8, 2.0, 4.0)))


def standard_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random texture with zero mean and unit standard deviation (grain size ~ sigma px)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / field.std()


def nucleoli_factor(rng: np.random.Generator, p: CellParams, i: int, win: Window) -> np.ndarray:
    """1 - dark spots: 1-3 nucleoli, which make real DAPI nuclei look mottled."""
    n = rng.integers(1, 4)
    a, b = nucleus_axes(p, i)
    r, t = 0.55 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    u, v = r * np.cos(t) * a, r * np.sin(t) * b
    angle = p.orientation[i]
    ny, nx = u * np.sin(angle) + v * np.cos(angle), u * np.cos(angle) - v * np.sin(angle)
    sigma, depth = rng.uniform(1.6, 2.6, n), rng.uniform(0.2, 0.4, n)
    d2 = (win.dy[None] - ny[:, None, None]) ** 2 + (win.dx[None] - nx[:, None, None]) ** 2
    return 1 - np.max(depth[:, None, None] * np.exp(-d2 / (2 * sigma[:, None, None] ** 2)), axis=0)


def render_dna(
    rng: np.random.Generator, p: CellParams, i: int, win: Window, own: np.ndarray, tex: Textures
) -> np.ndarray:
    """Dome-shaped nucleus with chromatin texture and nucleoli; integrated intensity = DNA content.

    Conserving DNA content makes condensed (smaller) nuclei brighter and enlarged ones dimmer, as in reality.
    """
    dome = (1 - np.clip(nucleus_rho(p, i, win), 0, 1) ** 2) ** 0.35
    clumping, coarse = p.chromatin_clumping[i], tex.coarse[win.region]
    chromocentres = np.clip(coarse - 1.0, 0, None) * 2.5 * max(clumping - 0.1, 0.0)
    texture = np.clip(1 + 0.06 * tex.fine[win.region] + clumping * coarse + chromocentres, 0.2, None)
    signal = dome * texture * nucleoli_factor(rng, p, i, win) * own
    return signal * (p.dna_content[i] / max(signal.sum(), 1e-9))


def mtoc_offset(p: CellParams, i: int) -> tuple[float, float]:
    """Centrosome position (dy, dx): just outside the nucleus, towards the cell centre."""
    a, b = nucleus_axes(p, i)
    rel = p.polarity[i] - p.orientation[i]
    reach = 1 / np.sqrt((np.cos(rel) / a) ** 2 + (np.sin(rel) / b) ** 2) + 2.0
    return reach * np.sin(p.polarity[i]), reach * np.cos(p.polarity[i])


def splat(points_y: np.ndarray, points_x: np.ndarray, weights: np.ndarray, win: Window) -> np.ndarray:
    """Add weighted sub-pixel points to a window image (bilinear), dropping those outside it."""
    h, w = win.dy.shape[0], win.dx.shape[1]
    y, x = points_y - win.dy[0, 0], points_x - win.dx[0, 0]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    image = np.zeros(h * w)
    for oy, ox, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        image += np.bincount(yy[inside] * w + xx[inside], (weights * share)[inside], minlength=h * w)
    return image.reshape(h, w)


def microtubules(
    rng: np.random.Generator, p: CellParams, i: int, win: Window, origin: tuple[float, float]
) -> np.ndarray:
    """Curving filaments growing out from around the centrosome to the cell edge (clipped later).

    Fragmentation breaks them into short pieces and removes some: the depolymerised look.
    """
    frag = p.tubulin_fragmentation[i]
    n = round(40 * (1 - 0.4 * frag))
    steps = int(2.4 * p.cell_radius[i] * np.sqrt(p.cell_aspect[i]))
    start_y, start_x = origin[0] + rng.normal(0, 4, (n, 1)), origin[1] + rng.normal(0, 4, (n, 1))
    heading = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(rng.normal(0, 0.12, (n, steps)), axis=1)
    ys = start_y + np.cumsum(np.sin(heading), axis=1)
    xs = start_x + np.cumsum(np.cos(heading), axis=1)
    fade_in = 1 - np.exp(-np.arange(steps) / 10)  # no bright star at the centrosome
    breaks = ndi.gaussian_filter1d(rng.standard_normal((n, steps)), 2.5, axis=1) * 2.5  # ~unit std
    present = breaks > -2.5 + 3.2 * frag
    weights = np.where(present, rng.uniform(0.6, 1.4, (n, 1)) * fade_in, 0.0)
    return splat(ys.ravel(), xs.ravel(), weights.ravel(), win)


def puncta(rng: np.random.Generator, p: CellParams, i: int, win: Window, territory: np.ndarray) -> np.ndarray:
    """Bright dots at random places in the cell: tubulin aggregates when microtubules depolymerise."""
    n = rng.poisson(2 + 16 * p.tubulin_fragmentation[i])
    where_y, where_x = np.nonzero(territory)
    if n == 0 or where_y.size == 0:
        return np.zeros(territory.shape)
    pick = rng.integers(0, where_y.size, n)
    ys = win.dy[where_y[pick], 0] + rng.uniform(-0.5, 0.5, n)
    xs = win.dx[0, where_x[pick]] + rng.uniform(-0.5, 0.5, n)
    return splat(ys, xs, rng.uniform(0.5, 1.5, n), win)  # the PSF gives them their size


def render_tubulin(
    rng: np.random.Generator,
    p: CellParams,
    i: int,
    win: Window,
    territory: np.ndarray,
    own: np.ndarray,
    tex: Textures,
) -> np.ndarray:
    """Diffuse tubulin enriched around the centrosome, a microtubule meshwork, and puncta."""
    my, mx = mtoc_offset(p, i)
    perinuclear = np.exp(-np.hypot(win.dy - my, win.dx - mx) / 20)
    frag = p.tubulin_fragmentation[i]
    diffuse = (0.5 + 0.5 * perinuclear) * (1 + 0.6 * frag) * (1 + 0.15 * tex.cytoplasm[win.region])
    diffuse = diffuse * np.where(own, 0.6, 1.0)  # thin cytoplasm above the nucleus
    signal = (
        TUBULIN_DIFFUSE * diffuse
        + TUBULIN_FILAMENT * microtubules(rng, p, i, win, (my, mx))
        + TUBULIN_PUNCTUM * puncta(rng, p, i, win, territory)
    )
    return p.tubulin_level[i] * signal * territory


def stress_fibres(
    rng: np.random.Generator, p: CellParams, i: int, win: Window, inner: np.ndarray
) -> np.ndarray:
    """Straight bundles along the cell's long axis (which is random, so they carry no orientation cue)."""
    n = int(rng.integers(3, 9))
    oy, ox = cell_centre_offset(p, i)
    angles = p.cell_orientation[i] + rng.normal(0, 0.08, n)
    half_width = p.cell_radius[i] / np.sqrt(p.cell_aspect[i])
    offsets = rng.uniform(-0.85, 0.85, n) * half_width
    across = (
        -(win.dx[None] - ox) * np.sin(angles)[:, None, None]
        + (win.dy[None] - oy) * np.cos(angles)[:, None, None]
    )
    bundles = rng.uniform(0.5, 1.0, (n, 1, 1)) * np.exp(
        -((across - offsets[:, None, None]) ** 2) / (2 * 0.7**2)
    )
    return bundles.sum(axis=0) * inner


def render_actin(
    rng: np.random.Generator, p: CellParams, i: int, win: Window, territory: np.ndarray, tex: Textures
) -> np.ndarray:
    """Uneven cortical actin (brighter at the leading edge), faint cytoplasm, and stress fibres."""
    depth = ndi.distance_transform_edt(territory)
    oy, ox = cell_centre_offset(p, i)
    facing = np.cos(np.arctan2(win.dy - oy, win.dx - ox) - p.polarity[i])
    uneven = np.clip(1 + 0.35 * tex.cortex[win.region], 0.2, None)
    cortex = np.exp(-(depth - 1) / 1.4) * (1 + 0.8 * np.clip(facing, 0, None) ** 2) * uneven
    inner = 1 - np.exp(-depth / 5)
    signal = (
        ACTIN_CORTEX * cortex
        + ACTIN_CYTOPLASM * (1 + 0.25 * tex.cytoplasm[win.region])
        + ACTIN_FIBRE * p.stress_fibres[i] * stress_fibres(rng, p, i, win, inner)
    )
    return p.actin_level[i] * signal * territory


def render_cells(
    rng: np.random.Generator, p: CellParams, nuclei: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """Noise-free fluorescence signal (C, Y, X), counts above background, from the painted labels."""
    shape = nuclei.shape
    tex = Textures.draw(rng, shape)
    signal = np.zeros((len(CHANNELS), *shape))
    for i in range(len(p)):
        win = nucleus_window(p, i, shape)
        own = nuclei[win.region] == i + 1
        if not own.any():
            continue
        signal[0][win.region] += render_dna(rng, p, i, win, own, tex)
        win = whole_cell_window(p, i, shape)
        territory, own = cells[win.region] == i + 1, nuclei[win.region] == i + 1
        signal[1][win.region] += render_tubulin(rng, p, i, win, territory, own, tex)
        signal[2][win.region] += render_actin(rng, p, i, win, territory, tex)
    return signal


# --------------------------------------------------------------------------------------------------
# Image formation: illumination, optics, camera
# --------------------------------------------------------------------------------------------------

CAMERA_OFFSET = 25.0  # 12-bit counts
ADC_SCALE = 16  # 12-bit counts stored in uint16 like BBBC021 (values are multiples of 16)
ADC_MAX = 4095
AUTOFLUORESCENCE = np.array([5.0, 8.0, 7.0])  # counts, per channel
ELECTRONS_PER_COUNT = 4.0
READ_NOISE = 1.0  # counts


def illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Vignetting (corners 10-20 % darker, off-centre) and a gentle gradient, as with a real objective."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    cy, cx = (np.array(shape) / 2) * (1 + rng.uniform(-0.15, 0.15, 2))
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * max(shape)) ** 2 / 2
    gy, gx = rng.uniform(-0.04, 0.04, 2)
    return (1 - rng.uniform(0.10, 0.20) * r2) * (1 + gy * (yy / shape[0] - 0.5) + gx * (xx / shape[1] - 0.5))


def optics(signal: np.ndarray, psf_sigma: float) -> np.ndarray:
    """Widefield blur: a Gaussian PSF plus a little out-of-focus haze, per channel."""
    sharp = ndi.gaussian_filter(signal, (0, psf_sigma, psf_sigma))
    haze = ndi.gaussian_filter(signal, (0, 10, 10), truncate=2.5)
    return 0.93 * sharp + 0.07 * haze


def camera(rng: np.random.Generator, photons: np.ndarray) -> np.ndarray:
    """Shot noise, offset and read noise, 12-bit digitisation stored as uint16 x 16 (like BBBC021)."""
    electrons = rng.poisson(np.clip(photons, 0, None) * ELECTRONS_PER_COUNT)
    counts = electrons / ELECTRONS_PER_COUNT + CAMERA_OFFSET + rng.normal(0, READ_NOISE, photons.shape)
    return (np.clip(np.round(counts), 0, ADC_MAX) * ADC_SCALE).astype(np.uint16)
