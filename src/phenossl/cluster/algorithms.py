"""The clustering algorithms, in one registry: K-Means, a Gaussian mixture and HDBSCAN (all scikit-learn's), each
seeded, each reclustering the cached prepared features (never re-embedding), each returning the same
:class:`~phenossl.cluster.kmeans.Clustering` (labels, centroids, distances, the cells nearest each centroid).

The configuration (``cluster.algorithm`` and its parameters), the command line (``phenossl cluster --algorithm``)
and napari's Clusters step all read :data:`ALGORITHMS`.

- ``kmeans``: :mod:`phenossl.cluster.kmeans` (coarse-to-fine above 20k cells).
- ``gmm``: ``sklearn.mixture.GaussianMixture`` with ``k`` components (diagonal covariances by default: a full
  512 x 512 covariance per component needs far more cells than a plate has), K-Means-initialised and seeded. Above
  ``GMM_MAX_FIT`` cells it is fitted on a seeded subsample and every cell gets its most probable component. The
  centroids are the component means; ``distance`` is the Euclidean distance to the own component's mean (as for
  K-Means), ``inertia`` the sum of its squares.
- ``hdbscan``: ``sklearn.cluster.HDBSCAN``; it finds the number of clusters itself (``k`` is not used) and leaves
  cells in no dense region unassigned: their label is :data:`NOISE` (-1), a category of its own ("noise" in the CSV,
  grey in napari). HDBSCAN's neighbour searches degrade to all pairs in 512 dimensions (measured on a 2-core CPU:
  19 s for 5k cells at D=512, 76 s for 10k; 0.4 s for 5k after a 32-dimensional PCA), so it runs on a seeded PCA
  to ``HDBSCAN_PCA_DIMS`` dimensions of the prepared features, fitted on at most ``HDBSCAN_MAX_FIT`` seeded cells
  (about 3-4 s at 10k); every other cell takes the label of its nearest fitted cell (in that PCA space; noise when
  that cell is noise), found by brute force in float32 chunks. Measured (2-core CPU shared with other work, D=512):
  3-5 s for 20k cells, about 4 s for 100k (the assignment of the 90k others: about 1 s). Memory stays bounded by the fit sample, never N x N. Each cluster's centroid is the mean of
  its cells in the prepared space; noise cells have no centroid: their ``distance`` is NaN, they are in no
  ``nearest`` list (``centroid_rank`` 0), and ``k`` counts the clusters without the noise.

Reproducibility: the same seed gives the same labels on the same machine and thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phenossl.cluster.kmeans import (
    Clustering,
    check_cluster_request,
    check_seed,
    distances_to_centroids,
    fit_kmeans,
    nearest_to_centroids,
    seeded_subsample,
)
from phenossl.errors import ConfigError, TooFewCellsError

NOISE = -1  # HDBSCAN's label for cells in no cluster
NOISE_NAME = "noise"
GMM_MAX_FIT = 20_000  # above this many cells the mixture is fitted on a seeded subsample
GMM_COVARIANCES = ("diag", "spherical", "full", "tied")
HDBSCAN_MAX_FIT = 10_000  # HDBSCAN is fitted on at most this many seeded cells, the rest join their nearest
HDBSCAN_PCA_DIMS = 32  # HDBSCAN runs on a seeded PCA of the prepared features to this many dimensions
ASSIGN_CHUNK_ROWS = 2048  # cells per chunk when assigning the unfitted cells to their nearest fitted cell


@dataclass(frozen=True)
class AlgorithmSpec:
    """One clustering algorithm: its name, whether it takes k, what it says to a user, and how it fits."""

    name: str
    label: str  # for menus
    uses_k: bool
    description: str
    #: (features, k, seed, params) -> labels 0..k-1 (NOISE for none), and the centroids when the model has its own
    fit: Callable[..., tuple[np.ndarray, np.ndarray | None]] = field(repr=False)


def _fit_kmeans(features: np.ndarray, k: int, seed: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    labels, centroids, _ = fit_kmeans(features, k, seed)
    return labels, centroids


def _fit_gmm(features: np.ndarray, k: int, seed: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.mixture import GaussianMixture

    n_cells = features.shape[0]
    size = max(GMM_MAX_FIT, 50 * k)
    sample = features if n_cells <= size else features[seeded_subsample(n_cells, size, seed)]
    model = GaussianMixture(n_components=k, covariance_type=params.get("covariance_type", "diag"),
                            reg_covar=1e-4, random_state=seed).fit(sample)
    labels = np.empty(n_cells, dtype=np.int64)
    for start in range(0, n_cells, 8 * ASSIGN_CHUNK_ROWS):
        labels[start:start + 8 * ASSIGN_CHUNK_ROWS] = model.predict(features[start:start + 8 * ASSIGN_CHUNK_ROWS])
    used = np.unique(labels)  # a component no cell is most likely in is dropped (its mean with it)
    return np.searchsorted(used, labels).astype(np.int64), model.means_[used].astype(np.float32)


def _fit_hdbscan(features: np.ndarray, k: int, seed: int, params: dict[str, Any]) -> tuple[np.ndarray, None]:
    import warnings

    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    n_cells = features.shape[0]
    max_fit = int(params.get("max_fit", HDBSCAN_MAX_FIT))
    fitted = np.arange(n_cells) if n_cells <= max_fit else seeded_subsample(n_cells, max_fit, seed)
    sample = features[fitted]
    dims = min(HDBSCAN_PCA_DIMS, sample.shape[0], sample.shape[1])
    pca = PCA(dims, random_state=seed).fit(sample) if dims < features.shape[1] else None
    reduced = pca.transform(sample).astype(np.float32) if pca is not None else np.asarray(sample, np.float32)
    min_samples = params.get("min_samples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9's note on its `copy` default
        model = HDBSCAN(min_cluster_size=int(params["min_cluster_size"]),
                        min_samples=None if min_samples is None else int(min_samples), copy=True).fit(reduced)
    fitted_labels = model.labels_.astype(np.int64)
    if fitted.size == n_cells:
        return _dense_labels(fitted_labels), None
    labels = np.empty(n_cells, dtype=np.int64)
    labels[fitted] = fitted_labels
    rest = np.setdiff1d(np.arange(n_cells), fitted, assume_unique=True)
    squared = np.einsum("ij,ij->i", reduced, reduced)
    for start in range(0, rest.size, ASSIGN_CHUNK_ROWS):
        rows = rest[start:start + ASSIGN_CHUNK_ROWS]
        block = pca.transform(features[rows]) if pca is not None else features[rows]
        # |a - b|^2 = |b|^2 - 2 a.b (+ |a|^2, the same for every candidate), float32 in place: one
        # (chunk x fitted) scratch matrix, 80 MB at 2048 x 10k
        scores = np.asarray(block, dtype=np.float32) @ reduced.T
        scores *= -2.0
        scores += squared
        labels[rows] = fitted_labels[np.argmin(scores, axis=1)]
        del scores
    return _dense_labels(labels), None


def _dense_labels(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0..k-1 in order of first appearance of their sorted ids (noise stays NOISE), so a
    component or cluster that ended up empty leaves no gap."""
    ids = np.unique(labels[labels != NOISE])
    dense = np.full(labels.shape, NOISE, dtype=np.int64)
    kept = labels != NOISE
    dense[kept] = np.searchsorted(ids, labels[kept])
    return dense


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec("kmeans", "K-Means", True, "K-Means with k clusters (the default; every cell in one)",
                      _fit_kmeans),
        AlgorithmSpec("gmm", "Gaussian mixture", True,
                      "a Gaussian mixture with k components (diagonal covariances): clusters of different spreads",
                      _fit_gmm),
        AlgorithmSpec("hdbscan", "HDBSCAN", False,
                      "HDBSCAN: finds the number of clusters itself, cells in no dense region are 'noise' (-1); "
                      "min_cluster_size sets the smallest cluster", _fit_hdbscan),
    )
}


