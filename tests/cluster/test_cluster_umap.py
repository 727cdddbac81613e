"""UMAP layouts: seeded, cached per parameter set, subsample fit + transform for large N.

The first UMAP call in a process pays umap-learn's numba compilation (~10-20 s on 2 cores), so the
layouts are computed once per module and shared.
"""

from __future__ import annotations

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
