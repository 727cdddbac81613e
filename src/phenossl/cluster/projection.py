"""2-D UMAP layout of the prepared features, seeded, fitted on a sample of at most 4095 cells.

umap-learn is reproducible only with ``random_state`` set, and then it runs single-threaded (its
parallel optimiser is not deterministic). Above ``max_fit`` cells UMAP is fitted on a seeded subsample
and the remaining cells are placed as umap-learn's ``transform`` places them (memberships to their
nearest fitted cells, then a short optimisation of their positions only): the cost grows linearly with N.

What made the first layout slow, and what phenossl does instead (benchmarks/umap_speed.py has the numbers):

- numba compiles umap-learn's code on first use in every process (10-20 s), and umap-learn asks for no
  disk cache: ``import_umap`` turns numba's disk cache on for all of it, in a per-user folder
  (``numba_cache_dir``), so only the first process on a machine compiles;
- from 4096 fitted cells on umap-learn searches neighbours with pynndescent, whose compiled code cannot be
  cached (20-80 s in every process, and ~500 MB while compiling); so the sample is at most 4095 cells
  and the neighbours are found exactly with scikit-learn's BLAS search, for the fit and for the placement
  (umap-learn's own exact search calls a numba distance from Python once per pair: 25 s for 4095 cells);
- umap-learn's ``transform`` starts each new cell in a Python loop over rows; ``initial_positions`` does it
  in one sparse product.

The napari plugin runs ``warm_up_umap`` in a worker when it starts, so the layout's compiled code is
loaded (or, on a machine's first start, compiled) before the user asks for a layout. Measured on a shared
2-core CPU, first layout in a fresh process with a filled cache (before -> after): 544 cells 10.3 s -> 2.1 s
(0.6 s after the warm-up), 100k x 64-d 52 s -> 15 s, 100k x 512-d 21 s; a computer's first start compiles
for ~18 s more. The price of the 4095-cell sample: the layout's shape comes from those cells, so a
population of under ~0.1 % of the cells has only a few of them and sits beside its nearest fitted cells.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from phenossl.cluster.kmeans import check_seed, seeded_subsample
from phenossl.errors import ConfigError, TooFewCellsError

UMAP_MAX_FIT = 4095  # cells UMAP is fitted on (the most with exact neighbours); the rest are placed
UMAP_MIN_CELLS = 5  # umap-learn's spectral initialisation fails below this
TRANSFORM_CHUNK_ROWS = 50_000  # cells placed per call (bounds the neighbour graph's memory)
# Below this many fitted cells phenossl gives umap-learn exact neighbours; from it on umap-learn's pynndescent
# search is used for the fit (only when a caller raises max_fit: its code compiles in every process).
EXACT_KNN_BELOW = 4096

#: progress(stage, done, total) for the layouts computed in this thread (see :func:`layout_progress`).
_LAYOUT_PROGRESS: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "phenossl_layout_progress", default=None)


@contextlib.contextmanager
def layout_progress(progress: Callable[[str, int, int], None] | None) -> Iterator[None]:
    """Within this block, the UMAP layouts computed in this thread report their optimisation epochs as
    ``progress("umap", done, n_epochs)`` and the cells placed outside the fitted sample as
    ``progress("placing", done, n)``; None reports nothing."""
    token = _LAYOUT_PROGRESS.set(progress)
    try:
        yield
    finally:
        _LAYOUT_PROGRESS.reset(token)


class _EpochCounter:
    """A file for umap-learn's tqdm bar (its documented ``tqdm_kwds``) that reads the bar's ``n/total`` as it
    is written and passes it on: umap-learn has no progress callback of its own."""

    _COUNT = re.compile(r"(\d+)/(\d+)")

    def __init__(self, report: Callable[[int, int], None]) -> None:
        self._report = report
        self._last = -1

    def write(self, text: str) -> int:
        found = self._COUNT.findall(text)
        if found:
            done, total = (int(v) for v in found[-1])
            if done != self._last:
                self._last = done
                self._report(done, total)
        return len(text)

    def flush(self) -> None:
        pass


def _epoch_tqdm_kwds(progress: Callable[[str, int, int], None]) -> dict:
    return {"disable": False, "file": _EpochCounter(lambda done, total: progress("umap", done, total)),
            "bar_format": "{n}/{total}", "mininterval": 0.0, "miniters": 1, "desc": "", "ascii": True}


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


NUMBA_PACKAGES = ("umap", "pynndescent")  # their numba functions are compiled on first use
_umap_import_lock = threading.Lock()
_cached_functions: int | None = None  # numba functions given a disk cache (None: not done yet)


def user_cache_root() -> Path:
    """phenossl's per-user cache folder (platformdirs' rule; the same rule by hand where it is absent)."""
    try:
        import platformdirs
    except ImportError:  # not a phenossl dependency, though napari brings it
        if sys.platform == "win32":
            return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "phenossl" / "Cache"
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Caches" / "phenossl"
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phenossl"
    return Path(platformdirs.user_cache_dir("phenossl", appauthor=False))


def numba_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where numba keeps compiled code: the user's NUMBA_CACHE_DIR if set, else a per-user folder.

    The default has one sub-folder per umap-learn, pynndescent and numba version: numba checks only the
    source file of each cached function, so after upgrading one package another's cached code could
    still hold the old, inlined version of a function it calls."""
    env = os.environ if environ is None else environ
    if env.get("NUMBA_CACHE_DIR"):
        return Path(env["NUMBA_CACHE_DIR"])
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    tag = "_".join(f"{name}-{installed(name)}" for name in ("umap-learn", "pynndescent", "numba")) + "_nogil"
    return user_cache_root() / "numba" / tag