def algorithm_names() -> tuple[str, ...]:
    return tuple(ALGORITHMS)


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The registered algorithm ``name``; ConfigError listing the registered ones otherwise."""
    if name not in ALGORITHMS:
        raise ConfigError(f"Unknown clustering algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}.")
    return ALGORITHMS[name]


def algorithms_help() -> str:
    return "\n".join(f"  {spec.name}: {spec.description}" for spec in ALGORITHMS.values())


def check_algorithm_request(algorithm: str, n_cells: int, k: int, n_nearest: int, seed: int,
                            params: dict[str, Any]) -> None:
    """ConfigError / TooFewCellsError (with the numbers) for a request that cannot work."""
    spec = algorithm_spec(algorithm)
    if spec.uses_k:
        check_cluster_request(n_cells, k, n_nearest, seed)
        if algorithm == "gmm" and params.get("covariance_type", "diag") not in GMM_COVARIANCES:
            raise ConfigError(f"gmm covariance_type must be one of {', '.join(GMM_COVARIANCES)}; "
                              f"got {params.get('covariance_type')!r}.")
        return
    check_seed(seed)
    if isinstance(n_nearest, bool) or not isinstance(n_nearest, (int, np.integer)) or n_nearest < 1:
        raise ConfigError(f"n_nearest (cells listed per centroid) must be at least 1; got {n_nearest!r}.")
    size = params.get("min_cluster_size")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ConfigError(f"hdbscan min_cluster_size must be a whole number >= 2 (the smallest group of cells "
                          f"called a cluster); got {size!r}.")
    if size > n_cells:
        raise TooFewCellsError(f"hdbscan min_cluster_size is {size} but there are only {n_cells} cells: lower it.")
    samples = params.get("min_samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, (int, np.integer))
                                or samples < 1):
        raise ConfigError(f"hdbscan min_samples must be a whole number >= 1, or null (= min_cluster_size); "
                          f"got {samples!r}.")
    max_fit = params.get("max_fit", HDBSCAN_MAX_FIT)
    if isinstance(max_fit, bool) or not isinstance(max_fit, (int, np.integer)) or max_fit < 2 * size:
        raise ConfigError(f"hdbscan max_fit must be a whole number >= 2 x min_cluster_size ({2 * size}); "
                          f"got {max_fit!r}.")


def centroids_of(features: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, D) float32 mean of each cluster's cells (float64 sums, in row chunks; noise left out)."""
    sums = np.zeros((k, features.shape[1]), dtype=np.float64)
    for start in range(0, features.shape[0], 8 * ASSIGN_CHUNK_ROWS):
        block_labels = labels[start:start + 8 * ASSIGN_CHUNK_ROWS]
        kept = block_labels != NOISE
        np.add.at(sums, block_labels[kept], features[start:start + 8 * ASSIGN_CHUNK_ROWS][kept].astype(np.float64))
    counts = np.bincount(labels[labels != NOISE], minlength=k).astype(np.float64)
    return (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)


