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

# Tuned on the real nuclei in ../shared/data (DSB 2018, CTC GOWT1, a BBBC021 DAPI field) and on the
# synthetic plate; the scores are in tests/segment/test_segment_real_data.py.
SMOOTHING_PER_DIAMETER = 0.05  # Gaussian sigma: flattens noise and texture, keeps the gaps between nuclei
LOCAL_WINDOW_PER_DIAMETER = 2.0  # window of the local mean that defines a nucleus core
LOCAL_CONTRAST = 0.2  # a core pixel is 20 % further above the threshold than its neighbourhood's mean
PEAK_DISTANCE_PER_DIAMETER = 0.4  # two nucleus centres are at least this far apart
H_MAXIMA_PER_DIAMETER = 0.1  # a distance-transform bump this high (in pixels per diameter) is a centre
EDGE_FRACTION = 0.45  # a nucleus ends where it falls below 45 % of its brightness above the background
EDGE_PEAK_PERCENTILE = 90  # a nucleus' brightness: robust to a few hot pixels or bright chromocentres
BACKGROUND_BOX_PER_DIAMETER = 4.0  # the background is estimated in boxes this many diameters wide
BACKGROUND_PERCENTILE = 25  # of a box's pixels: background unless nuclei cover three quarters of it
MIN_CONTRAST = 8.0  # brightness above the background in noise units of the smoothed image (specks < 7.2)
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
    edge_fraction: float | None = EDGE_FRACTION,
    min_contrast: float | None = MIN_CONTRAST,
    min_area: float | None = None,
    max_area: float | None = None,
    clear_border: bool = False,
) -> np.ndarray:
    """Label nuclei in a 2-D float image; returns int32 labels 1..n (0 = background).

    How: the Gaussian-smoothed image is thresholded globally (the extent of the nuclei), and
    *cores* are the foreground pixels that stand out from their neighbourhood (``local_contrast``
    above the local mean over a window of twice the diameter). Touching nuclei have a dimmer seam
    between them, so their cores come apart even where the foreground mask does not. One watershed
    basin per maximum of the cores' distance transform then fills the foreground. Last, each nucleus
    is trimmed to where it is at least ``edge_fraction`` of its own brightness above the background:
    a global threshold low enough for dim nuclei otherwise wraps bright ones in their blur halo.

    threshold: "triangle" (default: keeps dim nuclei), "otsu", "li" (computed on the smoothed
        image) or a fixed intensity.
    smoothing: Gaussian sigma in pixels (default ``0.05 * diameter``).
    local_contrast: see above; None splits on the shape of the foreground mask alone.
    split: "peaks" (peak_local_max at least ``min_distance`` apart, default ``0.4 * diameter``)
        or "h-maxima" (distance-transform maxima higher than ``0.1 * diameter``).
    edge_fraction: see above (default 0.45, near the half-maximum edge of a blurred object); None
        keeps the extent of the global threshold.
    min_contrast: objects whose brightness above their local background is less than this many
        times the (smoothed) pixel noise are dropped, so an empty, noisy field gives NoNucleiError
        instead of hundreds of noise specks. Measured: the real nuclei found here 15x and more; noise
        specks in empty fields, flat or 15 % darker at the corners, up to 7.2x (a field 30 % darker at
        the corners can still let a few through). None keeps every object.
    min_area / max_area: object size limits in pixels (default 0.1x and 10x the area of a disc of
        the expected diameter).
    """
    if split not in SPLIT_METHODS:
        raise ConfigError(f"split={split!r} is not a splitting method; use one of {', '.join(SPLIT_METHODS)}.")
    if edge_fraction is not None and not 0.0 <= edge_fraction < 1.0:
        raise ConfigError(
            f"edge_fraction={edge_fraction!r} must be in [0, 1): the share of a nucleus' brightness above "
            f"the background where its edge is ({EDGE_FRACTION} by default; None keeps the threshold's "
            "extent)."
        )
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
    above_background = smoothed - background_map(smoothed, diameter)
    if min_contrast is not None:
        noise = noise_level(image, smoothed <= level) * smoothing_noise_gain(sigma)
        contrast = object_contrast(labels, above_background, noise)
        labels = np.where(contrast[labels] >= min_contrast, labels, 0)
        if not labels.any():
            why = _too_faint(contrast, min_contrast)
            raise NoNucleiError(_nothing_found(image, level, threshold, diameter, why))
    if edge_fraction is not None:
        labels = trim_to_edges(labels, above_background, fraction=edge_fraction)
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
        dropped = "by the size filter" + (" or for touching the border" if clear_border else "")
        why = f"every object was dropped {dropped}"
        raise NoNucleiError(_nothing_found(image, level, threshold, diameter, why))
    return labels


