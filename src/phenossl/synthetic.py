"""A synthetic multi-channel plate whose ground truth separates *phenotype* from *local cell density*.

Bendidi et al. (2024) showed that with single-cell tiles, random-crop augmentations make clusters follow
how many cells a tile shows, while 360-degree rotation plus a centre crop make them follow the central
cell's morphology. To show (and test) that, the data needs both factors, crossed and independent:

* three compound phenotypes that differ *subtly* in nucleus and cytoskeleton morphology (per-cell
  responses overlap, as in real screens), with a dose axis for one compound;
* sparse and dense wells for every treatment, so local density carries no phenotype information;
* random cell orientation, so orientation carries no information either (rotation removes it).

Fields look like widefield fluorescence of cultured cells (DNA, tubulin, actin; BBBC021-like intensities:
12-bit camera values scaled to 16 bits, background ~500, nuclei ~1800), and come with nuclei and whole-cell
ground-truth labels and a per-cell table. ``python -m phenossl.synthetic --out FOLDER --seed 0`` writes
the plate bundled in ``phenossl/sample_data/plate``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import measure

from phenossl.atomic import atomic_write, check_can_write
from phenossl.errors import ConfigError, InputError, PhenosslError

CHANNELS: tuple[str, ...] = ("DNA", "tubulin", "actin")
TILE_SIZE = 196  # the paper's single-cell tile: local density is counted in this window
NEIGHBOUR_RADIUS = 100  # px; the other local-density measure
PLATE_NAME = "SYNTH01"
FIELD_MARGIN = 40  # px simulated around each field so that cells are cut by its border, as in real images
CAMERA_OFFSET = 25.0  # 12-bit counts
ADC_SCALE = 16  # 12-bit counts stored in uint16 like BBBC021 (values are multiples of 16)
ADC_MAX = 4095


# --------------------------------------------------------------------------------------------------
# Phenotypes, treatments and the plate layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhenotypeEffect:
    """How a phenotype changes a cell at full strength (strength 1), relative to a control cell."""

    nucleus_size: float = 0.0  # relative change of the nucleus' equivalent radius
    nucleus_elongation: float = 0.0  # added to the nucleus aspect ratio
    chromatin_clumping: float = 0.0  # added to the amplitude of coarse, bright chromatin texture
    stress_fibres: float = 0.0  # added to the strength of straight actin bundles across the cell
    tubulin_fragmentation: float = 0.0  # 0 = long radial microtubules, 1 = short pieces and puncta
    cell_size: float = 0.0  # relative change of the cell radius
    cell_elongation: float = 0.0  # added to the cell aspect ratio


PHENOTYPES: dict[str, PhenotypeEffect] = {
    "control": PhenotypeEffect(),
    # Smaller, elongated nuclei with condensed (brighter, clumpy) chromatin; actin stress fibres.
    "elongated_condensed": PhenotypeEffect(
        nucleus_size=-0.22,
        nucleus_elongation=0.85,
        chromatin_clumping=1.8,
        stress_fibres=2.2,
        cell_size=0.08,
        cell_elongation=0.45,
    ),
    # Larger, rounder nuclei with smooth chromatin; microtubules broken into short pieces and puncta.
    "enlarged_punctate": PhenotypeEffect(
        nucleus_size=0.32,
        nucleus_elongation=-0.20,
        chromatin_clumping=-0.6,
        tubulin_fragmentation=1.0,
        cell_size=-0.15,
        cell_elongation=-0.20,
    ),
}


@dataclass(frozen=True)
class Compound:
    """A compound's phenotype and its dose response (Hill curve, concentrations in uM)."""

    phenotype: str
    ec50_um: float = 1.0
    hill: float = 1.5


COMPOUNDS: dict[str, Compound] = {
    "DMSO": Compound("control"),
    "compound_A": Compound("elongated_condensed", ec50_um=0.5),
    "compound_B": Compound("enlarged_punctate", ec50_um=0.3),
}

