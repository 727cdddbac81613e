"""segment_nuclei, the Segment stage's one entry point: what it accepts, what it refuses, what it returns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from phenossl.errors import ConfigError, InputError, NoNucleiError, PhenosslError
from phenossl.segment import segment_nuclei


@pytest.fixture
def two_nuclei() -> np.ndarray:
    """Two bright 20-px discs on a dim, slightly noisy background (uint16, like a camera)."""
    yy, xx = np.mgrid[:96, :96]
    signal = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 100) | ((yy - 64) ** 2 + (xx - 66) ** 2 <= 100)
    noise = np.random.default_rng(1).normal(0, 8, signal.shape)
    return np.round(ndi.gaussian_filter(signal * 1500.0, 1) + 200 + noise).astype(np.uint16)


def test_returns_int32_labels_one_to_n_of_the_image_shape(two_nuclei):
    labels = segment_nuclei(two_nuclei)
    assert labels.shape == two_nuclei.shape and labels.dtype == np.int32
    assert np.unique(labels).tolist() == [0, 1, 2]
    assert labels[30, 30] > 0 and labels[64, 66] > 0 and labels[30, 30] != labels[64, 66]


def test_cellpose_arguments_are_accepted_and_unused_by_the_classical_backend(two_nuclei):
    # the pipeline passes model / weights / device whatever the backend
    plain = segment_nuclei(two_nuclei, backend="classical")
    with_extras = segment_nuclei(two_nuclei, backend="classical", model="cpsam", weights=None, device="cpu")
    assert np.array_equal(plain, with_extras)


@pytest.mark.parametrize("shape", [(2, 96, 96), (1, 96, 96), (96,), (4, 1, 96, 96)])
def test_only_two_dimensional_images_and_the_error_names_the_shape(two_nuclei, shape):
    image = np.resize(two_nuclei, shape)
    with pytest.raises(InputError) as error:
        segment_nuclei(image)
    message = str(error.value)
    assert "2-D" in message and f"shape {shape}" in message and "nuclear channel" in message


@pytest.mark.parametrize(
    ("image", "dtype_name"),
    [
        (np.ones((32, 32), dtype=bool), "bool"),
        (np.ones((32, 32), dtype=np.complex64), "complex64"),
        (np.full((32, 32), "a"), "<U1"),
        (np.full((32, 32), None, dtype=object), "object"),
    ],
)
def test_non_numeric_images_are_input_errors_naming_the_dtype(image, dtype_name):
    with pytest.raises(InputError, match=f"dtype {dtype_name}.*integer or float"):
        segment_nuclei(image)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_an_image_without_a_finite_value_is_an_input_error(fill):
    with pytest.raises(InputError, match="no finite value"):
        segment_nuclei(np.full((32, 32), fill, dtype=np.float32))


def test_an_empty_image_is_an_input_error_naming_its_shape():
    with pytest.raises(InputError, match=r"empty \(shape \(0, 40\)\)"):
        segment_nuclei(np.zeros((0, 40), dtype=np.uint16))


def test_a_few_nan_pixels_count_as_background(two_nuclei):
    image = two_nuclei.astype(np.float32)
    image[0:5, 90:96] = np.nan  # e.g. a stitched field's missing corner
    labels = segment_nuclei(image)
    assert labels.max() == 2 and not labels[0:5, 90:96].any()


def test_nothing_found_is_a_no_nuclei_error_with_the_range_threshold_and_what_to_try():
    dark = np.full((64, 64), 120, dtype=np.uint16)
    with pytest.raises(NoNucleiError) as error:
        segment_nuclei(dark, diameter=15)
    message = str(error.value)
    assert "range from 120 to 120" in message  # the intensities seen
    assert "threshold 'triangle' = 120" in message  # the threshold used
    assert "15.0 px" in message  # the size assumed
    assert "nuclear channel" in message and "'li'" in message and "min_area" in message  # what to try
    assert isinstance(error.value, PhenosslError)


@pytest.mark.parametrize("backend", ["stardist", "Classical", ""])
def test_an_unknown_backend_is_a_config_error_listing_the_backends(two_nuclei, backend):
    with pytest.raises(ConfigError, match=f"backend {backend!r}.*classical, cellpose"):
        segment_nuclei(two_nuclei, backend=backend)


@pytest.mark.parametrize("diameter", [0, -12, float("nan"), float("inf"), "20", True])
@pytest.mark.parametrize("backend", ["classical", "cellpose"])
def test_a_diameter_that_is_not_a_positive_size_is_a_config_error(two_nuclei, diameter, backend):
    with pytest.raises(ConfigError, match=r"diameter=.*positive number.*None to estimate"):
        segment_nuclei(two_nuclei, diameter=diameter, backend=backend)


def test_numpy_and_integer_diameters_are_sizes(two_nuclei):
    expected = segment_nuclei(two_nuclei, diameter=20.0)
    assert np.array_equal(segment_nuclei(two_nuclei, diameter=20), expected)
    assert np.array_equal(segment_nuclei(two_nuclei, diameter=np.float32(20)), expected)


@pytest.mark.parametrize(
    ("backend", "typo", "listed"),
    [("classical", "treshold", "threshold"), ("cellpose", "cellprob_treshold", "cellprob_threshold")],
)
def test_an_option_the_backend_does_not_take_is_a_config_error_listing_its_options(
    two_nuclei, backend, typo, listed
):
    with pytest.raises(ConfigError) as error:
        segment_nuclei(two_nuclei, backend=backend, **{typo: 0.5})
    message = str(error.value)
    assert repr(typo) in message and listed in message and "weights" not in message.split("options are")[1]