def background_map(smoothed: np.ndarray, diameter: float) -> np.ndarray:
    """The slowly varying background: a low percentile of boxes four diameters wide, interpolated.

    Fields are often unevenly lit (a 15 % fall-off towards the corners is common), so one global
    level would make the bright centre of an empty field stand out. A box is mostly background
    unless nuclei cover three quarters of it, so its 25th percentile is a background level; a 3x3
    median over the boxes overrules the odd box filled by a clump.
    """
    box = max(8, int(BACKGROUND_BOX_PER_DIAMETER * diameter))
    rows, cols = -(-smoothed.shape[0] // box), -(-smoothed.shape[1] // box)
    padded = np.pad(
        smoothed, ((0, rows * box - smoothed.shape[0]), (0, cols * box - smoothed.shape[1])), mode="symmetric"
    )
    boxes = padded.reshape(rows, box, cols, box).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    mesh = ndi.median_filter(np.percentile(boxes, BACKGROUND_PERCENTILE, axis=-1), size=3, mode="nearest")
    return interpolate_boxes(interpolate_boxes(mesh, smoothed.shape[0], box).T, smoothed.shape[1], box).T


def interpolate_boxes(mesh: np.ndarray, length: int, box: int) -> np.ndarray:
    """Rows of per-box values (one per ``box`` pixels) to one row per pixel: linear between box
    centres and extrapolated beyond the outer ones, so a slope carries on to the image border."""
    if mesh.shape[0] == 1:
        return np.repeat(mesh, length, axis=0)
    position = (np.arange(length) - (box - 1) / 2) / box  # in box units, 0 = first box centre
    lower = np.clip(np.floor(position).astype(np.int64), 0, mesh.shape[0] - 2)
    weight = (position - lower)[:, None]
    return mesh[lower] * (1 - weight) + mesh[lower + 1] * weight


def noise_level(image: np.ndarray, where: np.ndarray) -> float:
    """Standard deviation of the pixel noise, from the Laplacian of the pixels in ``where``.

    The 3x3 kernel below cancels smooth intensity (flat background, slow illumination changes) and
    turns white noise of deviation s into noise of deviation 6 s (Immerkaer 1996); the median absolute
    value makes it robust to the few edges that remain. 0.0 for a noise-free background.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    laplacian = np.abs(ndi.convolve(image.astype(np.float64, copy=False), kernel, mode="reflect"))[where]
    return 1.4826 * float(np.median(laplacian)) / 6 if laplacian.size else 0.0


def smoothing_noise_gain(sigma: float) -> float:
    """The factor by which a Gaussian blur of this sigma scales white noise (its kernel's L2 norm)."""
    if sigma <= 0:
        return 1.0
    radius = int(4 * sigma + 0.5)  # gaussian_filter's own truncation
    impulse = np.zeros((2 * radius + 1,) * 2)
    impulse[radius, radius] = 1.0
    return float(np.sqrt((ndi.gaussian_filter(impulse, sigma, mode="constant") ** 2).sum()))


def object_contrast(labels: np.ndarray, above_background: np.ndarray, noise: float) -> np.ndarray:
    """Per label 0..max: the object's brightness above the background in noise units (inf without noise)."""
    brightness = object_percentiles(labels, above_background, EDGE_PEAK_PERCENTILE)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = brightness / noise if noise > 0 else np.where(brightness > 0, np.inf, 0.0)
    contrast[0] = -np.inf  # the background is never an object
    return contrast


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


def trim_to_edges(labels: np.ndarray, above_background: np.ndarray, *, fraction: float) -> np.ndarray:
    """Keep each object's pixels brighter than ``fraction`` of its brightness, both above the background.

    Brightness is the object's 90th intensity percentile. A blurred edge falls off over a few pixels
    whatever the nucleus' brightness, so one global threshold cuts bright nuclei wide and dim ones
    tight; a level per object puts every edge at the same relative height. Holes are filled and only
    the largest piece of an object is kept, so each label stays one solid region.
    """
    cut = fraction * object_percentiles(labels, above_background, EDGE_PEAK_PERCENTILE)
    cut[0] = np.inf  # the background stays background
    trimmed = np.where(above_background > cut[labels], labels, 0)
    holes = ndi.binary_fill_holes(trimmed > 0) & (trimmed == 0)
    trimmed = np.where(holes, labels, trimmed)
    return largest_piece_per_label(trimmed)


def object_percentiles(labels: np.ndarray, values: np.ndarray, percentile: float) -> np.ndarray:
    """Per label 0..max, the given percentile of ``values`` over the object (nearest rank; 0 if empty)."""
    inside = labels > 0
    object_ids, object_values = labels[inside], values[inside]
    order = np.lexsort((object_values, object_ids))
    counts = np.bincount(object_ids, minlength=labels.max() + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    result = np.zeros(counts.size, dtype=np.float64)
    present = counts > 0
    ranks = starts[present] + np.floor(percentile / 100 * (counts[present] - 1)).astype(np.int64)
    result[present] = object_values[order][ranks]
    return result


def largest_piece_per_label(labels: np.ndarray) -> np.ndarray:
    """Zero every piece of an object but its largest (an object cut in two keeps its main part)."""
    from skimage.measure import label as connected_pieces

    pieces = connected_pieces(labels, background=0, connectivity=1)  # equal-valued neighbours join
    if pieces.max() == 0:
        return labels
    areas = np.bincount(pieces.ravel())
    owner = np.zeros(areas.size, dtype=np.int64)
    owner[pieces.ravel()] = labels.ravel()
    piece_ids = np.arange(1, areas.size)
    by_owner_then_area = piece_ids[np.lexsort((areas[1:], owner[1:]))]
    last_of_owner = np.r_[owner[by_owner_then_area][1:] != owner[by_owner_then_area][:-1], True]
    keep = np.zeros(areas.size, dtype=bool)
    keep[by_owner_then_area[last_of_owner]] = True
    return np.where(keep[pieces], labels, 0)


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


def _too_faint(contrast: np.ndarray, min_contrast: float) -> str:
    brightest = float(contrast[1:].max(initial=0.0))
    return (
        f"no object stands out from the pixel noise (the brightest is {brightest:.1f}x the noise above its "
        f"background, min_contrast={min_contrast:g} is needed), so the field looks empty; if it has very "
        "faint nuclei, lower min_contrast"
    )


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
