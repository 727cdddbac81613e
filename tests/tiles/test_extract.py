import numpy as np
import pytest

from phenossl.errors import ConfigError, InputError
from phenossl.tiles import cut_tiles, nucleus_table
from phenossl.tiles.normalize import PercentileSampler, normalize_to_unit


def _labels_with_nuclei(shape, centres, radius=4):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for i, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i
    return labels


def test_tiles_are_centred_on_the_nucleus():
    labels = _labels_with_nuclei((100, 120), [(50, 60), (30, 40)])
    image = np.stack([labels * 10.0, np.arange(100 * 120, dtype=float).reshape(100, 120)])
    cut = cut_tiles(image, nucleus_table(labels), size=21)
    assert cut.tiles.shape == (2, 2, 21, 21)
    # the nucleus label sits at the centre pixel of its own tile
    assert cut.tiles[0, 0, 10, 10] == 10.0 and cut.tiles[1, 0, 10, 10] == 20.0
    # second channel is a ramp: the centre pixel value encodes the (y, x) position
    assert cut.tiles[0, 1, 10, 10] == 50 * 120 + 60
    assert cut.n_skipped_border == 0
    assert list(cut.cells["label"]) == [1, 2]


def test_border_cells_are_skipped_or_padded_and_counted():
    labels = _labels_with_nuclei((60, 60), [(5, 5), (30, 30)], radius=3)
    image = np.ones((1, 60, 60))
    skipped = cut_tiles(image, nucleus_table(labels), size=21, border="skip")
    assert len(skipped.tiles) == 1 and skipped.n_skipped_border == 1
    assert list(skipped.cells["label"]) == [2]
    padded = cut_tiles(image, nucleus_table(labels), size=21, border="pad", pad_value=0.0)
    assert len(padded.tiles) == 2 and padded.n_skipped_border == 0
    assert list(padded.cells["padded"]) == [True, False]
    # the padded tile holds zeros outside the image and ones inside
    assert padded.tiles[0, 0, 0, 0] == 0.0 and padded.tiles[0, 0, 10, 10] == 1.0


def test_bad_shapes_and_options_are_clear_errors():
    labels = _labels_with_nuclei((40, 40), [(20, 20)])
    with pytest.raises(InputError, match="C, Y, X"):
        cut_tiles(np.ones((40, 40)), nucleus_table(labels), size=11)
    with pytest.raises(ConfigError, match="border"):
        cut_tiles(np.ones((1, 40, 40)), nucleus_table(labels), size=11, border="wrap")
    with pytest.raises(InputError, match="2-D"):
        nucleus_table(np.zeros((2, 4, 4), dtype=int))


def test_percentiles_over_an_image_set_not_per_image():
    dim = np.full((1, 50, 50), 100.0)
    bright = np.full((1, 50, 50), 1100.0)
    sampler = PercentileSampler(n_channels=1, samples_per_image=500, seed=0)
    sampler.add(dim)
    sampler.add(bright)
    lo_hi = sampler.percentiles(0, 100)
    np.testing.assert_allclose(lo_hi, [[100.0, 1100.0]])
    # the dim image stays dimmer than the bright one after normalisation
    assert normalize_to_unit(dim, lo_hi).max() == 0.0 and normalize_to_unit(bright, lo_hi).min() == 1.0


def test_constant_channel_does_not_divide_by_zero():
    sampler = PercentileSampler(n_channels=2)
    sampler.add(np.stack([np.full((10, 10), 7.0), np.arange(100.0).reshape(10, 10)]))
    lo_hi = sampler.percentiles()
    out = normalize_to_unit(np.full((2, 3, 3), 7.0), lo_hi)
    assert np.isfinite(out).all()


def test_percentile_sampler_rejects_channel_mismatch():
    sampler = PercentileSampler(n_channels=3)
    with pytest.raises(InputError, match="3 channels"):
        sampler.add(np.ones((2, 5, 5)))