# (compound, concentration uM): compound_A at two doses gives the data a dose-response axis.
DEFAULT_TREATMENTS: tuple[tuple[str, float], ...] = (
    ("DMSO", 0.0),
    ("compound_A", 0.6),
    ("compound_A", 3.0),
    ("compound_B", 1.0),
)

# Expected cells per 196x196 px of field: a tile centred on a cell shows ~1-3 cells (sparse), ~8-15 (dense).
DEFAULT_DENSITIES: dict[str, float] = {"sparse": 2.5, "dense": 12.0}


def phenotype_strength(compound: str, concentration: float) -> float:
    """Mean phenotype strength (0..1) a dose produces; DMSO and zero doses give 0."""
    if compound not in COMPOUNDS:
        raise ConfigError(f"Unknown compound {compound!r}; choose one of {sorted(COMPOUNDS)}.")
    spec = COMPOUNDS[compound]
    if spec.phenotype == "control" or concentration <= 0:
        return 0.0
    c = concentration**spec.hill
    return float(c / (c + spec.ec50_um**spec.hill))


def plate_layout(
    treatments: Sequence[tuple[str, float]] = DEFAULT_TREATMENTS,
    densities: Sequence[str] = tuple(DEFAULT_DENSITIES),
    wells_per_condition: int = 1,
    sites_per_well: int = 1,
    plate: str = PLATE_NAME,
) -> pd.DataFrame:
    """One row per field: treatments on plate rows (B, C, ...), density x replicate on columns.

    Every treatment appears at every density, so density is independent of the phenotype by design.
    """
    if wells_per_condition < 1 or sites_per_well < 1:
        raise ConfigError("wells_per_condition and sites_per_well must be at least 1.")
    if not plate or not plate.replace("-", "").isalnum():
        raise ConfigError(
            f"Plate name {plate!r}: use letters, digits and '-' only ('_' separates file-name parts)."
        )
    if len(treatments) > 7 or len(densities) * wells_per_condition > 11:
        raise ConfigError(
            "The layout must fit in the inner wells of a 96-well plate (rows B-H, columns 2-12)."
        )
    rows = []
    for row_index, (compound, concentration) in enumerate(treatments):
        phenotype_strength(compound, concentration)  # validates the compound name
        for density_index, density in enumerate(densities):
            for replicate in range(wells_per_condition):
                column = 2 + density_index * wells_per_condition + replicate
                well = f"{'BCDEFGH'[row_index]}{column:02d}"
                for site in range(1, sites_per_well + 1):
                    rows.append(
                        {
                            "field": f"{plate}_{well}_s{site}",
                            "plate": plate,
                            "well": well,
                            "site": site,
                            "compound": compound,
                            "concentration": float(concentration),
                            "density_condition": density,
                        }
                    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Per-cell parameters
# --------------------------------------------------------------------------------------------------

N_HARMONICS = 4  # boundary irregularity: cos(k*theta) terms, k = 2..5
NUCLEUS_RADIUS = 12.5  # px, equivalent radius of an average G1 control nucleus (diameter ~25 px)
CELL_RADIUS = 28.0  # px (cell diameter ~56 px)
DNA_LEVEL = 88.0  # counts above background, mean signal of an average G1 control nucleus


@dataclass
class CellParams:
    """Everything that defines the cells of one field, one array entry per cell (vectorised draws)."""

    y: np.ndarray  # nucleus centre, px in the extended canvas
    x: np.ndarray
    strength: np.ndarray  # this cell's phenotype strength (dose x individual response)
    g2: np.ndarray  # bool: G2 cells have twice the DNA and larger nuclei (cell-cycle heterogeneity)
    nucleus_radius: np.ndarray  # equivalent radius, px
    nucleus_aspect: np.ndarray
    orientation: np.ndarray  # radians, uniform: orientation must carry no information
    nucleus_harm_amp: np.ndarray  # (n, N_HARMONICS)
    nucleus_harm_phase: np.ndarray
    dna_content: np.ndarray  # integrated DNA signal, counts x px
    chromatin_clumping: np.ndarray
    cell_radius: np.ndarray
    cell_aspect: np.ndarray
    cell_orientation: np.ndarray
    cell_offset: np.ndarray  # distance from nucleus centre to cell centre, px
    polarity: np.ndarray  # radians: direction of cell centre, centrosome and leading edge
    cell_harm_amp: np.ndarray
    cell_harm_phase: np.ndarray
    tubulin_level: np.ndarray  # per-cell stain uptake
    actin_level: np.ndarray
    tubulin_fragmentation: np.ndarray
    stress_fibres: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: np.ndarray) -> CellParams:
        """The cells selected by a boolean or index array."""
        return replace(self, **{f.name: getattr(self, f.name)[keep] for f in fields(self)})


