"""The classical (scikit-image) nuclei backend on synthetic nuclei whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from phenossl.errors import ConfigError, NoNucleiError
from phenossl.segment import match_instances, segment_nuclei
from phenossl.segment.classical import (
    background_map,
    estimate_diameter,
    filter_sizes,
    interpolate_boxes,
    largest_piece_per_label,
    noise_level,
    object_percentiles,
    relabel_consecutive,
    smoothing_noise_gain,
    trim_to_edges,
)


def draw_discs(
    centres, diameter: float, shape=(128, 128), *, brightness=1000.0, background=100.0, noise=10.0, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """A blurred, noisy image of bright discs and their true labels (overlaps go to the nearest centre).

    ``brightness`` may be one value or one per disc.
    """
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    distances = np.stack([np.hypot(yy - y, xx - x) for y, x in centres])
    nearest = distances.argmin(axis=0)
    inside = distances.min(axis=0) <= diameter / 2
    truth = np.where(inside, nearest + 1, 0).astype(np.int32)
    levels = np.broadcast_to(np.asarray(brightness, dtype=np.float64), (len(centres),))
    signal = np.where(inside, levels[nearest], 0.0)
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(signal, 1.0) + background + rng.normal(0, noise, shape)
    return image.astype(np.float32), truth


def grid_centres(diameter: float, shape: tuple[int, int], count: int = 12) -> list[tuple[int, int]]:
    """Well-separated centres (1.8 diameters apart), away from the border."""
    step, d = int(1.8 * diameter), int(diameter)
    return [(y, x) for y in range(d, shape[0] - d, step) for x in range(d, shape[1] - d, step)][:count]


def numbered_one_to_n(labels: np.ndarray) -> bool:
    return np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    areas = np.bincount(labels.ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def test_two_overlapping_nuclei_are_split_in_two():
    image, truth = draw_discs([(64, 52), (64, 76)], diameter=30)  # centres 24 px apart: they overlap
    assert ndi.label(truth > 0)[1] == 1  # one blob in the mask: only splitting can separate them
    labels = segment_nuclei(image, diameter=30)
    assert labels.max() == 2
    scores = match_instances(truth, labels)
    assert scores.tp == 2 and scores.mean_matched_iou > 0.85


def test_a_chain_of_three_touching_nuclei_gives_three():
    image, truth = draw_discs([(64, 34), (64, 60), (64, 86)], diameter=28)
    for diameter in (28, None):
        labels = segment_nuclei(image, diameter=diameter)
        assert match_instances(truth, labels).tp == 3


def test_h_maxima_splitting_also_separates_touching_nuclei():
    image, truth = draw_discs([(64, 52), (64, 76)], diameter=30)
    labels = segment_nuclei(image, diameter=30, split="h-maxima")
    assert match_instances(truth, labels).tp == 2


def test_labels_are_int32_numbered_one_to_n_without_gaps():
    shape = (160, 160)
    image, truth = draw_discs(grid_centres(20, shape), diameter=20, shape=shape)
    labels = segment_nuclei(image)
    assert labels.dtype == np.int32 and labels.shape == shape
    assert numbered_one_to_n(labels)
    assert labels.max() == truth.max() == 12


def test_same_image_gives_the_same_labels_whatever_its_integer_or_float_type():
    shape = (128, 128)
    image, _ = draw_discs(grid_centres(16, shape), diameter=16, shape=shape)
    as_uint16 = np.clip(np.round(image), 0, None).astype(np.uint16)
    first = segment_nuclei(as_uint16)
    assert np.array_equal(first, segment_nuclei(as_uint16))
    assert np.array_equal(first, segment_nuclei(as_uint16.astype(np.float64)))


@pytest.mark.parametrize("true_diameter", [10, 24, 48])
def test_estimated_diameter_is_within_ten_percent_of_the_truth(true_diameter):
    shape = (max(160, 8 * true_diameter),) * 2
    image, truth = draw_discs(grid_centres(true_diameter, shape), diameter=true_diameter, shape=shape)
    assert estimate_diameter(image) == pytest.approx(true_diameter, rel=0.1)
    labels = segment_nuclei(image)  # diameter=None: estimated, then used for every length
    assert match_instances(truth, labels).f1 == 1.0
    assert np.median(equivalent_diameters(labels)) == pytest.approx(true_diameter, rel=0.1)


def test_estimated_diameter_is_not_fooled_by_a_few_touching_pairs():
    shape = (256, 256)
    centres = grid_centres(20, shape, count=16)
    centres += [(y + 16, x) for y, x in centres[:3]]  # three nuclei get a touching neighbour
    image, _ = draw_discs(centres, diameter=20, shape=shape)
    assert estimate_diameter(image) == pytest.approx(20, rel=0.15)


@pytest.mark.parametrize("threshold", ["otsu", "li", "triangle", 550.0])
def test_every_threshold_method_finds_the_nuclei_at_their_size(threshold):
    shape = (160, 160)
    image, truth = draw_discs(grid_centres(20, shape), diameter=20, shape=shape)
    labels = segment_nuclei(image, diameter=20, threshold=threshold)
    scores = match_instances(truth, labels)
    assert scores.f1 == 1.0 and scores.mean_matched_iou > 0.85


def test_dim_and_bright_nuclei_of_one_size_come_out_the_same_size():
    # a global threshold low enough for the dim one would wrap the bright one in its blur halo
    image, truth = draw_discs([(64, 32), (64, 96)], diameter=20, brightness=[300.0, 3000.0], noise=5)
    labels = segment_nuclei(image, diameter=20)
    assert match_instances(truth, labels).tp == 2
    dim_size, bright_size = equivalent_diameters(labels)
    assert dim_size == pytest.approx(20, rel=0.1) and bright_size == pytest.approx(20, rel=0.1)
    untrimmed = segment_nuclei(image, diameter=20, edge_fraction=None)
    assert equivalent_diameters(untrimmed)[1] > 1.2 * 20  # what trimming to the edges is for


@pytest.mark.parametrize("image", [np.full((64, 64), 7.0), np.zeros((64, 64), np.uint16)])
@pytest.mark.parametrize("diameter", [None, 12])
def test_flat_image_has_no_nuclei_and_the_message_says_what_to_try(image, diameter):
    with pytest.raises(NoNucleiError) as error:
        segment_nuclei(image, diameter=diameter)
    message = str(error.value)
    low = f"{float(image.min()):g}"
    assert f"range from {low} to {low}" in message
    assert "threshold" in message and "nuclear channel" in message and "diameter" in message


def test_fixed_threshold_above_every_pixel_reports_that_threshold():
    image, _ = draw_discs([(64, 64)], diameter=20)
    with pytest.raises(NoNucleiError, match=r"threshold 100000.0 = 100000.*no pixel is above it"):
        segment_nuclei(image, diameter=20, threshold=100000.0)


def test_only_specks_smaller_than_the_size_filter_is_no_nuclei():
    image = np.zeros((64, 64), np.float32)
    image[10, 10] = image[40, 50] = 1000.0  # single hot pixels
    with pytest.raises(NoNucleiError, match="dropped by the size filter"):
        segment_nuclei(image, diameter=20)


def test_debris_is_dropped_and_border_nuclei_are_kept_unless_asked():
    image, truth = draw_discs([(64, 64), (64, 4), (20, 100)], diameter=20)
    image[110:112, 20:22] += 1500  # a 4-pixel speck of debris
    labels = segment_nuclei(image, diameter=20)
    assert labels.max() == 3 and labels[110, 20] == 0 and numbered_one_to_n(labels)  # no gap where it was
    assert match_instances(truth, labels).tp == 3
    cleared = segment_nuclei(image, diameter=20, clear_border=True)
    assert cleared.max() == 2 and cleared[64, 4] == 0 and cleared.dtype == np.int32
    assert numbered_one_to_n(cleared)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"threshold": "isodata"}, ["'isodata'", "otsu", "li", "triangle", "a number"]),
        ({"split": "voronoi"}, ["'voronoi'", "peaks", "h-maxima"]),
        ({"edge_fraction": 1.5}, ["edge_fraction=1.5", "[0, 1)"]),
    ],
)
def test_unknown_methods_are_config_errors_listing_the_choices(options, words):
    image, _ = draw_discs([(64, 64)], diameter=20)
    with pytest.raises(ConfigError) as error:
        segment_nuclei(image, diameter=20, **options)
    for word in words:
        assert word in str(error.value)


def test_object_percentiles_per_label_by_nearest_rank():
    labels = np.array([[0, 1, 1, 1, 1, 3]])
    values = np.array([[9.0, 4.0, 1.0, 3.0, 2.0, 5.0]])
    assert object_percentiles(labels, values, 100).tolist() == [0.0, 4.0, 0.0, 5.0]
    assert object_percentiles(labels, values, 0).tolist() == [0.0, 1.0, 0.0, 5.0]
    assert object_percentiles(labels, values, 50).tolist() == [0.0, 2.0, 0.0, 5.0]  # ranks 1..4: 2nd


def test_size_filter_then_relabelling_leaves_int32_labels_without_gaps():
    labels = np.zeros((6, 12), dtype=np.uint16)
    labels[0:3, 0:3] = 2  # 9 px
    labels[0, 5] = 4  # 1 px: debris
    labels[0:6, 7:12] = 9  # 30 px: a clump
    labels[4:6, 0:2] = 11  # 4 px
    kept = filter_sizes(labels, min_area=4, max_area=10)
    assert sorted(np.unique(kept)) == [0, 2, 11]
    relabelled = relabel_consecutive(kept)
    assert relabelled.dtype == np.int32 and numbered_one_to_n(relabelled)
    assert relabelled[0, 0] == 1 and relabelled[5, 1] == 2


def test_largest_piece_per_label_keeps_one_solid_region_per_object():
    labels = np.array(
        [
            [1, 1, 1, 0, 1, 0, 2],
            [1, 1, 0, 0, 0, 0, 2],
            [0, 0, 0, 2, 0, 0, 0],
        ]
    )
    kept = largest_piece_per_label(labels)
    expected = np.array(
        [
            [1, 1, 1, 0, 0, 0, 2],
            [1, 1, 0, 0, 0, 0, 2],
            [0, 0, 0, 0, 0, 0, 0],
        ]
    )
    assert np.array_equal(kept, expected)


def test_trim_to_edges_cuts_each_object_at_its_own_relative_height():
    # two flat-topped profiles with the same shoulders: one peaks at 100, the other at 20
    above_background = np.array([[0, 10, 50, 100, 100, 50, 10, 0, 2, 10, 20, 20, 10, 2, 0]], dtype=np.float64)
    labels = np.array([[0, 1, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 2, 0]])
    trimmed = trim_to_edges(labels, above_background, fraction=0.45)
    assert trimmed.tolist() == [[0, 0, 1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 2, 0, 0]]


def noise_field(shape=(256, 256), *, level=500.0, noise=20.0, vignetting=0.0, seed=0) -> np.ndarray:
    """An empty field: camera noise on a background that falls off by ``vignetting`` towards the corners."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    radius2 = ((yy - shape[0] / 2) / (shape[0] / 2)) ** 2 + ((xx - shape[1] / 2) / (shape[1] / 2)) ** 2
    background = level * (1 - vignetting * radius2 / 2)
    return (background + np.random.default_rng(seed).normal(0, noise, shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("diameter", "threshold", "vignetting", "size"),
    [
        (None, "triangle", 0.0, 256),
        (12, "triangle", 0.0, 256),
        (34, "triangle", 0.0, 256),
        (20, "otsu", 0.0, 256),
        (12, "li", 0.15, 256),  # 15 % darker at the corners
        (34, "triangle", 0.15, 768),  # the background is followed in boxes of 4 diameters: needs a few
    ],
)
def test_an_empty_noisy_field_has_no_nuclei_rather_than_noise_specks(diameter, threshold, vignetting, size):
    image = noise_field((size, size), vignetting=vignetting)
    with pytest.raises(NoNucleiError) as error:
        segment_nuclei(image, diameter=diameter, threshold=threshold)
    assert "stands out from the pixel noise" in str(error.value) and "min_contrast" in str(error.value)


def test_without_the_contrast_check_an_empty_field_fills_with_specks():  # what min_contrast is for
    assert segment_nuclei(noise_field(), diameter=12, threshold="otsu", min_contrast=None).max() > 50


def test_a_few_dim_nuclei_in_a_noisy_field_are_kept_and_the_noise_dropped():
    # a well where a toxic compound left three cells, each only 3 noise deviations above the background
    centres = [(60, 60), (150, 200), (200, 80)]
    image, truth = draw_discs(
        centres, diameter=20, shape=(256, 256), brightness=60.0, background=500, noise=20
    )
    for threshold in ("triangle", "li"):  # Li's threshold falls into the background noise here
        scores = match_instances(truth, segment_nuclei(image, diameter=20, threshold=threshold))
        assert (scores.tp, scores.fp, scores.fn) == (3, 0, 0), threshold
    assert segment_nuclei(image, diameter=20, threshold="li", min_contrast=None).max() > 100  # the specks


def test_noise_level_measures_the_pixel_noise_under_a_smooth_background():
    yy, xx = np.mgrid[:256, :256]
    smooth = 300 + 0.5 * xx + 200 * np.sin(yy / 40)  # gradients and curvature, no noise
    noisy = smooth + np.random.default_rng(3).normal(0, 7, smooth.shape)
    assert noise_level(noisy, np.ones(smooth.shape, bool)) == pytest.approx(7, rel=0.05)
    assert noise_level(smooth, np.ones(smooth.shape, bool)) < 0.5


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_smoothing_noise_gain_is_how_much_a_blur_shrinks_white_noise(sigma):
    white = np.random.default_rng(4).normal(0, 1, (512, 512))
    measured = ndi.gaussian_filter(white, sigma)[20:-20, 20:-20].std()
    assert smoothing_noise_gain(sigma) == pytest.approx(measured, rel=0.03)
    assert smoothing_noise_gain(0) == 1.0


def test_box_values_are_interpolated_between_centres_and_extrapolated_to_the_border():
    per_box = np.array([[0.0], [10.0], [20.0]])  # boxes of 4 px: centres at 1.5, 5.5, 9.5
    assert interpolate_boxes(per_box, 12, 4).ravel().tolist() == pytest.approx(
        [-3.75, -1.25, 1.25, 3.75, 6.25, 8.75, 11.25, 13.75, 16.25, 18.75, 21.25, 23.75]
    )
    assert interpolate_boxes(np.array([[5.0, 6.0]]), 3, 4).tolist() == [[5.0, 6.0]] * 3  # one box: flat


def test_background_map_follows_uneven_light_under_the_nuclei():
    shape = (256, 320)
    image, _ = draw_discs(grid_centres(20, shape, count=20), diameter=20, shape=shape, noise=5)
    ramp = np.linspace(0, 200, shape[1], dtype=np.float32)[None, :]  # light falls off to the left
    smoothed = ndi.gaussian_filter(image + ramp, 1.0)
    estimate = background_map(smoothed, diameter=20)
    rise = estimate[:, -40:].mean() - estimate[:, :40].mean()
    assert rise == pytest.approx(ramp[0, -40:].mean() - ramp[0, :40].mean(), rel=0.1)  # follows the light
    # nuclei (1000 above) barely lift it; a box's low percentile sits a little below a sloped background
    assert np.percentile(np.abs(estimate - (100 + ramp)), 95) < 40


def test_synthetic_plate_nuclei_are_found_with_f1_above_0_95():
    from phenossl.synthetic import load_plate, sample_data_path

    plate = load_plate(sample_data_path())
    totals = np.zeros(3, dtype=np.int64)
    for image, truth in zip(plate.images[:, 0], plate.nuclei, strict=True):
        scores = match_instances(truth, segment_nuclei(image))
        totals += (scores.tp, scores.fp, scores.fn)
    tp, fp, fn = totals
    assert 2 * tp / (2 * tp + fp + fn) > 0.95  # measured 0.987 (8 fields, 546 nuclei)
    assert tp / (tp + fp + fn) > 0.93  # measured 0.975
