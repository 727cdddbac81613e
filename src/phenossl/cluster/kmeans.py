"""K-Means on prepared features, plus the cells nearest each centroid (the cluster's "typical" cells).

Reclustering must feel interactive at 100k x 512, so large data sets are fitted coarse-to-fine, all
with scikit-learn's KMeans: K-Means++ and Lloyd on a seeded subsample of ``KMEANS_SUBSAMPLE`` cells,
then at most ``KMEANS_REFINE_MAX_ITER`` Lloyd iterations on every cell, started from those centres.
K-Means++ seeding on all cells is the expensive part (scikit-learn computes its distances in float64),
and a 20k sample is enough to place the centres; the capped refinement then moves inertia by < 0.01 %.
Measured at 100k x 512 (2-core CPU, idle; one-core CPU time in brackets): this scheme 1.0 s (1.7 s)
at k=10 and 1.2-1.5 s (2.4 s) at k=20, 0.3 s at 10k cells; full-data KMeans costs 4.4 s / 9.4 s of
CPU for the same inertia (+-0.03 %). MiniBatchKMeans is faster (0.4-0.5 s of CPU) but gave +0.3 % /
+0.6 % inertia and clearly less stable partitions at k=20 (AMI between seeds 0.63 vs 0.76), so it is
not used. One K-Means++ start (scikit-learn's default): three improved inertia by < 0.2 % at three
times the cost. Peak memory while fitting: the features plus one transient copy (scikit-learn
centres a copy), i.e. about 2 x 205 MB at 100k x 512.

Above ``KMEANS_FAISS_ABOVE`` cells (a screen: up to millions) faiss's K-Means is used when it is installed (it is
a dependency; scikit-learn's path is kept for where it is not): trained on a seeded sample of
``FAISS_POINTS_PER_CENTROID`` cells per centroid, then every cell is assigned to its nearest centre in chunks, so
nothing the size of the features is copied (scikit-learn's refinement copies them: 2 GiB more at 1M x 512).
benchmarks/clustering_1m.py measures both (docs/benchmarks.md, 3f).

Reproducibility: the same seed gives the same result on the same machine and thread count. With
more than two threads scikit-learn's parallel reduction may change the last bits of the centroids,
and so, rarely, the label of a cell lying almost exactly between two centroids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phenossl.errors import ConfigError, TooFewCellsError

KMEANS_SUBSAMPLE = 20_000  # above this many cells, fit coarse-to-fine (subsample, then all cells)
KMEANS_N_INIT = 1  # K-Means++ starts
KMEANS_MAX_ITER = 300  # Lloyd iterations on the (sub)sample: scikit-learn's default
KMEANS_REFINE_MAX_ITER = 20  # Lloyd iterations on all cells, started from the subsample's centres
DISTANCE_CHUNK_ROWS = 4096  # 16 MB of float64 scratch at D=512
KMEANS_FAISS_ABOVE = 200_000  # above this many cells, faiss (when installed): bounded memory, about 10x faster
FAISS_POINTS_PER_CENTROID = 1024  # faiss's training sample: 20k cells at k=20 (its default, 256, is 5k)
FAISS_ITERATIONS = 25
FAISS_CHUNK_ROWS = 65_536  # cells assigned at a time (their distances to k centres only)


@dataclass(frozen=True, eq=False)
class Clustering:
    """One clustering (K-Means, or another algorithm of phenossl.cluster.algorithms). Centroids and distances
    live in the EmbeddingSpace's prepared features.

    ``nearest[c]`` holds the (at most n_nearest) members of cluster ``c`` closest to its centroid,
    nearest first; ``nearest_rank[i]`` is cell i's 1-based place in that list, 0 if it is not listed.
    Only members are listed, so every cell appears in at most one list. HDBSCAN leaves some cells in no
    cluster: their label is -1 ("noise"), their distance NaN, and they are in no list; ``k`` does not count them.
    """

    labels: np.ndarray  # (N,) int64, 0..k-1 (and -1, noise, for HDBSCAN)
    centroids: np.ndarray  # (k, D) float32
    distance: np.ndarray  # (N,) float32, Euclidean distance to the cell's own centroid (NaN for noise)
    nearest: dict[int, np.ndarray]
    nearest_rank: np.ndarray  # (N,) int64
    k: int
    seed: int
    inertia: float  # sum of squared distances, to compare runs with the same k
    algorithm: str = "kmeans"  # a name of phenossl.cluster.algorithms.ALGORITHMS
    params: dict[str, Any] = field(default_factory=dict)  # the algorithm's parameters (hdbscan: min_cluster_size...)

    @property
    def n_cells(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Cells per cluster, (k,) (noise cells are not counted: see ``n_noise``)."""
        return np.bincount(self.labels[self.labels >= 0], minlength=self.k)

    @property
    def n_noise(self) -> int:
        """Cells in no cluster (label -1: HDBSCAN's noise); 0 for K-Means and the Gaussian mixture."""
        return int((self.labels < 0).sum())