def individual_strength(rng: np.random.Generator, dose_strength: float, n: int) -> np.ndarray:
    """Per-cell phenotype strength: cells respond unequally and some not at all, so phenotypes overlap."""
    response = np.clip(rng.normal(1.0, 0.25, n), 0.0, 1.5)
    non_responder = rng.random(n) < 0.10
    return dose_strength * np.where(non_responder, 0.0, response)


def draw_nuclei(rng: np.random.Generator, s: np.ndarray, effect: PhenotypeEffect) -> dict[str, np.ndarray]:
    """Nucleus size, shape, orientation, DNA content and chromatin texture per cell."""
    n = len(s)
    g2 = rng.random(n) < 0.2
    radius = (
        NUCLEUS_RADIUS
        * np.exp(rng.normal(0, 0.08, n))
        * np.where(g2, 1.14, 1.0)
        * (1 + effect.nucleus_size * s)
    )
    aspect = 1 + np.exp(rng.normal(np.log(0.28), 0.35, n)) + effect.nucleus_elongation * s
    clumping = 0.10 + 0.05 * rng.standard_normal(n) + 0.12 * effect.chromatin_clumping * s
    dna = DNA_LEVEL * np.pi * NUCLEUS_RADIUS**2 * np.exp(rng.normal(0, 0.07, n)) * np.where(g2, 1.85, 1.0)
    return {
        "g2": g2,
        "nucleus_radius": radius,
        "nucleus_aspect": np.clip(aspect, 1.0, 2.6),
        "orientation": rng.uniform(0, 2 * np.pi, n),
        "nucleus_harm_amp": rng.uniform(0, 0.035, (n, N_HARMONICS)),
        "nucleus_harm_phase": rng.uniform(0, 2 * np.pi, (n, N_HARMONICS)),
        "dna_content": dna,
        "chromatin_clumping": np.clip(clumping, 0.02, None),
    }


def draw_cell_bodies(
    rng: np.random.Generator, s: np.ndarray, effect: PhenotypeEffect, orientation: np.ndarray
) -> dict[str, np.ndarray]:
    """Cell size and outline, roughly aligned with the nucleus; polarity sets where the cell centre lies."""
    n = len(s)
    radius = CELL_RADIUS * np.exp(rng.normal(0, 0.1, n)) * (1 + effect.cell_size * s)
    aspect = 1 + np.abs(rng.normal(0.25, 0.12, n)) + effect.cell_elongation * s
    return {
        "cell_radius": radius,
        "cell_aspect": np.clip(aspect, 1.0, 2.2),
        "cell_orientation": orientation + rng.normal(0, 0.3, n),
        "cell_offset": rng.uniform(0, 0.25, n) * radius,
        "polarity": rng.uniform(0, 2 * np.pi, n),
        "cell_harm_amp": rng.uniform(0, 0.08, (n, N_HARMONICS)),
        "cell_harm_phase": rng.uniform(0, 2 * np.pi, (n, N_HARMONICS)),
    }


def draw_cytoskeleton(
    rng: np.random.Generator, s: np.ndarray, effect: PhenotypeEffect
) -> dict[str, np.ndarray]:
    """Stain uptake and the phenotype's cytoskeletal changes (controls keep a few faint stress fibres)."""
    n = len(s)
    return {
        "tubulin_level": np.exp(rng.normal(0, 0.15, n)),
        "actin_level": np.exp(rng.normal(0, 0.15, n)),
        "tubulin_fragmentation": np.clip(effect.tubulin_fragmentation * s, 0.0, 1.0),
        "stress_fibres": np.clip(0.15 + effect.stress_fibres * s, 0.0, None),
    }


