"""The plate's design: channels, phenotypes, compounds with their dose response, and which treatment and
density condition each field gets (crossed, so density carries no phenotype information)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from phenossl.errors import ConfigError

CHANNELS: tuple[str, ...] = ("DNA", "tubulin", "actin")
TILE_SIZE = 196  # the paper's single-cell tile: local density is counted in this window
PLATE_NAME = "SYNTH01"


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