def use_numba_disk_cache() -> Path:
    """Point numba's disk cache at ``numba_cache_dir()`` unless the user chose one (NUMBA_CACHE_DIR).

    Without it a read-only install recompiles UMAP in every new process, and a writable one scatters
    caches into site-packages. Call it before umap-learn is imported: numba picks a function's cache
    folder when the function is defined."""
    path = numba_cache_dir()
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(path)
        if "numba" in sys.modules:  # numba read its settings when imported: make it read them again
            from numba.core.config import reload_config

            reload_config()
    return path


def _cache_compiled_functions(packages: tuple[str, ...] = NUMBA_PACKAGES) -> int:
    """Give every module-level numba function of ``packages`` that lacks one a disk cache; return how many.

    umap-learn caches almost none of its own (its fit compiles 8-10 s of code in every process, measured)
    and pynndescent about half. A function numba cannot cache (closures, global arrays) still compiles as
    before: numba warns and carries on.

    Each is also compiled ``nogil``: run from napari's worker thread, umap-learn's compiled loops otherwise
    hold the GIL for their whole call and the viewer freezes meanwhile (measured with a 10 ms timer beside
    a 30,000-cell layout: 127 ms late at worst, 8 ms with nogil). The cache folder's name says so, so
    that code compiled without it is never loaded."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for function in list(vars(module).values()):
            if isinstance(function, Dispatcher) and not function.targetoptions.get("parallel"):
                function.targetoptions["nogil"] = True  # read when it compiles, i.e. on first use
            if (
                isinstance(function, Dispatcher)
                and isinstance(function._cache, NullCache)
                and getattr(function.py_func, "__module__", None) == name
            ):
                try:
                    function.enable_caching()
                except RuntimeError:  # numba finds no place to cache it (e.g. no source file): compiles as before
                    pass
                else:
                    enabled += 1
    return enabled


def import_umap():
    """umap-learn, with numba's disk cache in a per-user folder and on for all of its compiled functions.

    The first process on a machine compiles (about 20 s of one core, measured); later ones load the compiled
    code (about 2 s, import included). pynndescent's neighbour search, which umap-learn uses from 4096 fitted
    cells on, cannot be cached and compiles in every process: phenossl keeps below it by default."""
    global _cached_functions
    with _umap_import_lock:
        if _cached_functions is None:
            use_numba_disk_cache()
            import umap  # heavy (numba): imported only when a layout is asked for

            _cached_functions = _cache_compiled_functions()
    import umap

    return umap


def exact_search(features: np.ndarray):
    """scikit-learn's exact Euclidean neighbour search over ``features`` (BLAS, in row chunks: bounded memory)."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(algorithm="brute", metric="euclidean").fit(features)


