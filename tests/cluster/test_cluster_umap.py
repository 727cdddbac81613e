"""UMAP layouts: seeded, cached per parameter set, subsample fit + placement for large N, numba's disk cache.

The first UMAP call in a process loads umap-learn's compiled code (~2 s; ~20 s to compile on a machine's
first run), so the layouts are computed once per module and shared.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from phenossl.cluster import EmbeddingSpace, umap_embedding
from phenossl.cluster import space as space_module
from phenossl.errors import ConfigError, TooFewCellsError


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(3, 10))
    return (centres[np.arange(240) % 3] + rng.normal(size=(240, 10))).astype(np.float32)


@pytest.fixture(scope="module")
def space(features):
    return EmbeddingSpace(features)


@pytest.fixture(scope="module")
def layout(space):
    return space.umap(seed=0)


def test_layout_is_n_by_2_float32_and_finite(layout, space):
    assert layout.shape == (space.n_cells, 2)
    assert layout.dtype == np.float32
    assert np.isfinite(layout).all()


def test_same_seed_gives_the_same_layout_in_a_new_space(layout, features):
    np.testing.assert_array_equal(EmbeddingSpace(features).umap(seed=0), layout)


def test_second_call_returns_the_cached_array_without_recomputing(space, layout, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("UMAP was recomputed")

    monkeypatch.setattr(space_module, "umap_embedding", must_not_run)
    space.cluster(3, seed=1)  # reclustering does not invalidate the layout
    assert space.umap(seed=0) is layout
    assert space.cached_umap(seed=0) is layout
    assert space.cached_umap(seed=5) is None


def test_layout_is_read_only(layout):
    with pytest.raises(ValueError):
        layout[0, 0] = 1.0


def test_other_parameters_get_their_own_cache_entry(space, layout):
    other = space.umap(seed=0, min_dist=0.5)
    assert other is not layout
    assert space.umap(seed=0, min_dist=0.5) is other


def test_groups_stay_apart_in_the_layout(layout):
    groups = np.arange(240) % 3
    centres = np.array([layout[groups == g].mean(axis=0) for g in range(3)])
    spread = max(np.linalg.norm(layout[groups == g] - centres[g], axis=1).mean() for g in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a, b in [(0, 1), (0, 2), (1, 2)]]
    assert min(gaps) > 2 * spread


def test_subsample_fit_places_every_cell_reproducibly(features):
    first = umap_embedding(features, seed=1, max_fit=120)
    second = umap_embedding(features, seed=1, max_fit=120)
    assert first.shape == (240, 2)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_too_few_cells_for_umap(features):
    with pytest.raises(TooFewCellsError, match="at least 5"):
        umap_embedding(features[:4])


@pytest.mark.parametrize("kwargs", [{"n_neighbors": 1}, {"min_dist": -0.1}, {"max_fit": 2}, {"seed": -1}])
def test_bad_umap_parameters_are_config_errors(space, features, kwargs):
    with pytest.raises(ConfigError):
        umap_embedding(features, **kwargs)
    with pytest.raises(ConfigError):
        space.umap(**kwargs)


def test_a_layout_leaves_torch_with_the_threads_it_was_given(features):
    """numba's OpenMP layer resets the process's OpenMP threads; torch must keep the count it was given (a torch
    with more threads than cores' share trained 10-20x slower after a UMAP on a busy 2-core machine)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        umap_embedding(features, seed=3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_different_seeds_give_different_layouts(layout, space):
    assert not np.array_equal(space.umap(seed=1), layout)


def test_cells_above_max_fit_are_placed_by_transform(features, monkeypatch):
    from phenossl.cluster import projection

    placed = []
    real = projection.place_new_cells

    def counting(reducer, search, rows):
        placed.append(len(rows))
        return real(reducer, search, rows)

    monkeypatch.setattr(projection, "place_new_cells", counting)
    xy = umap_embedding(features, seed=2, max_fit=150)
    assert placed == [90]  # the 90 cells outside the 150-cell sample, in one chunk
    assert xy.shape == (240, 2) and np.isfinite(xy).all()
    monkeypatch.setattr(projection, "TRANSFORM_CHUNK_ROWS", 40)
    placed.clear()
    umap_embedding(features, seed=2, max_fit=150)
    assert placed == [40, 40, 10]


def test_no_transform_at_or_below_max_fit(features, monkeypatch):
    from phenossl.cluster import projection

    def must_not_run(*args):
        raise AssertionError("cells were placed although all were fitted")

    monkeypatch.setattr(projection, "place_new_cells", must_not_run)
    assert umap_embedding(features, seed=0, max_fit=240).shape == (240, 2)


def test_placement_is_umaps_transform_with_exact_neighbours(features, monkeypatch):
    """place_new_cells is umap-learn's transform: the same memberships (umap-learn searches exactly below 4096
    fitted cells too), and, given umap-learn's own memberships and start, the identical optimisation."""
    from phenossl.cluster import projection

    umap = projection.import_umap()
    from umap.umap_ import init_graph_transform

    reducer = umap.UMAP(n_neighbors=10, random_state=0, n_jobs=1).fit(features[:160])
    search = projection.exact_search(features[:160])
    reducer.transform_mode = "graph"
    theirs = reducer.transform(features[160:])
    reducer.transform_mode = "embedding"
    ours = projection.membership_graph(reducer, search, features[160:])
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-5)

    expected = reducer.transform(features[160:])
    monkeypatch.setattr(projection, "membership_graph", lambda *args: theirs.copy())
    monkeypatch.setattr(projection, "initial_positions", lambda graph, emb: init_graph_transform(graph.tocsr(), emb))
    np.testing.assert_array_equal(projection.place_new_cells(reducer, search, features[160:]), expected)