def check_seed(seed: int) -> None:
    """Seeds are whole numbers >= 0 (what numpy and scikit-learn accept)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"The random seed must be a whole number >= 0; got {seed!r}.")


def check_cluster_request(n_cells: int, k: int, n_nearest: int, seed: int = 0) -> None:
    """Raise ConfigError / TooFewCellsError (with the numbers) for a request that cannot work."""
    check_seed(seed)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"The number of clusters k must be a whole number; got {k!r}.")
    if k < 2:
        raise ConfigError(f"The number of clusters k must be at least 2; got {k}.")
    if k > n_cells:
        raise TooFewCellsError(
            f"Cannot make {k} clusters from {n_cells} cells: choose k <= {n_cells}, or add more cells."
        )
    if isinstance(n_nearest, bool) or not isinstance(n_nearest, (int, np.integer)) or n_nearest < 1:
        raise ConfigError(f"n_nearest (cells listed per centroid) must be at least 1; got {n_nearest!r}.")


def seeded_subsample(n_total: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` distinct rows out of ``n_total``, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=min(size, n_total), replace=False))


def fit_kmeans(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels (N,), centroids (k, D) and inertia of a seeded K-Means (coarse-to-fine for large N).

    scikit-learn centres a copy of the features while fitting (copy_x=True): a transient second
    float32 copy, but the shared features are never modified, so repeated runs stay identical and
    a UMAP running in another thread reads stable data. The refinement uses tol=0 (stop when no
    label changes, or after KMEANS_REFINE_MAX_ITER), which also spares scikit-learn a full-size
    variance computation.
    """
    from sklearn.cluster import KMeans

    n_cells = features.shape[0]
    if n_cells > KMEANS_FAISS_ABOVE and _faiss() is not None:
        return fit_kmeans_faiss(features, k, seed)
    subsample_size = max(KMEANS_SUBSAMPLE, 50 * k)
    coarse_data = (
        features if n_cells <= subsample_size else features[seeded_subsample(n_cells, subsample_size, seed)]
    )
    model = KMeans(
        n_clusters=k, n_init=KMEANS_N_INIT, max_iter=KMEANS_MAX_ITER, algorithm="lloyd", random_state=seed
    ).fit(coarse_data)
    if coarse_data is not features:
        del coarse_data
        model = KMeans(
            n_clusters=k,
            init=model.cluster_centers_,
            n_init=1,
            max_iter=KMEANS_REFINE_MAX_ITER,
            tol=0.0,
            algorithm="lloyd",
            random_state=seed,
        ).fit(features)
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32), float(model.inertia_)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def fit_kmeans_faiss(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels, centroids and inertia of faiss's K-Means (seeded; trained on a sample of
    ``FAISS_POINTS_PER_CENTROID`` cells per centroid), every cell then assigned in chunks of
    ``FAISS_CHUNK_ROWS``: memory beyond the features is the sample and one chunk's distances."""
    faiss = _faiss()
    n_cells, dims = features.shape
    sample = np.ascontiguousarray(features[seeded_subsample(n_cells, FAISS_POINTS_PER_CENTROID * k, seed)],
                                  dtype=np.float32)
    kmeans = faiss.Kmeans(dims, k, niter=FAISS_ITERATIONS, seed=seed, verbose=False,
                          max_points_per_centroid=FAISS_POINTS_PER_CENTROID, spherical=False)
    kmeans.train(sample)
    del sample
    labels = np.empty(n_cells, dtype=np.int64)
    inertia = 0.0
    for start in range(0, n_cells, FAISS_CHUNK_ROWS):
        chunk = np.ascontiguousarray(features[start : start + FAISS_CHUNK_ROWS], dtype=np.float32)
        squared, nearest = kmeans.index.search(chunk, 1)
        labels[start : start + len(chunk)] = nearest[:, 0]
        inertia += float(squared.sum(dtype=np.float64))
    return labels, np.asarray(kmeans.centroids, dtype=np.float32), inertia


def distances_to_centroids(features: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance of each cell to its own centroid (float64 arithmetic, float32 result), in chunks."""
    distance = np.empty(features.shape[0], dtype=np.float32)
    centroids64 = centroids.astype(np.float64)
    for start in range(0, features.shape[0], DISTANCE_CHUNK_ROWS):
        stop = start + DISTANCE_CHUNK_ROWS
        diff = features[start:stop].astype(np.float64) - centroids64[labels[start:stop]]
        distance[start:stop] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        del diff
    return distance


def nearest_to_centroids(
    labels: np.ndarray, distance: np.ndarray, k: int, n_nearest: int
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per cluster, the ``n_nearest`` member indices closest to the centroid (ties: lower index first),
    and each cell's 1-based rank in its cluster's list (0 when not listed). One sort for all clusters."""
    order = np.lexsort((np.arange(labels.size), distance, labels))  # by label, then distance, then index
    starts = np.searchsorted(labels[order], np.arange(k), side="left")
    stops = np.searchsorted(labels[order], np.arange(k), side="right")
    nearest: dict[int, np.ndarray] = {}
    nearest_rank = np.zeros(labels.size, dtype=np.int64)
    for cluster_id, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        members = order[start : min(stop, start + n_nearest)].astype(np.int64)
        members.flags.writeable = False
        nearest[cluster_id] = members
        nearest_rank[members] = np.arange(1, members.size + 1)
    return nearest, nearest_rank


def cluster_features(features: np.ndarray, k: int, *, seed: int = 0, n_nearest: int = 8) -> Clustering:
    """Cluster prepared (N, D) float32 features into ``k`` groups; the same seed gives the same result."""
    check_cluster_request(features.shape[0], k, n_nearest, seed)
    k, seed, n_nearest = int(k), int(seed), int(n_nearest)
    labels, centroids, inertia = fit_kmeans(features, k, seed)
    distance = distances_to_centroids(features, labels, centroids)
    nearest, nearest_rank = nearest_to_centroids(labels, distance, k, n_nearest)
    for array in (labels, centroids, distance, nearest_rank):
        array.flags.writeable = False
    return Clustering(
        labels=labels,
        centroids=centroids,
        distance=distance,
        nearest=nearest,
        nearest_rank=nearest_rank,
        k=k,
        seed=seed,
        inertia=inertia,
    )