def exact_neighbors(search, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each fitted cell's ``n_neighbors`` nearest fitted cells, the cell itself first at
    distance 0, as umap-learn's ``precomputed_knn`` wants them (``search``: from ``exact_search``).

    The self distance must be exactly 0: umap-learn scales each cell's neighbourhood by the nearest
    non-zero distance, and a rounding residue of the self distance would take that place."""
    distances, indices = search.kneighbors(n_neighbors=n_neighbors - 1)  # no query: neighbours but itself
    rows = np.arange(search.n_samples_fit_)
    indices = np.column_stack([rows, indices]).astype(np.int32)
    distances = np.column_stack([np.zeros(rows.size), distances]).astype(np.float32)
    return indices, distances


def initial_positions(graph, embedding: np.ndarray) -> np.ndarray:
    """Start positions of new cells: umap-learn's ``init_graph_transform`` as one sparse product.

    A cell's start is the membership-weighted mean of its fitted neighbours' positions, or the position
    of the first neighbour with membership 1 (a duplicate). umap-learn loops over rows in Python (7 s of
    a 100k-cell layout, measured). A cell without neighbours (none with the Euclidean metric) starts at
    the centre of the fitted layout instead of umap-learn's NaN."""
    import scipy.sparse

    graph = scipy.sparse.csr_matrix(graph)
    graph.eliminate_zeros()
    row_sums = np.asarray(graph.sum(axis=1)).ravel()
    empty = row_sums == 0
    weights = scipy.sparse.diags(np.where(empty, 0.0, 1.0 / np.where(empty, 1.0, row_sums))) @ graph
    start = np.asarray(weights @ embedding.astype(np.float64), dtype=np.float32)
    start[empty] = embedding.mean(axis=0)
    hit = np.flatnonzero(graph.data == 1)
    if hit.size:
        hit_rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))[hit]
        hit_rows, first = np.unique(hit_rows, return_index=True)
        start[hit_rows] = embedding[graph.indices[hit[first]]]
    return start


def membership_graph(reducer, search, features: np.ndarray):
    """(n, fitted) sparse COO memberships of new cells to their fitted neighbours: umap-learn's ``transform``
    up to its neighbour search, with the exact search ``search`` (a fitted scikit-learn NearestNeighbors)."""
    import scipy.sparse
    from umap.umap_ import compute_membership_strengths, smooth_knn_dist

    k = int(reducer.n_neighbors)
    distances, indices = search.kneighbors(features, n_neighbors=k)
    distances = distances.astype(np.float32, order="C")
    sigmas, rhos = smooth_knn_dist(
        distances, float(k), local_connectivity=float(max(0.0, reducer.local_connectivity - 1.0))
    )
    rows, cols, values, _ = compute_membership_strengths(
        indices.astype(np.int32), distances, sigmas, rhos, bipartite=True
    )
    return scipy.sparse.coo_matrix((values, (rows, cols)), shape=(features.shape[0], search.n_samples_fit_))


