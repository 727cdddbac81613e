"""2-D UMAP layout of the prepared features, seeded, with a subsample fit for large N.

umap-learn is reproducible only with ``random_state`` set, and then it runs single-threaded (its
parallel optimiser is not deterministic). That makes a full 100k-cell fit slow, so above ``max_fit``
cells UMAP is fitted on a seeded subsample and the remaining cells are placed with ``transform``
(nearest neighbours in the fitted data, then a short optimisation of their positions only). The
layout is then slightly less faithful for cells outside the sample, but the cost grows roughly
linearly with N instead of with a full single-threaded fit.

Measured on a 2-core CPU at D=512: 10k cells 8 s, 100k cells 23 s (20k fit 8 s + 80k transform 15 s).
The first UMAP of a process also pays numba compilation of umap-learn and pynndescent (about 10 s
below 4096 cells, 25-35 s above); umap-learn does not cache it on disk, so a GUI should run the
first layout in a worker thread and say that it is compiling.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np

from phenossl.cluster.kmeans import check_seed, seeded_subsample
from phenossl.errors import ConfigError, TooFewCellsError

UMAP_MAX_FIT = 20_000  # cells UMAP is fitted on; the rest are placed with transform
UMAP_MIN_CELLS = 5  # umap-learn's spectral initialisation fails below this
TRANSFORM_CHUNK_ROWS = 50_000  # cells placed per transform call (bounds the neighbour graph's memory)


def check_umap_request(n_cells: int, n_neighbors: int, min_dist: float, max_fit: int, seed: int = 0) -> None:
    """Raise ConfigError / TooFewCellsError for parameters UMAP cannot use."""
    check_seed(seed)
    if n_cells < UMAP_MIN_CELLS:
        raise TooFewCellsError(f"UMAP needs at least {UMAP_MIN_CELLS} cells; got {n_cells}.")
    if n_neighbors < 2:
        raise ConfigError(f"UMAP n_neighbors must be at least 2; got {n_neighbors}.")
    if not 0.0 <= min_dist <= 1.0:
        raise ConfigError(f"UMAP min_dist must be between 0 and 1; got {min_dist}.")
    if max_fit < UMAP_MIN_CELLS:
        raise ConfigError(
            f"UMAP max_fit (cells fitted before transform) must be >= {UMAP_MIN_CELLS}; got {max_fit}."
        )


@contextlib.contextmanager
def _torch_threads_kept():
    """Keep torch's thread count across a UMAP: numba's OpenMP layer resets the process's OpenMP threads to
    the number of cores, and torch (sharing that runtime) then trains with more threads than it was given,
    10-20x slower on a busy 2-core machine (measured)."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def umap_embedding(
    features: np.ndarray,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    max_fit: int = UMAP_MAX_FIT,
) -> np.ndarray:
    """(N, 2) float32 UMAP coordinates of ``features``; identical for identical inputs and seed.

    ``n_neighbors`` is capped at (fitted cells - 1) so that small data sets still work.
    """
    n_cells = features.shape[0]
    check_umap_request(n_cells, n_neighbors, min_dist, max_fit, seed)
    import umap  # heavy (numba): imported only when a layout is asked for

    fit_index = seeded_subsample(n_cells, max_fit, seed) if n_cells > max_fit else None
    n_fit = n_cells if fit_index is None else fit_index.size
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(int(n_neighbors), n_fit - 1),
        min_dist=float(min_dist),
        random_state=int(seed),
        n_jobs=1,  # what random_state forces anyway; saying it avoids umap's warning
    )
    with warnings.catch_warnings(), _torch_threads_kept():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*", category=UserWarning)
        if fit_index is None:
            return np.asarray(reducer.fit_transform(features), dtype=np.float32)
        reducer.fit(features[fit_index])
        xy = np.empty((n_cells, 2), dtype=np.float32)
        xy[fit_index] = reducer.embedding_
        rest = np.setdiff1d(np.arange(n_cells), fit_index, assume_unique=True)
        for start in range(0, rest.size, TRANSFORM_CHUNK_ROWS):
            chunk = rest[start : start + TRANSFORM_CHUNK_ROWS]
            xy[chunk] = reducer.transform(features[chunk])
    return xy
