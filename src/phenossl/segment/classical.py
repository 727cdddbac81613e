"""Nuclei without any model weights: smooth, threshold, fill, split touching nuclei by watershed.

Every length in here is tied to the expected nucleus diameter, so one set of defaults works from
20-pixel DSB nuclei to 60-pixel confocal ones. With ``diameter=None`` the diameter is estimated from
the image itself (see `estimate_diameter`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from phenossl.errors import ConfigError, NoNucleiError

THRESHOLD_METHODS = ("otsu", "li", "triangle")
SPLIT_METHODS = ("peaks", "h-maxima")

# Tuned on the real nuclei in ../shared/data (DSB 2018, CTC GOWT1, a BBBC021 DAPI field); see the tests.
SMOOTHING_PER_DIAMETER = 0.05  # Gaussian sigma: flattens noise and texture, keeps the gaps between nuclei
LOCAL_WINDOW_PER_DIAMETER = 2.0  # window of the local mean that defines a nucleus core
LOCAL_CONTRAST = 0.2  # a core pixel is 20 % further above the threshold than its neighbourhood's mean
PEAK_DISTANCE_PER_DIAMETER = 0.4  # two nucleus centres are at least this far apart
H_MAXIMA_PER_DIAMETER = 0.1  # a distance-transform bump this high (in pixels per diameter) is a centre
MIN_AREA_PER_NUCLEUS = 0.1  # smaller objects are debris (fraction of the expected area)
MAX_AREA_PER_NUCLEUS = 10.0  # larger objects are clumps or artefacts


def segment_classical(
    image: np.ndarray,
    *,
    diameter: float | None = None,
    threshold: str | float = "triangle",
    smoothing: float | None = None,
    local_contrast: float | None = LOCAL_CONTRAST,
    split: str = "peaks",
    min_distance: float | None = None,
    min_area: float | None = None,
    max_area: float | None = None,
    clear_border: bool = False,
) -> np.ndarray:
    """Label nuclei in a 2-D float image; returns int32 labels 1..n (0 = background).

    How: the Gaussian-smoothed image is thresholded globally (the extent of the nuclei), and
    *cores* are the foreground pixels that stand out from their neighbourhood (``local_contrast``
    above the local mean over a window of twice the diameter). Touching nuclei have a dimmer seam
    between them, so their cores come apart even where the foreground mask does not. One watershed
    basin per maximum of the cores' distance transform then fills the foreground.

    threshold: "triangle" (default: keeps dim nuclei), "otsu", "li" (computed on the smoothed
        image) or a fixed intensity.
    smoothing: Gaussian sigma in pixels (default ``0.05 * diameter``).
    local_contrast: see above; None splits on the shape of the foreground mask alone.
    split: "peaks" (peak_local_max at least ``min_distance`` apart, default ``0.4 * diameter``)
        or "h-maxima" (distance-transform maxima higher than ``0.1 * diameter``).
    min_area / max_area: object size limits in pixels (default 0.1x and 10x the area of a disc of
        the expected diameter).
    """
    if split not in SPLIT_METHODS:
        raise ConfigError(f"split={split!r} is not a splitting method; use one of {', '.join(SPLIT_METHODS)}.")
    if diameter is None:
        diameter = estimate_diameter(image, threshold=threshold if not isinstance(threshold, str) else "otsu")
    diameter = float(diameter)
    sigma = SMOOTHING_PER_DIAMETER * diameter if smoothing is None else float(smoothing)
    smoothed = ndi.gaussian_filter(image, sigma) if sigma > 0 else image
    level = threshold_value(smoothed, threshold)
    foreground = ndi.binary_fill_holes(smoothed > level)
    if not foreground.any():
        raise NoNucleiError(_nothing_found(image, level, threshold, diameter, "no pixel is above it"))

    cores = foreground if local_contrast is None else nucleus_cores(smoothed, foreground, level, diameter, local_contrast)
    labels = split_touching(foreground, cores, diameter, split=split, min_distance=min_distance)
    expected_area = np.pi * (diameter / 2) ** 2
    labels = filter_sizes(
        labels,
        min_area=MIN_AREA_PER_NUCLEUS * expected_area if min_area is None else min_area,
        max_area=MAX_AREA_PER_NUCLEUS * expected_area if max_area is None else max_area,
    )
    if clear_border:
        from skimage.segmentation import clear_border as _clear_border

        labels = _clear_border(labels)
    labels = relabel_consecutive(labels)
    if labels.max() == 0:
        raise NoNucleiError(
            _nothing_found(image, level, threshold, diameter, "every object was dropped by the size filter")
        )
    return labels


def nucleus_cores(
    smoothed: np.ndarray, foreground: np.ndarray, level: float, diameter: float, contrast: float
) -> np.ndarray:
    """Foreground pixels brighter (above the threshold) than ``1 + contrast`` times their local mean.

    Isolated nuclei sit among background, so their local mean is low and the whole nucleus is core;
    in a clump the mean is high and only the bright centres remain, separated at the dim seams.
    """
    window = max(3, int(LOCAL_WINDOW_PER_DIAMETER * diameter) | 1)
    local_mean = ndi.uniform_filter(smoothed, window)
    cores = foreground & (smoothed - level > (1 + contrast) * (local_mean - level))
    return ndi.binary_fill_holes(cores)


def estimate_diameter(image: np.ndarray, threshold: str | float = "otsu") -> float:
    """Typical nucleus diameter in pixels: the median equivalent diameter of foreground components.

    Two passes, because the right smoothing depends on the answer. Pass 1 smooths lightly (sigma 1)
    and takes the *area-weighted* median diameter: textured nuclei break into many specks there, but
    specks hold little area, so this gives the scale of the large objects (overestimated where
    nuclei touch). Pass 2 smooths at the segmentation's own scale for that size and takes the plain
    median over components larger than the size filter's minimum: touching clumps are few, so they
    barely move it. Pass the diameter when you know it, to skip this and be sure.
    """
    coarse_areas = _component_areas(image, 1.0, threshold, min_area=16)
    if coarse_areas.size == 0:
        level = threshold_value(ndi.gaussian_filter(image, 1.0), threshold)
        raise NoNucleiError(
            _nothing_found(image, level, threshold, None, "no connected component of 16 pixels or more")
        )
    order = np.sort(coarse_areas)
    coarse_area = order[np.searchsorted(np.cumsum(order), order.sum() / 2)]
    coarse_diameter = _equivalent_diameter(coarse_area)
    areas = _component_areas(
        image,
        max(1.0, SMOOTHING_PER_DIAMETER * coarse_diameter),
        threshold,
        min_area=max(16.0, MIN_AREA_PER_NUCLEUS * coarse_area),
    )
    return float(np.median(_equivalent_diameter(areas))) if areas.size else float(coarse_diameter)


def _component_areas(image: np.ndarray, sigma: float, threshold: str | float, min_area: float) -> np.ndarray:
    """Pixel counts of the hole-filled foreground components at least ``min_area`` large."""
    smoothed = ndi.gaussian_filter(image, sigma)
    components, count = ndi.label(ndi.binary_fill_holes(smoothed > threshold_value(smoothed, threshold)))
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    return areas[areas >= min_area]


def _equivalent_diameter(area: np.ndarray | float) -> np.ndarray | float:
    return np.sqrt(4 * np.asarray(area, dtype=np.float64) / np.pi)


def threshold_value(image: np.ndarray, method: str | float) -> float:
    """A global intensity threshold: a named scikit-image method or the fixed number given."""
    if not isinstance(method, str):
        return float(method)
    from skimage import filters

    functions = {"otsu": filters.threshold_otsu, "li": filters.threshold_li, "triangle": filters.threshold_triangle}
    if method not in functions:
        raise ConfigError(
            f"threshold={method!r} is not a threshold method; use one of {', '.join(THRESHOLD_METHODS)} "
            "or a number (a fixed intensity)."
        )
    return float(functions[method](image))


def split_touching(
    foreground: np.ndarray,
    cores: np.ndarray,
    diameter: float,
    *,
    split: str = "peaks",
    min_distance: float | None = None,
) -> np.ndarray:
    """Cut the foreground into nuclei: one watershed basin per maximum of the cores' distance map."""
    from skimage.feature import peak_local_max
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    core_distance = ndi.distance_transform_edt(cores)
    components, _ = ndi.label(foreground)
    if split == "h-maxima":
        markers, _ = ndi.label(h_maxima(core_distance, H_MAXIMA_PER_DIAMETER * diameter) & cores)
    else:
        spacing = PEAK_DISTANCE_PER_DIAMETER * diameter if min_distance is None else float(min_distance)
        peaks = peak_local_max(
            core_distance, min_distance=max(1, round(spacing)), labels=components, exclude_border=False
        )
        markers = np.zeros(foreground.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a marker (no core, or too thin for a peak) still become one object each
    unmarked = np.setdiff1d(np.unique(components), np.unique(components[markers > 0]))
    unmarked = unmarked[unmarked > 0]
    if unmarked.size:
        orphan = np.isin(components, unmarked)
        markers[orphan] = components[orphan] + markers.max()
    # outside the cores the map is flat; a faint pull towards the mask's centre decides there
    landscape = -(core_distance + 0.01 * ndi.distance_transform_edt(foreground))
    return watershed(landscape, markers, mask=foreground)


def filter_sizes(labels: np.ndarray, *, min_area: float, max_area: float) -> np.ndarray:
    """Zero the objects whose pixel count is outside [min_area, max_area]."""
    areas = np.bincount(labels.ravel())
    keep = (areas >= min_area) & (areas <= max_area)
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n with no gaps, as int32."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32, copy=False))[0]


def _nothing_found(
    image: np.ndarray, level: float, threshold: str | float, diameter: float | None, why: str
) -> str:
    low, high = float(np.nanmin(image)), float(np.nanmax(image))
    size = "" if diameter is None else f" with an expected diameter of {diameter:.1f} px"
    return (
        f"No nucleus found: image intensities range from {low:g} to {high:g}, threshold "
        f"{threshold!r} = {level:g}{size}; {why}. Check that this is the nuclear channel, try a "
        "smaller diameter (or a larger one if nuclei are split into fragments), another threshold "
        "('li', 'triangle' or a fixed value), or smaller min_area."
    )