def draw_cell_params(
    rng: np.random.Generator, centres: np.ndarray, effect: PhenotypeEffect, dose_strength: float
) -> CellParams:
    """Morphology of every cell of a field: baseline biological variability + phenotype x strength."""
    s = individual_strength(rng, dose_strength, len(centres))
    nuclei = draw_nuclei(rng, s, effect)
    bodies = draw_cell_bodies(rng, s, effect, nuclei["orientation"])
    return CellParams(
        y=centres[:, 0], x=centres[:, 1], strength=s, **nuclei, **bodies, **draw_cytoskeleton(rng, s, effect)
    )


def place_nuclei(rng: np.random.Generator, n: int, shape: tuple[int, int], min_distance: float) -> np.ndarray:
    """Random positions at least ``min_distance`` apart (random sequential addition), as an (n, 2) array.

    The hard core keeps nuclei from overlapping heavily; elongated neighbours can still touch.
    """
    candidates = rng.uniform((0, 0), shape, size=(max(200, 60 * n), 2))
    accepted = np.empty((n, 2))
    count = 0
    for point in candidates:
        if count == n:
            break
        if count == 0 or np.min(np.sum((accepted[:count] - point) ** 2, axis=1)) >= min_distance**2:
            accepted[count] = point
            count += 1
    if count < n:
        raise ConfigError(
            f"Could not place {n} cells at least {min_distance} px apart in a {shape} field; "
            "lower the density or enlarge the field."
        )
    return accepted