def test_initial_positions_match_umaps_row_loop(features):
    import scipy.sparse

    from phenossl.cluster import projection

    umap = projection.import_umap()
    from umap.umap_ import init_graph_transform

    reducer = umap.UMAP(n_neighbors=10, random_state=0, n_jobs=1).fit(features[:160])
    new = features[160:].copy()
    new[5] = features[7]  # a duplicate of a fitted cell: membership 1, placed exactly on it
    reducer.transform_mode = "graph"
    graph = reducer.transform(new).tocsr()
    graph.eliminate_zeros()
    start = projection.initial_positions(graph, reducer.embedding_)
    np.testing.assert_allclose(start, init_graph_transform(graph, reducer.embedding_), atol=1e-4)
    np.testing.assert_array_equal(start[5], reducer.embedding_[7])
    lonely = scipy.sparse.vstack([graph[:2], scipy.sparse.csr_matrix((1, graph.shape[1]))])
    centre = projection.initial_positions(lonely, reducer.embedding_)[2]
    np.testing.assert_allclose(centre, reducer.embedding_.mean(axis=0), rtol=1e-5)  # finite, not NaN


def test_exact_neighbors_put_each_cell_first_at_distance_zero(features):
    from phenossl.cluster.projection import exact_neighbors, exact_search

    indices, distances = exact_neighbors(exact_search(features), 6)
    assert indices.shape == distances.shape == (240, 6)
    np.testing.assert_array_equal(indices[:, 0], np.arange(240))
    assert (distances[:, 0] == 0).all()
    full = np.linalg.norm(features[:, None, :].astype(np.float64) - features[None, :, :], axis=2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(distances[:, 1:], np.sort(full, axis=1)[:, :5], rtol=1e-4)


def test_umaps_compiled_functions_get_a_disk_cache():
    from numba.core.caching import FunctionCache

    from phenossl.cluster import projection

    projection.import_umap()
    from umap import layouts, umap_

    assert projection._cached_functions > 20
    assert isinstance(umap_.smooth_knn_dist._cache, FunctionCache)  # umap-learn does not cache it itself
    assert isinstance(layouts._nb_optimize_layout_euclidean_single_epoch._cache, FunctionCache)  # the SGD epoch


def test_umaps_compiled_loops_release_the_gil_so_the_viewer_keeps_running():
    """Compiled as nogil: a layout in napari's worker thread never holds the UI thread off for a whole loop."""
    from phenossl.cluster import projection

    projection.import_umap()
    from umap import layouts

    features = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    projection.umap_embedding(features, seed=0, n_neighbors=5)
    for loop in (layouts._nb_optimize_layout_euclidean_single_epoch, layouts.optimize_layout_euclidean):
        if hasattr(loop, "targetoptions"):  # a numba function (the other is a Python driver in some versions)
            assert loop.targetoptions.get("nogil") is True
    assert layouts._nb_optimize_layout_euclidean_single_epoch.overloads  # it compiled (or loaded) with it


def test_numba_cache_dir_is_per_user_and_per_version_unless_the_user_set_one(tmp_path):
    from phenossl.cluster.projection import numba_cache_dir, user_cache_root

    default = numba_cache_dir({})
    assert default.parent == user_cache_root() / "numba"
    assert "umap-learn-" in default.name and "numba-" in default.name and default.name.endswith("_nogil")
    assert numba_cache_dir({"NUMBA_CACHE_DIR": str(tmp_path)}) == tmp_path


def test_disk_cache_is_switched_on_only_where_the_user_chose_none(tmp_path, monkeypatch):
    from phenossl.cluster.projection import numba_cache_dir, use_numba_disk_cache

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert use_numba_disk_cache() == tmp_path
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)  # the user's choice is kept
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    chosen = use_numba_disk_cache()
    assert chosen == numba_cache_dir({}) and os.environ["NUMBA_CACHE_DIR"] == str(chosen)


@pytest.mark.parametrize("n_epochs", [0, -3, 2.5])
def test_bad_n_epochs_is_a_config_error(features, n_epochs):
    with pytest.raises(ConfigError, match="n_epochs"):
        umap_embedding(features, n_epochs=n_epochs)


def test_warm_up_compiles_both_paths_so_a_layout_then_compiles_nothing(features):
    from numba.core import event

    from phenossl.cluster.projection import warm_up_umap

    warm_up_umap()
    compiled = []

    class Compiles(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(ev.data.get("dispatcher"))

    with event.install_listener("numba:compile", Compiles()):
        umap_embedding(features, seed=4)  # every cell fitted
        umap_embedding(features, seed=4, max_fit=100)  # a sample fitted, the rest placed
    assert compiled == []