def cluster_with(features: np.ndarray, algorithm: str = "kmeans", k: int = 4, *, seed: int = 0, n_nearest: int = 8,
                 params: dict[str, Any] | None = None) -> Clustering:
    """Cluster prepared (N, D) float32 features with a registered algorithm (``params``: its parameters, e.g.
    ``{"min_cluster_size": 20}`` for hdbscan, ``{"covariance_type": "diag"}`` for gmm); same seed, same result."""
    params = dict(params or {})
    check_algorithm_request(algorithm, features.shape[0], k, n_nearest, seed, params)
    if algorithm == "kmeans":
        from phenossl.cluster.kmeans import cluster_features

        return cluster_features(features, k, seed=seed, n_nearest=n_nearest)
    spec = algorithm_spec(algorithm)
    seed, n_nearest = int(seed), int(n_nearest)
    labels, centroids = spec.fit(features, int(k) if spec.uses_k else 0, seed, params)
    n_clusters = int(labels.max()) + 1 if (labels != NOISE).any() else 0
    if centroids is None:  # HDBSCAN: the mean of each cluster's cells
        centroids = centroids_of(features, labels, n_clusters)
    kept = labels != NOISE
    distance = np.full(labels.shape, np.nan, dtype=np.float32)
    if kept.any():
        distance[kept] = distances_to_centroids(features[kept] if not kept.all() else features, labels[kept],
                                                centroids)
    nearest, nearest_rank = _nearest_with_noise(labels, distance, n_clusters, n_nearest)
    inertia = float(np.square(distance[kept].astype(np.float64)).sum())
    for array in (labels, centroids, distance, nearest_rank):
        array.flags.writeable = False
    return Clustering(labels=labels, centroids=centroids, distance=distance, nearest=nearest,
                      nearest_rank=nearest_rank, k=n_clusters, seed=seed, inertia=inertia, algorithm=algorithm,
                      params=params)


def _nearest_with_noise(labels: np.ndarray, distance: np.ndarray, k: int,
                        n_nearest: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """nearest_to_centroids for the clustered cells only: noise has no centroid, so it is in no list."""
    kept = np.flatnonzero(labels != NOISE)
    nearest_rank = np.zeros(labels.size, dtype=np.int64)
    if kept.size == labels.size:
        return nearest_to_centroids(labels, distance, k, n_nearest)
    nearest_kept, rank_kept = nearest_to_centroids(labels[kept], distance[kept], k, n_nearest)
    nearest = {}
    for cluster, members in nearest_kept.items():
        rows = kept[members].astype(np.int64)
        rows.flags.writeable = False
        nearest[cluster] = rows
    nearest_rank[kept] = rank_kept
    return nearest, nearest_rank


def cluster_name(cluster: int) -> str:
    """How a cluster id reads in tables and legends: its number, or "noise" for HDBSCAN's unassigned cells."""
    return NOISE_NAME if int(cluster) == NOISE else str(int(cluster))