def place_new_cells(reducer, search, features: np.ndarray) -> np.ndarray:
    """(n, 2) positions of cells that were not fitted: umap-learn's ``transform`` step for step (memberships,
    epochs, random state), with exact neighbours from ``search`` and the vectorised ``initial_positions``."""
    from sklearn.utils import check_random_state
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import INT32_MAX, INT32_MIN, make_epochs_per_sample

    graph = membership_graph(reducer, search, features)
    rng_state = check_random_state(reducer.transform_seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    start = initial_positions(graph, reducer.embedding_)
    if reducer.n_epochs is None:
        n_epochs = 100 if graph.shape[0] <= 10_000 else 30
    else:
        n_epochs = int(reducer.n_epochs // 3.0)
    graph.data[graph.data < (graph.data.max() / float(n_epochs))] = 0.0
    graph.eliminate_zeros()
    return optimize_layout_euclidean(
        start,
        reducer.embedding_.astype(np.float32, copy=True),
        graph.row,
        graph.col,
        n_epochs,
        graph.shape[1],
        make_epochs_per_sample(graph.data, n_epochs),
        reducer._a,
        reducer._b,
        rng_state,
        reducer.repulsion_strength,
        reducer._initial_alpha / 4.0,
        reducer.negative_sample_rate,
        False,  # parallel: off, as umap-learn does whenever random_state is set (reproducible)
    )


def umap_embedding(
    features: np.ndarray,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    max_fit: int = UMAP_MAX_FIT,
    n_epochs: int | None = None,
) -> np.ndarray:
    """(N, 2) float32 UMAP coordinates of ``features``; identical for identical inputs and seed.

    ``n_neighbors`` is capped at (fitted cells - 1) so that small data sets still work. ``n_epochs``:
    umap-learn's (None: 500 up to 10k fitted cells, else 200; placed cells get a third of it).
    """
    n_cells = features.shape[0]
    check_umap_request(n_cells, n_neighbors, min_dist, max_fit, seed)
    if n_epochs is not None and (not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1):
        raise ConfigError(f"UMAP n_epochs must be a positive whole number or None; got {n_epochs!r}.")
    umap = import_umap()
    from numba.core.errors import NumbaWarning

    fit_index = seeded_subsample(n_cells, max_fit, seed) if n_cells > max_fit else None
    n_fit = n_cells if fit_index is None else fit_index.size
    k = min(int(n_neighbors), n_fit - 1)
    options = {
        "n_components": 2,
        "n_neighbors": k,
        "min_dist": float(min_dist),
        "random_state": int(seed),
        "n_jobs": 1,  # what random_state forces anyway; saying it avoids umap's warning
        "n_epochs": None if n_epochs is None else int(n_epochs),
    }
    progress = _LAYOUT_PROGRESS.get()
    if progress is not None:
        options["tqdm_kwds"] = _epoch_tqdm_kwds(progress)
    # writable float32: numba compiles read-only arrays separately (the warm-up compiled these)
    fit_data = np.require(features if fit_index is None else features[fit_index], np.float32, ["C", "W"])
    with warnings.catch_warnings(), _torch_threads_kept():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*", category=UserWarning)
        warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)  # phenossl places
        search = exact_search(fit_data) if n_fit < EXACT_KNN_BELOW or fit_index is not None else None
        if n_fit < EXACT_KNN_BELOW:
            options["precomputed_knn"] = exact_neighbors(search, k)
        reducer = umap.UMAP(**options)
        fitted = np.asarray(reducer.fit_transform(fit_data), dtype=np.float32)
        if fit_index is None:
            return fitted
        xy = np.empty((n_cells, 2), dtype=np.float32)
        xy[fit_index] = fitted
        rest = np.setdiff1d(np.arange(n_cells), fit_index, assume_unique=True)
        for start in range(0, rest.size, TRANSFORM_CHUNK_ROWS):
            chunk = rest[start : start + TRANSFORM_CHUNK_ROWS]
            xy[chunk] = place_new_cells(reducer, search, features[chunk])
            if progress is not None:
                progress("placing", min(start + TRANSFORM_CHUNK_ROWS, rest.size), rest.size)
    return xy


def warm_up_umap() -> None:
    """Compile (or load from the disk cache) the numba code of a layout, on tiny random data: a fit and the
    placement of the cells outside the fitted sample. Run in the background when the GUI starts, so that
    the user's first layout does not wait for it (numba compiles one function at a time, process-wide)."""
    rng = np.random.default_rng(0)
    umap_embedding(rng.standard_normal((96, 8), dtype=np.float32), max_fit=64, n_epochs=10)
