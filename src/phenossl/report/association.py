"""How much a clustering and an embedding follow one per-cell variable.

Two questions, side by side: do the *clusters* follow it (AMI for a category; for a number the correlation
ratio eta^2, and AMI of its quantile bins so that numbers and categories share one scale), and does the
*embedding* hold it (a linear probe, cross-validated with whole wells held out, so that neighbouring cells of
one well, which share density and staining, cannot leak from training into testing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenossl.report.variables import CATEGORICAL, Variable, family

N_BINS = 5  # quantile bins of a continuous variable for its AMI
MAX_FOLDS = 5
#: the ridge penalties tried (efficient leave-one-out within the training folds): a fixed small one overfits
#: 512 dimensions of a few hundred cells into R2 far below zero on the held-out wells
RIDGE_ALPHAS = tuple(10.0 ** np.arange(-2, 6))
PROBE_MAX_CELLS = 20_000  # the probe's seeded sample: a linear model does not need more, and 2 cores stay free
COLUMNS = ["variable", "group", "family", "kind", "cluster_ami", "eta2", "probe", "probe_score", "probe_chance", "n_cells",
           "note"]


def correlation_ratio(values: np.ndarray, clusters: np.ndarray) -> float:
    """eta^2: the share of the variable's variance that lies between clusters (0 = the clusters do not differ
    in it, 1 = it is constant within each cluster). NaN when the variable does not vary."""
    values = np.asarray(values, dtype=np.float64)
    total = ((values - values.mean()) ** 2).sum()
    if values.size < 2 or total <= 0:
        return float("nan")
    means = pd.Series(values).groupby(np.asarray(clusters)).transform("mean").to_numpy()
    return float(((means - values.mean()) ** 2).sum() / total)


def quantile_bins(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Codes of equal-count bins by rank; tied values share their average rank, so they share a bin and a
    variable with fewer distinct values than bins keeps each value apart."""
    rank = pd.Series(values).rank(method="average").to_numpy()
    return np.minimum(((rank - 0.5) / len(rank) * n_bins).astype(int), n_bins - 1)


def known(variable: Variable) -> np.ndarray:
    """Which cells have a value of ``variable``."""
    return pd.notna(pd.Series(variable.values)).to_numpy()


def cluster_scores(variable: Variable, clusters: np.ndarray) -> tuple[float, float]:
    """(AMI, eta^2) of the clusters against the variable's known values; eta^2 is NaN for a category and the
    AMI of a number is taken on its quantile bins."""
    from phenossl.cluster.metrics import ami

    rows = known(variable)
    if rows.sum() < 2:
        return float("nan"), float("nan")
    values, labels = variable.values[rows], np.asarray(clusters)[rows]
    if variable.kind == CATEGORICAL:
        return ami(values, labels), float("nan")
    values = values.astype(np.float64)
    return ami(quantile_bins(values), labels), correlation_ratio(values, labels)


def probe_folds(groups: np.ndarray) -> int:
    return min(MAX_FOLDS, len(np.unique(groups)))


def probe_score(features: np.ndarray, variable: Variable, groups: np.ndarray, *, seed: int = 0,
                max_cells: int = PROBE_MAX_CELLS) -> tuple[float, float, str]:
    """(score, chance, what) of a linear probe predicting the variable from the features, with GroupKFold over
    ``groups`` (wells): out-of-fold R^2 (ridge, its penalty chosen within the training folds) for a number, balanced accuracy (logistic regression) for a
    category, whose chance level is 1 / number of classes. NaN with the reason in ``what`` when it cannot run."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import balanced_accuracy_score, r2_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = np.flatnonzero(known(variable))
    if len(rows) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    groups = np.asarray(groups)[rows]
    if probe_folds(groups) < 2:
        return float("nan"), float("nan"), "skipped: fewer than 2 wells to hold out"
    x = np.asarray(features[rows], dtype=np.float64)
    categorical = variable.kind == CATEGORICAL
    if categorical:
        y = pd.factorize(pd.Series(variable.values[rows]).astype(str))[0]
        predicted = np.empty_like(y)
    else:
        y = variable.values[rows].astype(np.float64)
        predicted = np.empty_like(y)
    for train, test in GroupKFold(n_splits=probe_folds(groups)).split(x, y, groups):
        if categorical and len(np.unique(y[train])) < 2:
            predicted[test] = y[train][0]
            continue
        model = (LogisticRegression(max_iter=500, random_state=seed) if categorical
                 else RidgeCV(alphas=RIDGE_ALPHAS))
        predicted[test] = make_pipeline(StandardScaler(), model).fit(x[train], y[train]).predict(x[test])
    if categorical:
        return float(balanced_accuracy_score(y, predicted)), 1.0 / len(np.unique(y)), "balanced accuracy"
    return float(r2_score(y, predicted)), 0.0, "R2"


def well_groups(cells: pd.DataFrame) -> np.ndarray | None:
    """One group per well of a plate (well names repeat across plates), or None without a well column."""
    if "well" not in cells.columns:
        return None
    plate = cells["plate"].astype(str) if "plate" in cells.columns else ""
    return (plate + "/" + cells["well"].astype(str)).to_numpy()


def association_table(variables: Sequence[Variable], clusters: np.ndarray, features: np.ndarray,
                      groups: np.ndarray | None, *, seed: int = 0,
                      max_cells: int = PROBE_MAX_CELLS) -> pd.DataFrame:
    """One row per variable (COLUMNS): the clusters' AMI / eta^2, the probe's score and chance; a variable that
    is not available keeps its reason in ``note`` and empty scores."""
    rows = []
    n_groups = 0 if groups is None else len(np.unique(groups))
    for variable in variables:
        row = {"variable": variable.name, "group": variable.group, "family": family(variable.name, variable.group),
               "kind": variable.kind, "cluster_ami": np.nan,
               "eta2": np.nan, "probe": "", "probe_score": np.nan, "probe_chance": np.nan, "n_cells": 0,
               "note": variable.note}
        if variable.available:
            row["n_cells"] = int(known(variable).sum())
            row["cluster_ami"], row["eta2"] = cluster_scores(variable, clusters)
            if groups is None or n_groups < 2:
                row["probe"] = "skipped: " + ("no well column" if groups is None else "fewer than 2 wells")
            elif variable.name == "well":
                row["probe"] = "skipped: the probe holds whole wells out, so a well is never seen in training"
            else:
                score, chance, what = probe_score(features, variable, groups, seed=seed, max_cells=max_cells)
                row.update(probe=what, probe_score=score, probe_chance=chance)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