# --------------------------------------------------------------------------------------------------
# Geometry: windows, star-convex shapes, label painting
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A box in the canvas, with pixel coordinates relative to the nucleus centre."""

    rows: slice
    cols: slice
    dy: np.ndarray  # (h, 1)
    dx: np.ndarray  # (1, w)

    @property
    def region(self) -> tuple[slice, slice]:
        return self.rows, self.cols


def window_around(cy: float, cx: float, half: int, shape: tuple[int, int]) -> Window:
    """The square window of half-size ``half`` around (cy, cx), clipped to the canvas."""
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, shape[0])
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, shape[1])
    dy = (np.arange(y0, y1, dtype=float) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=float) - cx)[None, :]
    return Window(slice(y0, y1), slice(x0, x1), dy, dx)


def shape_rho(
    dy: np.ndarray,
    dx: np.ndarray,
    radius: float,
    aspect: float,
    angle: float,
    harm_amp: np.ndarray,
    harm_phase: np.ndarray,
) -> np.ndarray:
    """Normalised radius of a wobbly ellipse: < 1 inside, 1 on the boundary (area ~ pi*radius**2).

    The wobble is sum_k amp_k cos(k*theta + phase_k), k = 2, 3, ...; computed with powers of the unit
    complex number exp(i*theta) instead of arctan2 and cosines (several times faster).
    """
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
    r = np.hypot(u, v)
    unit = (u + 1j * v) / np.maximum(r, 1e-9)
    power, boundary = unit, np.ones_like(r)
    for amp, phase in zip(harm_amp, harm_phase):
        power = power * unit
        boundary += amp * (power * np.exp(1j * phase)).real
    return r / boundary


def nucleus_axes(p: CellParams, i: int) -> tuple[float, float]:
    """Semi-major and semi-minor axes of nucleus i (px)."""
    radius, stretch = p.nucleus_radius[i], np.sqrt(p.nucleus_aspect[i])
    return radius * stretch, radius / stretch


def nucleus_window(p: CellParams, i: int, shape: tuple[int, int]) -> Window:
    half = int(np.ceil(nucleus_axes(p, i)[0] * 1.2)) + 2
    return window_around(p.y[i], p.x[i], half, shape)


def whole_cell_window(p: CellParams, i: int, shape: tuple[int, int]) -> Window:
    half = int(np.ceil(p.cell_radius[i] * np.sqrt(p.cell_aspect[i]) * 1.35 + p.cell_offset[i])) + 3
    return window_around(p.y[i], p.x[i], half, shape)


def nucleus_rho(p: CellParams, i: int, win: Window) -> np.ndarray:
    return shape_rho(
        win.dy,
        win.dx,
        p.nucleus_radius[i],
        p.nucleus_aspect[i],
        p.orientation[i],
        p.nucleus_harm_amp[i],
        p.nucleus_harm_phase[i],
    )


def cell_centre_offset(p: CellParams, i: int) -> tuple[float, float]:
    """(dy, dx) from the nucleus centre to the cell centre: nuclei sit off-centre, as in real cells."""
    return p.cell_offset[i] * np.sin(p.polarity[i]), p.cell_offset[i] * np.cos(p.polarity[i])


def cell_rho(p: CellParams, i: int, win: Window) -> np.ndarray:
    oy, ox = cell_centre_offset(p, i)
    return shape_rho(
        win.dy - oy,
        win.dx - ox,
        p.cell_radius[i],
        p.cell_aspect[i],
        p.cell_orientation[i],
        p.cell_harm_amp[i],
        p.cell_harm_phase[i],
    )


def paint_closest(best: np.ndarray, labels: np.ndarray, win: Window, rho: np.ndarray, label: int) -> None:
    """Give ``label`` to the window pixels inside the shape (rho < 1) and deeper inside it than any other."""
    closer = (rho < 1) & (rho < best[win.region])
    best[win.region][closer] = rho[closer]
    labels[win.region][closer] = label


def paint_labels(p: CellParams, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei and whole-cell instance labels (cell i has label i + 1).

    Where two shapes overlap, the pixel goes to the one it is deeper inside (smallest normalised radius):
    touching nuclei get a clean shared border, and dense cells tile the space like a confluent culture.
    The nucleus always belongs to its own cell.
    """
    nuclei, cells = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    nucleus_best, cell_best = np.full(shape, np.inf), np.full(shape, np.inf)
    for i in range(len(p)):
        win = nucleus_window(p, i, shape)
        paint_closest(nucleus_best, nuclei, win, nucleus_rho(p, i, win), i + 1)
        win = whole_cell_window(p, i, shape)
        paint_closest(cell_best, cells, win, cell_rho(p, i, win), i + 1)
    cells = np.where(nuclei > 0, nuclei, cells)
    return nuclei, keep_component_with_nucleus(cells, nuclei)


