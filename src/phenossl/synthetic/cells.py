"""Per-cell parameters of a field: where each cell is, and how its phenotype and baseline biological
variability shape its nucleus, body and cytoskeleton (vectorised draws, one array entry per cell)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from phenossl.errors import ConfigError
from phenossl.synthetic.layout import PhenotypeEffect

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
