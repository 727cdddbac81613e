"""Choosing k without guessing: score k = 2..15 on the cached embedding space and take the best silhouette.

The rule (``phenossl cluster --k auto`` and napari's "Suggest k"): cluster a seeded subsample of at most
``SUGGEST_SAMPLE`` cells with each k of the range (the run's algorithm, K-Means or the Gaussian mixture, same
seed), compute the mean silhouette of each on that sample, and choose the k with the highest silhouette (on a tie,
the smaller k). When a label column is chosen (a treatment, say), the AMI between it and the clusters is computed
on the same sample and shown beside the silhouette, as a second opinion: it never chooses k, so that the clusters
are not tuned to the label they are later judged against.

Speed: the sample's pairwise distances are computed once and every k's silhouette reads them (4000 cells: a
64 MB float32 matrix). Measured on a 2-core CPU shared with other work, k = 2..15: 2-4.5 s with K-Means and
3-6 s with the Gaussian mixture, at 20k x 512 and at 100k x 512 alike (the sample's size, not the run's, sets
the cost). HDBSCAN takes no k: it has no curve.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenossl.cluster.algorithms import algorithm_spec
from phenossl.cluster.kmeans import check_seed, seeded_subsample
from phenossl.errors import ConfigError, TooFewCellsError

K_RANGE = (2, 15)
SUGGEST_SAMPLE = 4000  # cells clustered and scored per k


@dataclass(frozen=True, eq=False)
class KCurve:
    """Silhouette (and AMI with a label column) for each k tried, and the k the rule chose."""

    ks: np.ndarray  # (m,) int
    silhouette: np.ndarray  # (m,) float, NaN where undefined
    ami: np.ndarray | None  # (m,) float, against label_column; None without one
    label_column: str | None
    best_k: int
    algorithm: str
    n_sample: int
    seed: int
    seconds: float

    RULE = "the k with the highest silhouette on a seeded sample (ties: the smaller k)"

    def table(self) -> pd.DataFrame:
        """One row per k: ``k``, ``silhouette``, ``ami_<column>`` (when a column was chosen), ``chosen``."""
        columns = {"k": self.ks, "silhouette": self.silhouette}
        if self.ami is not None:
            columns[f"ami_{self.label_column}"] = self.ami
        columns["chosen"] = self.ks == self.best_k
        return pd.DataFrame(columns)

    def summary(self) -> dict:
        """What metrics.json records about the choice."""
        return {"rule": self.RULE, "algorithm": self.algorithm, "sample": self.n_sample, "seed": self.seed,
                "k": self.ks.tolist(), "silhouette": self.silhouette.tolist(),
                **({f"ami_{self.label_column}": self.ami.tolist()} if self.ami is not None else {}),
                "chosen": self.best_k}

    def describe(self) -> str:
        best = float(self.silhouette[self.ks == self.best_k][0])
        return (f"k={self.best_k}: the best silhouette ({best:.3f}) of k={self.ks[0]}..{self.ks[-1]} "
                f"on {self.n_sample:,} seeded cells ({self.seconds:.1f} s)")


def suggest_k(features: np.ndarray, *, algorithm: str = "kmeans", k_range: tuple[int, int] = K_RANGE,
              seed: int = 0, labels: Sequence | np.ndarray | pd.Series | None = None,
              label_column: str | None = None, params: dict | None = None,
              sample_size: int = SUGGEST_SAMPLE) -> KCurve:
    """Score every k of ``k_range`` (inclusive) on a seeded sample of the prepared ``features`` and choose the
    one with the best silhouette. ``labels`` (one per cell, e.g. the treatment column; missing values skipped)
    adds the AMI curve. ConfigError / TooFewCellsError for a request that cannot work."""
    from sklearn.metrics import pairwise_distances, silhouette_score

    from phenossl.cluster.metrics import ami

    started = time.perf_counter()
    spec = algorithm_spec(algorithm)
    if not spec.uses_k:
        raise ConfigError(f"{algorithm} finds the number of clusters itself: there is no k to choose. Use "
                          "kmeans or gmm with k auto, or hdbscan without it.")
    check_seed(seed)
    low, high = (int(v) for v in k_range)
    if low < 2 or high < low:
        raise ConfigError(f"The k range to try must be 2 <= low <= high; got {low}..{high}.")
    n_cells = int(features.shape[0])
    if n_cells < 3:
        raise TooFewCellsError(f"Choosing k needs at least 3 cells (a silhouette compares 2 clusters or more, "
                               f"with a cell to spare); there {'is' if n_cells == 1 else 'are'} {n_cells}.")
    if labels is not None and len(labels) != n_cells:
        raise ConfigError(f"The label column has {len(labels)} values but there are {n_cells} cells.")
    rows = seeded_subsample(n_cells, int(sample_size), seed)
    sample = np.ascontiguousarray(features[rows], dtype=np.float32)
    high = min(high, rows.size - 1)
    low = min(low, high)
    distances = pairwise_distances(sample).astype(np.float32)
    np.fill_diagonal(distances, 0.0)
    truth = None
    if labels is not None:
        truth = pd.Series(np.asarray(labels, dtype=object)[rows])
        known = truth.notna().to_numpy()
        truth = truth[known].to_numpy() if known.sum() >= 2 else None
    ks = np.arange(low, high + 1)
    scores, amis = np.full(ks.size, np.nan), np.full(ks.size, np.nan)
    for i, k in enumerate(ks):
        predicted, _ = spec.fit(sample, int(k), seed, dict(params or {}))
        if 2 <= np.unique(predicted).size <= rows.size - 1:
            scores[i] = silhouette_score(distances, predicted, metric="precomputed")
        if truth is not None:
            amis[i] = ami(truth, predicted[known])
    if np.isnan(scores).all():
        raise TooFewCellsError(f"No k of {low}..{high} gave a silhouette on these {rows.size} cells (they may all "
                               "be identical): choose k yourself.")
    best_k = int(ks[int(np.nanargmax(scores))])  # the first maximum: ties go to the smaller k
    return KCurve(ks=ks, silhouette=scores, ami=amis if truth is not None else None,
                  label_column=label_column if truth is not None else None, best_k=best_k, algorithm=algorithm,
                  n_sample=int(rows.size), seed=int(seed), seconds=time.perf_counter() - started)