def keep_component_with_nucleus(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Drop cytoplasm fragments cut off from their nucleus by a neighbour (they would look like debris)."""
    pieces = measure.label(cells, background=0, connectivity=1)  # same-label connected pieces
    keep = np.isin(pieces, np.unique(pieces[nuclei > 0]))
    return np.where(keep, cells, 0)


# --------------------------------------------------------------------------------------------------
# Rendering: one window per cell, each channel a small vectorised function
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Fields, ground-truth tables and the plate
# --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticPlate:
    """Synthetic fields with their ground truth.

    ``images`` (F, C, Y, X) uint16 in ``channel_names`` order; ``nuclei`` and ``cell_masks`` (F, Y, X)
    uint16 instance labels (a cell's mask has its nucleus' label; 0 is background); ``metadata`` one row
    per field (``field`` key, plate, well, site, compound, concentration, density_condition); ``cells`` one
    row per ground-truth nucleus (see ``cell_table``).
    """

    images: np.ndarray
    nuclei: np.ndarray
    cell_masks: np.ndarray
    metadata: pd.DataFrame
    cells: pd.DataFrame
    channel_names: tuple[str, ...] = CHANNELS

    @property
    def field_keys(self) -> list[str]:
        return list(self.metadata["field"])

    def field(self, key: str) -> np.ndarray:
        """The (C, Y, X) image of one field, by its key (``<plate>_<well>_s<site>``)."""
        if key not in self.field_keys:
            raise InputError(f"No field {key!r} in this plate; its fields are {self.field_keys}.")
        return self.images[self.field_keys.index(key)]


def local_density(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: other nuclei within NEIGHBOUR_RADIUS px; nuclei (itself included) in its TILE_SIZE tile."""
    offsets = centroids[:, None, :] - centroids[None, :, :]
    neighbours = (np.hypot(offsets[..., 0], offsets[..., 1]) <= NEIGHBOUR_RADIUS).sum(axis=1) - 1
    in_tile = (np.abs(offsets) <= TILE_SIZE / 2).all(axis=-1).sum(axis=1)
    return neighbours, in_tile


def cell_table(nuclei: np.ndarray, p: CellParams, field_row: dict) -> pd.DataFrame:
    """Ground truth per nucleus: position, treatment, phenotype strength, cell cycle, orientation, density.

    Cell ``label - 1`` is entry ``label - 1`` of ``p``. Centroids come from the mask, so they match what
    regionprops finds on the bundled masks.
    """
    props = measure.regionprops_table(nuclei, properties=("label", "centroid", "area", "bbox"))
    centroids = np.column_stack([props["centroid-0"], props["centroid-1"]])
    neighbours, in_tile = local_density(centroids)
    index = props["label"] - 1
    height, width = nuclei.shape
    touches_border = (
        (props["bbox-0"] == 0)
        | (props["bbox-1"] == 0)
        | (props["bbox-2"] == height)
        | (props["bbox-3"] == width)
    )
    compound = field_row["compound"]
    return pd.DataFrame(
        {
            "field": field_row["field"],
            "plate": field_row["plate"],
            "well": field_row["well"],
            "site": field_row["site"],
            "label": props["label"].astype(int),
            "centroid_y": np.round(centroids[:, 0], 3),
            "centroid_x": np.round(centroids[:, 1], 3),
            "compound": compound,
            "concentration": field_row["concentration"],
            "density_condition": field_row["density_condition"],
            "phenotype": COMPOUNDS[compound].phenotype,
            "phenotype_strength": np.round(p.strength[index], 4),
            "cell_cycle": np.where(p.g2[index], "G2", "G1"),
            "orientation_deg": np.round(np.degrees(p.orientation[index]) % 180, 2),
            "nucleus_area": props["area"].astype(int),
            "touches_border": touches_border,
            "neighbours_100px": neighbours,
            "cells_in_196px_tile": in_tile,
        }
    )


def crop_and_relabel(
    nuclei: np.ndarray, cells: np.ndarray, crop: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop the labels to the field; nuclei visible in it get labels 1..n in cell order.

    Returns the cropped nuclei, the cropped whole-cell masks (only cells whose nucleus is visible) and the
    original cell index of each new label.
    """
    nuclei, cells = nuclei[crop], cells[crop]
    visible = np.unique(nuclei[nuclei > 0])
    lookup = np.zeros(max(nuclei.max(), cells.max()) + 1, np.uint16)
    lookup[visible] = np.arange(1, visible.size + 1)
    return lookup[nuclei], lookup[cells], visible - 1


def make_field(
    rng: np.random.Generator,
    field_row: dict,
    cells_per_tile: float,
    field_size: int,
    min_distance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """One field: (C, Y, X) uint16 image, nuclei labels, whole-cell labels and its cell table."""
    side = field_size + 2 * FIELD_MARGIN
    n_cells = int(rng.poisson(cells_per_tile * side**2 / TILE_SIZE**2))
    centres = place_nuclei(rng, n_cells, (side, side), min_distance)
    compound = field_row["compound"]
    effect = PHENOTYPES[COMPOUNDS[compound].phenotype]
    params = draw_cell_params(rng, centres, effect, phenotype_strength(compound, field_row["concentration"]))
    nuclei, cells = paint_labels(params, (side, side))
    signal = render_cells(rng, params, nuclei, cells) + AUTOFLUORESCENCE[:, None, None]
    photons = optics(signal * illumination(rng, (side, side)), psf_sigma=rng.uniform(1.0, 1.4))
    crop = (slice(FIELD_MARGIN, FIELD_MARGIN + field_size),) * 2
    image = camera(rng, photons[(slice(None), *crop)])
    nuclei, cells, kept = crop_and_relabel(nuclei, cells, crop)
    return image, nuclei, cells, cell_table(nuclei, params.subset(kept), field_row)


def make_synthetic_plate(
    seed: int = 0,
    *,
    wells_per_condition: int = 1,
    sites_per_well: int = 1,
    field_size: int = 576,
    treatments: Sequence[tuple[str, float]] = DEFAULT_TREATMENTS,
    densities: dict[str, float] | None = None,
    min_distance: float = 28.0,
    plate: str = PLATE_NAME,
    field_keys: Sequence[str] | None = None,
) -> SyntheticPlate:
    """A deterministic synthetic plate: every treatment crossed with every density condition.

    ``densities`` maps a condition name to the expected number of cells per 196x196 px (default:
    sparse 2.5, dense 12). ``min_distance`` is the smallest distance between nucleus centres (px).
    ``field_keys`` generates only those fields (``<plate>_<well>_s<site>``), identical to the same fields
    of the whole plate: each field has its own random stream (seed, position in the layout).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if field_size < 64:
        raise ConfigError(f"field_size must be at least 64 px, got {field_size}.")
    densities = dict(DEFAULT_DENSITIES if densities is None else densities)
    if not densities or min(densities.values()) <= 0:
        raise ConfigError(f"densities must map condition names to positive cells per tile, got {densities}.")
    layout = plate_layout(treatments, tuple(densities), wells_per_condition, sites_per_well, plate)
    wanted = layout["field"].isin(layout["field"] if field_keys is None else list(field_keys))
    unknown = set(field_keys or ()) - set(layout["field"])
    if unknown or not wanted.any():
        raise ConfigError(f"Unknown field key(s) {sorted(unknown)}; this layout has {list(layout['field'])}.")
    metadata = layout[wanted].reset_index(drop=True)
    results = [
        make_field(
            np.random.default_rng([seed, index]),
            row,
            densities[row["density_condition"]],
            field_size,
            min_distance,
        )
        for index, row in layout[wanted].iterrows()
    ]
    images, nuclei, cells, tables = zip(*results)
    return SyntheticPlate(
        images=np.stack(images),
        nuclei=np.stack(nuclei),
        cell_masks=np.stack(cells),
        metadata=metadata,
        cells=pd.concat(tables, ignore_index=True),
    )


# --------------------------------------------------------------------------------------------------
# Files: ImageXpress-style TIFFs + CSVs, and the bundled sample data
# --------------------------------------------------------------------------------------------------

METADATA_FILE = "metadata.csv"
CELLS_FILE = "ground_truth_cells.csv"
METADATA_COLUMNS = ["plate", "well", "site", "compound", "concentration", "density_condition"]


def channel_file(folder: Path, key: str, channel: int) -> Path:
    """``<plate>_<well>_s<site>_w<n>.tif`` with n = 1 (DNA), 2 (tubulin), 3 (actin)."""
    return folder / f"{key}_w{channel + 1}.tif"


def mask_file(folder: Path, key: str, kind: str) -> Path:
    """Ground-truth labels: ``masks/<key>_nuclei.tif`` and ``masks/<key>_cells.tif``."""
    return folder / "masks" / f"{key}_{kind}.tif"


def plate_files(folder: Path, keys: Sequence[str], n_channels: int) -> list[Path]:
    """Every file ``write_plate`` writes, so that all can be checked before any is written."""
    images = [channel_file(folder, key, c) for key in keys for c in range(n_channels)]
    masks = [mask_file(folder, key, kind) for key in keys for kind in ("nuclei", "cells")]
    return [*images, *masks, folder / METADATA_FILE, folder / CELLS_FILE]


def write_tiff(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """zlib-compressed single-page TIFF, no timestamps or descriptions: same array, same bytes."""
    import tifffile

    atomic_write(
        path,
        lambda tmp: tifffile.imwrite(
            tmp,
            array,
            compression="zlib",
            compressionargs={"level": 6},
            photometric="minisblack",
            metadata=None,
        ),
        overwrite=overwrite,
    )


def write_csv(path: Path, table: pd.DataFrame, overwrite: bool) -> None:
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"), overwrite=overwrite)


def write_plate(plate: SyntheticPlate, folder: str | Path, overwrite: bool = False) -> Path:
    """Write one TIFF per channel per field, ground-truth masks, metadata.csv and ground_truth_cells.csv.

    Nothing is written if any target exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    for path in plate_files(folder, plate.field_keys, len(plate.channel_names)):
        check_can_write(path, overwrite)
    for index, key in enumerate(plate.field_keys):
        for channel in range(len(plate.channel_names)):
            write_tiff(channel_file(folder, key, channel), plate.images[index, channel], overwrite)
        write_tiff(mask_file(folder, key, "nuclei"), plate.nuclei[index], overwrite)
        write_tiff(mask_file(folder, key, "cells"), plate.cell_masks[index], overwrite)
    write_csv(folder / METADATA_FILE, plate.metadata[METADATA_COLUMNS], overwrite)
    write_csv(folder / CELLS_FILE, plate.cells, overwrite)
    return folder


def read_tiff(path: Path) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise InputError(
            f"{path} is missing: the synthetic plate folder is incomplete. Regenerate it with "
            "`python -m phenossl.synthetic --out FOLDER --seed 0 --overwrite`."
        )
    return tifffile.imread(path)


def load_plate(folder: str | Path) -> SyntheticPlate:
    """Read a folder written by ``write_plate`` back into a SyntheticPlate."""
    folder = Path(folder)
    if not (folder / METADATA_FILE).is_file() or not (folder / CELLS_FILE).is_file():
        raise InputError(f"{folder} has no {METADATA_FILE} / {CELLS_FILE}; is it a synthetic plate folder?")
    metadata = pd.read_csv(folder / METADATA_FILE)
    metadata.insert(0, "field", [f"{r.plate}_{r.well}_s{r.site}" for r in metadata.itertuples()])
    keys = list(metadata["field"])
    return SyntheticPlate(
        images=np.stack(
            [np.stack([read_tiff(channel_file(folder, k, c)) for c in range(len(CHANNELS))]) for k in keys]
        ),
        nuclei=np.stack([read_tiff(mask_file(folder, k, "nuclei")) for k in keys]),
        cell_masks=np.stack([read_tiff(mask_file(folder, k, "cells")) for k in keys]),
        metadata=metadata,
        cells=pd.read_csv(folder / CELLS_FILE),
    )


def sample_data_path() -> Path:
    """The bundled synthetic plate folder (``phenossl/sample_data/plate``), found through the package."""
    path = Path(str(importlib.resources.files("phenossl").joinpath("sample_data", "plate")))
    if not (path / METADATA_FILE).is_file():
        raise InputError(
            f"The bundled sample plate is missing from {path}. Regenerate it with "
            f"`python -m phenossl.synthetic --out {path} --seed 0`."
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Write a synthetic plate: ``python -m phenossl.synthetic --out FOLDER --seed 0`` (the sample data)."""
    parser = argparse.ArgumentParser(prog="python -m phenossl.synthetic", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder to write the plate into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wells-per-condition", type=int, help="replicate wells per treatment x density")
    parser.add_argument("--sites-per-well", type=int, help="fields per well")
    parser.add_argument("--field-size", type=int, help="field width and height, px")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    args = parser.parse_args(argv)
    options = {
        name: value
        for name in ("wells_per_condition", "sites_per_well", "field_size")
        if (value := getattr(args, name)) is not None
    }
    try:
        plate = make_synthetic_plate(args.seed, **options)
        write_plate(plate, args.out, overwrite=args.overwrite)
    except PhenosslError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(plate.field_keys)} fields, {len(plate.cells)} cells to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
