"""How good is a clustering? Silhouette (compactness vs separation, no ground truth needed) and
adjusted mutual information against known per-cell labels such as the compound or phenotype.

Silhouette costs O(n^2 D), so for large N it is computed on a seeded subsample (scikit-learn's
``sample_size``): stable to about +-0.01 at 10k cells and far cheaper than all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenossl.cluster.space import EmbeddingSpace, check_embeddings
from phenossl.errors import InputError

DEFAULT_LABEL_COLUMNS: tuple[str, ...] = ("compound", "treatment", "phenotype", "moa")
SILHOUETTE_SAMPLE = 10_000


def ami(
    labels_true: Sequence | np.ndarray | pd.Series, labels_pred: Sequence | np.ndarray | pd.Series
) -> float:
    """Adjusted mutual information between two labelings of the same cells (1 = same partition,
    ~0 = unrelated). Labels may be any hashable values (strings, ints); their names do not matter."""
    true_codes = pd.factorize(np.asarray(labels_true, dtype=object), use_na_sentinel=False)[0]
    pred_codes = pd.factorize(np.asarray(labels_pred, dtype=object), use_na_sentinel=False)[0]
    if true_codes.size != pred_codes.size:
        raise InputError(
            f"Cannot compare labelings of different lengths: {true_codes.size} vs {pred_codes.size} cells."
        )
    from sklearn.metrics import adjusted_mutual_info_score

    return float(adjusted_mutual_info_score(true_codes, pred_codes))


def silhouette(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, sample_size: int = SILHOUETTE_SAMPLE
) -> float:
    """Mean silhouette (Euclidean) on at most ``sample_size`` seeded cells; NaN when undefined
    (fewer than 2 clusters, or every cell in its own cluster, within the sample)."""
    from sklearn.metrics import silhouette_score

    n_cells = features.shape[0]
    sample = None if n_cells <= sample_size else int(sample_size)
    if sample is None:
        n_labels = np.unique(labels).size
        if not 2 <= n_labels <= n_cells - 1:
            return float("nan")
        return float(silhouette_score(features, labels))
    # scikit-learn draws the sample as permutation(n)[:sample_size]; check it has a usable label count.
    indices = np.random.RandomState(seed).permutation(n_cells)[:sample]
    n_labels = np.unique(labels[indices]).size
    if not 2 <= n_labels <= sample - 1:
        return float("nan")
    return float(silhouette_score(features, labels, sample_size=sample, random_state=seed))


def label_columns_to_score(cells: pd.DataFrame, label_columns: Sequence[str] | None) -> list[str]:
    """The requested label columns (InputError naming any that are missing), or the known defaults present."""
    if label_columns is None:
        return [column for column in DEFAULT_LABEL_COLUMNS if column in cells.columns]
    missing = [column for column in label_columns if column not in cells.columns]
    if missing:
        raise InputError(
            f"Label column(s) {', '.join(map(repr, missing))} not in the cell table; "
            f"its columns are: {', '.join(map(str, cells.columns))}."
        )
    return list(label_columns)


def clustering_metrics(
    space_or_features: EmbeddingSpace | np.ndarray,
    labels: np.ndarray,
    cells: pd.DataFrame | None = None,
    label_columns: Sequence[str] | None = None,
    seed: int = 0,
    silhouette_sample: int = SILHOUETTE_SAMPLE,
) -> dict[str, float]:
    """``{"silhouette": s, "ami_<column>": a, ...}`` for one clustering.

    Silhouette is computed in the given feature space (an EmbeddingSpace's prepared features, or raw
    (N, D) features). AMI is computed for each label column of ``cells`` (row i = cell i), default:
    whichever of compound / treatment / phenotype / moa exist; cells with a missing label are left out
    of that column's score (NaN if fewer than 2 cells remain). Noise cells (label -1, HDBSCAN) are left out of
    the silhouette (they belong to no cluster) and count as one more category in the AMI.
    """
    features = (
        space_or_features.features
        if isinstance(space_or_features, EmbeddingSpace)
        else (check_embeddings(space_or_features, "features"))
    )
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise InputError(
            f"labels must have one entry per cell ({features.shape[0]}); got shape {labels.shape}."
        )
    clustered = labels >= 0  # HDBSCAN's noise (-1) is no cluster: left out of the silhouette, a category for AMI
    scored = (features, labels) if clustered.all() else (features[clustered], labels[clustered])
    metrics = {"silhouette": silhouette(*scored, seed=seed, sample_size=silhouette_sample)
               if clustered.any() else float("nan")}
    if cells is None:
        return metrics
    if len(cells) != labels.size:
        raise InputError(f"The cell table has {len(cells)} rows but the clustering has {labels.size} cells.")
    for column in label_columns_to_score(cells, label_columns):
        known = cells[column].notna().to_numpy()
        metrics[f"ami_{column}"] = (
            ami(cells[column].to_numpy()[known], labels[known]) if known.sum() >= 2 else float("nan")
        )
    return metrics
