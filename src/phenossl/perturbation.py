"""The on-perturbation axis: a control-defined direction in embedding space that turns embeddings into
dose-response curves (as in GAN-DL, Mascolini et al. 2022, BMC Bioinformatics).

Cells are placed on the line from the mean of the control cells (score 0) to the mean of a reference
perturbation (score 1): ``score = (x - mean_control) . d / |d|^2`` with ``d = mean_reference - mean_control``,
in the standardised embedding space the clustering uses. Averaging the scores per treatment and dose gives
a curve that needs no clustering and no labels beyond which wells are controls. Pure: numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, InputError


@dataclass(frozen=True)
class PerturbationAxis:
    """Origin (control mean) and direction (reference mean - control mean) in the prepared feature space."""

    origin: np.ndarray
    direction: np.ndarray
    n_control: int
    n_reference: int

    def score(self, features: np.ndarray) -> np.ndarray:
        """Position of each cell on the axis: 0 = the average control cell, 1 = the average reference cell."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.direction.size:
            raise InputError(
                f"Features of shape {features.shape} do not match the axis ({self.direction.size} dimensions)."
            )
        return (features - self.origin) @ self.direction / float(self.direction @ self.direction)


def parse_selector(text: str) -> dict[str, str]:
    """``"compound=DMSO,concentration=0"`` -> ``{"compound": "DMSO", "concentration": "0"}`` (CLI syntax)."""
    selector = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        column, sep, value = part.partition("=")
        if not sep or not column.strip():
            raise ConfigError(f"Cannot read {part!r} in {text!r}: write COLUMN=VALUE[,COLUMN=VALUE...].")
        selector[column.strip()] = value.strip()
    if not selector:
        raise ConfigError("An empty cell selection: write COLUMN=VALUE, e.g. compound=DMSO.")
    return selector


def select_cells(cells: pd.DataFrame, selector: Mapping[str, object], what: str) -> np.ndarray:
    """Boolean mask of the cells whose columns equal every value of ``selector`` (compared as text, so
    ``concentration=50`` matches 50.0 too); a clear error naming the column or the values present."""
    mask = np.ones(len(cells), dtype=bool)
    for column, value in selector.items():
        if column not in cells.columns:
            raise InputError(
                f"The {what} selection names column {column!r}, which the cell table does not have "
                f"(it has: {', '.join(map(str, cells.columns))})."
            )
        mask &= _as_text(cells[column]).to_numpy() == _as_text(pd.Series([value])).iloc[0]
    if not mask.any():
        present = {c: sorted(_as_text(cells[c]).unique().tolist())[:10] for c in selector}
        raise InputError(f"No cell matches the {what} selection {dict(selector)}; values present: {present}.")
    return mask


def _as_text(values: pd.Series) -> pd.Series:
    """Numbers written without a trailing '.0' so 50 and 50.0 compare equal; everything else as str."""
    numeric = pd.to_numeric(values, errors="coerce")
    text = values.astype(str).str.strip()
    is_number = numeric.notna()
    text[is_number] = numeric[is_number].map(lambda v: f"{v:g}")
    return text


def fit_axis(features: np.ndarray, control: np.ndarray, reference: np.ndarray) -> PerturbationAxis:
    """The axis from the control cells' mean to the reference cells' mean (boolean masks over the rows)."""
    features = np.asarray(features)
    control, reference = np.asarray(control, dtype=bool), np.asarray(reference, dtype=bool)
    if (control & reference).any():
        raise ConfigError(
            f"{int((control & reference).sum())} cells are both control and reference: the two selections "
            "must not overlap."
        )
    origin = features[control].mean(axis=0, dtype=np.float64)
    direction = features[reference].mean(axis=0, dtype=np.float64) - origin
    if not np.isfinite(direction).all() or float(direction @ direction) <= 1e-12:
        raise InputError(
            "The control and reference cells have the same average embedding: there is no perturbation axis "
            "to measure along (is the reference really perturbed, and did training work?)."
        )
    return PerturbationAxis(origin, direction, int(control.sum()), int(reference.sum()))


def dose_response(scores: np.ndarray, cells: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by`` (e.g. compound, concentration): cell count, mean, sd, standard error and median
    of the on-perturbation score, sorted by the group columns (numbers numerically)."""
    missing = [c for c in by if c not in cells.columns]
    if missing:
        raise InputError(f"Cannot group by {missing}: the cell table has {', '.join(map(str, cells.columns))}.")
    if len(scores) != len(cells):
        raise InputError(f"{len(scores)} scores for {len(cells)} cells.")
    frame = cells[list(by)].copy()
    frame["score"] = np.asarray(scores, dtype=np.float64)
    grouped = frame.groupby(list(by), dropna=False, sort=True)["score"]
    table = grouped.agg(n_cells="size", mean="mean", sd="std", median="median").reset_index()
    table["sem"] = table["sd"] / np.sqrt(table["n_cells"])
    return table[[*by, "n_cells", "mean", "sd", "sem", "median"]]
