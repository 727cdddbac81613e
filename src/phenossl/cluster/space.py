"""The embedding space: features prepared once, so that reclustering and UMAP never re-embed or re-scale.

``EmbeddingSpace`` holds a single float32 working copy of the embeddings (200 MB for 100k x 512) and
caches UMAP layouts per parameter set; K-Means runs against that copy every time the user changes k.
Nothing here builds an N x N matrix, and memory-mapped inputs are read in row chunks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from phenossl.cluster.kmeans import Clustering, cluster_features
from phenossl.cluster.projection import UMAP_MAX_FIT, check_umap_request, umap_embedding
from phenossl.errors import ConfigError, InputError

Preprocessing = Literal["cosine", "standardize", "l2", "none"]
PREPROCESSING_CHOICES: tuple[str, ...] = get_args(Preprocessing)

MIN_CONTROLS = 2  # control cells a batch needs for a mean and a spread
CHUNK_BYTES = 8 * 2**20  # float64 scratch per chunk when reading or scaling (8 MB: 2048 rows at D=512)


def chunk_rows(n_dims: int) -> int:
    """Rows per chunk so that one float64 chunk of ``n_dims`` columns takes about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * max(1, n_dims)))


def check_embeddings(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` (unchanged, never copied) if it is a finite numeric (N, D) array with N, D >= 1.

    Raises InputError saying how many rows hold NaN or infinite values, so the user can find them.
    Memory-mapped arrays are scanned in chunks and stay on disk.
    """
    if not isinstance(embeddings, np.ndarray):
        embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise InputError(
            f"{what} must be a 2-D array (cells x features); got shape {embeddings.shape}. "
            "Embed the tiles first (one row per cell)."
        )
    n_rows, n_dims = embeddings.shape
    if n_rows == 0 or n_dims == 0:
        raise InputError(f"{what} is empty (shape {embeddings.shape}); there is nothing to cluster.")
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise InputError(f"{what} must hold numbers; got dtype {embeddings.dtype}.")
    bad_rows = count_nonfinite_rows(embeddings)
    if bad_rows:
        raise InputError(
            f"{what} has {bad_rows} of {n_rows} rows with NaN or infinite values. "
            "The encoder probably diverged: retrain, or drop those cells before clustering."
        )
    return embeddings


def count_nonfinite_rows(array: np.ndarray) -> int:
    """Rows of a 2-D array holding any NaN/inf, counted chunk by chunk (a memmap is never loaded whole)."""
    if np.issubdtype(array.dtype, np.integer):
        return 0
    step = chunk_rows(array.shape[1])
    return sum(
        int((~np.isfinite(array[start : start + step]).all(axis=1)).sum())
        for start in range(0, array.shape[0], step)
    )


def prepare_features(embeddings: np.ndarray, preprocessing: Preprocessing = "standardize",
                     controls: ControlGroups | None = None) -> np.ndarray:
    """Return a new C-contiguous float32 (N, D) copy of checked ``embeddings``, scaled as asked.

    - ``cosine``: ``standardize``, then scale each cell to unit length: cells are compared by the *direction*
      in which they differ from the average (or, with ``controls``, the untreated) cell, not by how far. A
      treatment's weak and strong responders point the same way, so K-Means groups them instead of cutting
      the strongest responders off from everything else (measured on BBBC021: docs/benchmarks.md).
    - ``standardize``: z-score each dimension (mean 0, std 1) so that no single feature dominates
      Euclidean distances; constant dimensions become 0.
    - ``l2``: scale each row to unit length (cosine geometry, as SSL losses use); all-zero rows stay 0.
    - ``none``: the raw values, as float32.

    With ``controls``, the z-score is taken against the negative-control cells of each batch (plate)
    instead of against all cells (:func:`normalize_to_controls`); ``l2`` is applied before it.

    Statistics are accumulated in float64 over row chunks, so the only large allocation is the
    float32 result itself (the input may be a read-only memmap of any float dtype).
    """
    if preprocessing not in PREPROCESSING_CHOICES:
        raise ConfigError(
            f"preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}; got {preprocessing!r}."
        )
    embeddings = check_embeddings(embeddings)
    step = chunk_rows(embeddings.shape[1])
    features = np.empty(embeddings.shape, dtype=np.float32)
    for start in range(0, len(features), step):
        features[start : start + step] = embeddings[start : start + step]
    if controls is not None:
        if preprocessing == "l2":
            _l2_rows(features, step)
        normalize_to_controls(features, controls)
        if preprocessing == "cosine":
            _l2_rows(features, step)
        return features
    if preprocessing in ("standardize", "cosine"):
        mean, std = column_mean_std(features)
        features -= mean.astype(np.float32)
        features /= np.where(std > 0, std, 1.0).astype(np.float32)
        if preprocessing == "cosine":
            _l2_rows(features, step)
    elif preprocessing == "l2":
        _l2_rows(features, step)
    return features


def _l2_rows(features: np.ndarray, step: int) -> None:
    for start in range(0, len(features), step):
        block = features[start : start + step]
        block64 = block.astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block64, block64))[:, None]
        block /= np.where(norms > 0, norms, 1.0).astype(np.float32)
        del block64


@dataclass(frozen=True)
class ControlGroups:
    """Which cells are negative controls, and the batch (plate) of every cell: the reference each cell is
    normalised to. ``batches`` holds small integer codes; ``names`` names them (for messages)."""

    controls: np.ndarray  # (N,) bool
    batches: np.ndarray  # (N,) int
    names: tuple[str, ...]
    selection: str = "controls"

    def __post_init__(self) -> None:
        if self.controls.shape != self.batches.shape:
            raise InputError(f"controls {self.controls.shape} and batches {self.batches.shape} do not match")


def control_groups(cells: pd.DataFrame, selection: str, batch_column: str | None = "plate") -> ControlGroups:
    """The control cells named by ``selection`` (``"compound=DMSO"``) and each cell's batch (the groups of
    ``batch_column``; all cells form one batch when the column is None or absent). Every batch needs at
    least two control cells: the message names the batches that lack them."""
    from phenossl.perturbation import parse_selector, select_cells

    controls = select_cells(cells, parse_selector(selection), "control")
    if batch_column and batch_column in cells.columns:
        codes, names = pd.factorize(cells[batch_column].astype(str), sort=True)
        names = tuple(str(n) for n in names)
    else:
        codes, names = np.zeros(len(cells), dtype=np.int64), ("all cells",)
    counts = np.bincount(codes[controls], minlength=len(names))
    lacking = [f"{names[i]} ({counts[i]})" for i in range(len(names)) if counts[i] < MIN_CONTROLS]
    if lacking:
        where = batch_column if batch_column and batch_column in cells.columns else "batch"
        raise InputError(
            f"Normalising to the controls ({selection}) needs at least {MIN_CONTROLS} control cells in each "
            f"{where}; these have fewer: {', '.join(lacking[:8])}. Choose another control selection, "
            "drop those cells, or cluster without control normalisation."
        )
    return ControlGroups(controls, codes.astype(np.int64), names, selection)


def normalize_to_controls(features: np.ndarray, groups: ControlGroups) -> np.ndarray:
    """Z-score ``features`` (float32, in place) per batch against that batch's control cells: each plate is
    expressed in units of its own negative controls' variation (pycytominer's ``normalize`` with
    ``samples`` = the controls), which removes plate-to-plate shifts in staining and focus and weighs each
    dimension by how far treated cells move relative to untreated ones. A dimension constant among the
    controls is only centred."""
    if groups.controls.shape[0] != features.shape[0]:
        raise InputError(
            f"The control selection covers {groups.controls.shape[0]} cells but there are {features.shape[0]}."
        )
    for batch in range(len(groups.names)):
        rows = np.flatnonzero(groups.batches == batch)
        if rows.size == 0:
            continue
        reference = features[rows[groups.controls[rows]]]
        mean, std = column_mean_std(reference)
        scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        step = chunk_rows(features.shape[1])
        for start in range(0, rows.size, step):
            index = rows[start : start + step]
            block = features[index].astype(np.float64)
            block -= mean
            block /= scale
            features[index] = block
    return features


def column_mean_std(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation in float64, two passes over row chunks."""
    mean = features.mean(axis=0, dtype=np.float64)
    sum_sq = np.zeros(features.shape[1], dtype=np.float64)
    step = chunk_rows(features.shape[1])
    for start in range(0, len(features), step):
        centred = features[start : start + step].astype(np.float64)
        centred -= mean
        np.square(centred, out=centred)  # in place: one float64 chunk of scratch
        sum_sq += centred.sum(axis=0)
        del centred  # free before the next chunk is allocated
    return mean, np.sqrt(sum_sq / len(features))


class EmbeddingSpace:
    """Cell embeddings prepared once for interactive analysis: recluster with any k, UMAP cached.

    The prepared ``features`` (float32, N x D) are read-only so that cached results stay valid;
    centroids and distances of every clustering are in this prepared space. Safe to share between
    a GUI thread and one worker: UMAP layouts are computed at most once per parameter set.
    """

    def __init__(self, embeddings: np.ndarray, *, preprocessing: Preprocessing = "standardize",
                 controls: ControlGroups | None = None) -> None:
        self._features = prepare_features(embeddings, preprocessing, controls)
        self.preprocessing: Preprocessing = preprocessing
        self.controls = controls
        self._umap_cache: dict[tuple[int, int, float, int], np.ndarray] = {}
        self._umap_lock = threading.Lock()

    @property
    def features(self) -> np.ndarray:
        """The prepared float32 features as a read-only view (no copy)."""
        view = self._features.view()
        view.flags.writeable = False
        return view

    @property
    def n_cells(self) -> int:
        return int(self._features.shape[0])

    @property
    def n_dims(self) -> int:
        return int(self._features.shape[1])

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        normalised = f", normalised to {self.controls.selection}" if self.controls is not None else ""
        return (
            f"EmbeddingSpace({self.n_cells} cells x {self.n_dims} dims, preprocessing={self.preprocessing!r}"
            f"{normalised})"
        )

    def cluster(self, k: int, seed: int = 0, n_nearest: int = 8, *, algorithm: str = "kmeans",
                params: dict | None = None) -> Clustering:
        """K-Means with ``k`` clusters on the prepared features (or another registered ``algorithm`` of
        phenossl.cluster.algorithms, with its ``params``); deterministic for a given seed."""
        if algorithm == "kmeans":
            return cluster_features(self._features, k, seed=seed, n_nearest=n_nearest)
        from phenossl.cluster.algorithms import cluster_with

        return cluster_with(self._features, algorithm, k, seed=seed, n_nearest=n_nearest, params=params)

    def umap(
        self,
        seed: int = 0,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        max_fit: int = UMAP_MAX_FIT,
    ) -> np.ndarray:
        """2-D UMAP layout (N, 2) float32, computed once per parameter set and then returned from cache.

        The returned array is read-only and is the same object on every call with the same
        parameters. Seeded UMAP runs single-threaded; above ``max_fit`` cells it is fitted on a
        seeded subsample and the other cells are placed with ``transform`` (see projection.py).
        Slow (seconds to a minute): call it from a worker thread; a second caller waits for the
        running computation instead of starting another. ``cluster`` never waits for it.
        """
        check_umap_request(self.n_cells, n_neighbors, min_dist, max_fit, seed)
        key = (int(seed), int(n_neighbors), float(min_dist), int(max_fit))
        with self._umap_lock:
            if key not in self._umap_cache:
                xy = umap_embedding(
                    self._features, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, max_fit=max_fit
                )
                xy.flags.writeable = False
                self._umap_cache[key] = xy
            return self._umap_cache[key]

    def cached_umap(
        self, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1, max_fit: int = UMAP_MAX_FIT
    ) -> np.ndarray | None:
        """The cached layout for these parameters, or None if it was not computed yet (never computes)."""
        return self._umap_cache.get((int(seed), int(n_neighbors), float(min_dist), int(max_fit)))
