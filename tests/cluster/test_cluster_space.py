"""EmbeddingSpace: input checks, preprocessing, memmap input, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from phenossl.cluster import EmbeddingSpace, prepare_features
from phenossl.errors import ConfigError, InputError


def test_standardize_gives_zero_mean_unit_std_float32(rng):
    raw = rng.normal(loc=5.0, scale=[1.0, 10.0, 0.1], size=(400, 3))
    features = EmbeddingSpace(raw).features
    assert features.dtype == np.float32
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(features.std(axis=0), 1.0, atol=1e-4)


def test_constant_dimension_becomes_zero_not_nan(rng):
    raw = np.column_stack([rng.normal(size=50), np.full(50, 3.0)])
    features = prepare_features(raw, "standardize")
    assert np.isfinite(features).all()
    assert np.all(features[:, 1] == 0)


def test_l2_rows_have_unit_length_and_zero_rows_stay_zero(rng):
    raw = rng.normal(size=(20, 8))
    raw[3] = 0.0
    features = prepare_features(raw, "l2")
    norms = np.linalg.norm(features, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-6)
    assert norms[3] == 0


def test_none_keeps_values_as_float32(rng):
    raw = rng.normal(size=(10, 4))
    np.testing.assert_array_equal(prepare_features(raw, "none"), raw.astype(np.float32))


def test_features_are_a_readonly_copy(rng):
    raw = rng.normal(size=(10, 4)).astype(np.float32)
    space = EmbeddingSpace(raw, preprocessing="none")
    raw[:] = 0  # the caller's array changing later must not change the space
    assert np.abs(space.features).sum() > 0
    with pytest.raises(ValueError):
        space.features[0, 0] = 1.0


def test_nan_and_inf_rows_are_counted_in_the_error(rng):
    raw = rng.normal(size=(30, 4))
    raw[2, 1] = np.nan
    raw[5, 0] = np.inf
    raw[5, 3] = np.nan  # same row: counted once
    with pytest.raises(InputError, match="2 of 30 rows"):
        EmbeddingSpace(raw)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4), (0, 5), (5, 0)])
def test_wrong_shape_is_an_input_error(shape):
    with pytest.raises(InputError):
        EmbeddingSpace(np.ones(shape))


def test_unknown_preprocessing_is_a_config_error(rng):
    with pytest.raises(ConfigError, match="standardize"):
        EmbeddingSpace(rng.normal(size=(5, 2)), preprocessing="zscore")


def test_memmap_input_matches_in_memory_input(tmp_path, rng):
    raw = rng.normal(size=(257, 12)).astype(np.float64)
    np.save(tmp_path / "embeddings.npy", raw)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    from_disk = EmbeddingSpace(mapped)
    np.testing.assert_array_equal(from_disk.features, EmbeddingSpace(raw).features)
    assert not np.shares_memory(from_disk.features, mapped)
    np.testing.assert_array_equal(from_disk.cluster(3).labels, EmbeddingSpace(raw).cluster(3).labels)


@pytest.mark.parametrize("preprocessing", ["standardize", "l2"])
def test_preparation_allocates_about_one_float32_copy(rng, preprocessing):
    """Chunked statistics: peak extra memory stays near the float32 result, not a float64 copy of it."""
    import tracemalloc

    raw = rng.normal(size=(100_000, 64)).astype(np.float32)  # 25.6 MB; chunks take 8 MB
    tracemalloc.start()
    prepare_features(raw, preprocessing)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1.6 * raw.nbytes


def test_size_and_repr(rng):
    space = EmbeddingSpace(rng.normal(size=(7, 3)))
    assert (space.n_cells, space.n_dims, len(space)) == (7, 3, 7)
    assert "7 cells x 3 dims" in repr(space)
