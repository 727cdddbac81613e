"""Segment stage: nuclei instance labels from a 2-D nuclear-stain image, and how to score them.

Two backends behind one function: ``classical`` (scikit-image, needs no weights, the default) and
``cellpose`` (Cellpose 4 from local weights; never downloads). Both return int32 labels 1..n with
0 for background and raise NoNucleiError rather than return an empty image.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from phenossl.errors import ConfigError, InputError
from phenossl.segment.metrics import InstanceScores, match_instances

BACKENDS = ("classical", "cellpose")
# Model options that configs and forms carry whatever the backend; only cellpose uses them.
MODEL_OPTIONS = ("model", "weights", "device")

__all__ = ["BACKENDS", "InstanceScores", "match_instances", "segment_nuclei"]


def segment_nuclei(
    image: np.ndarray,
    *,
    backend: str = "classical",
    diameter: float | None = None,
    **backend_options,
) -> np.ndarray:
    """Label the nuclei of a 2-D (Y, X) image; returns int32 labels, 0 = background, 1..n consecutive.

    diameter: typical nucleus diameter in pixels. None: the classical backend estimates it from the
        image (median size of the foreground objects, see `classical.estimate_diameter`); cellpose
        runs at the image's own scale.
    backend_options: passed to the backend (see `classical.segment_classical` and
        `cellpose_backend.segment_cellpose`), e.g. ``threshold="otsu"`` or ``weights="my.pth"``.
        ``model`` and ``device`` are accepted and ignored by the classical backend (configs carry
        them whatever the backend); ``weights`` given to it is an error, as it would be ignored.
    Non-finite pixels (NaN, inf) count as background. Raises InputError for an image that is not
    2-D numbers, ConfigError for an unknown backend or option, NoNucleiError when nothing is found.
    """
    segment = _backend_function(backend)
    options = _backend_options(backend, segment, backend_options)
    if diameter is not None and not (_is_number(diameter) and np.isfinite(diameter) and diameter > 0):
        raise ConfigError(f"diameter={diameter!r} must be a positive number of pixels, or None to estimate it.")
    pixels = as_intensity_image(image)
    return segment(pixels, diameter=None if diameter is None else float(diameter), **options)


def as_intensity_image(image: np.ndarray) -> np.ndarray:
    """A float64 copy of a 2-D numeric image, non-finite pixels set to the lowest finite value."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(
            f"Nuclei segmentation needs a 2-D image (Y, X), got shape {array.shape}. Pass one channel, "
            "the nuclear channel (e.g. field[channel] of a (C, Y, X) field, or one plane of a stack)."
        )
    if array.size == 0:
        raise InputError(f"The image is empty (shape {array.shape}); check how it was read or cropped.")
    if array.dtype.kind not in "iuf":
        raise InputError(
            f"The image has dtype {array.dtype}; nuclei segmentation needs an integer or float image of "
            "a nuclear stain (a mask or labels are not an image to segment)."
        )
    pixels = array.astype(np.float64)
    finite = np.isfinite(pixels)
    if not finite.any():
        raise InputError(
            f"The {array.shape[0]}x{array.shape[1]} image has no finite value (every pixel is NaN or "
            "infinite); check the file or the processing that produced it."
        )
    if not finite.all():
        pixels[~finite] = pixels[finite].min()
    return pixels


def _backend_function(backend: str) -> Callable[..., np.ndarray]:
    if backend == "classical":
        from phenossl.segment.classical import segment_classical

        return segment_classical
    if backend == "cellpose":
        from phenossl.segment.cellpose_backend import segment_cellpose

        return segment_cellpose
    raise ConfigError(f"Unknown segmentation backend {backend!r}; use one of {', '.join(BACKENDS)}.")


def _backend_options(backend: str, segment: Callable[..., np.ndarray], options: dict) -> dict:
    """The options this backend takes; a misspelt one is named here, not a TypeError deep inside."""
    own = [name for name in inspect.signature(segment).parameters if name not in ("image", "diameter")]
    if backend == "classical":
        if options.get("weights") is not None:
            raise ConfigError(
                f"weights={options['weights']!r} was given but the 'classical' backend uses no weights; "
                "pass backend='cellpose' to segment with that model."
            )
        options = {name: value for name, value in options.items() if name not in MODEL_OPTIONS}
    unknown = sorted(set(options) - set(own))
    if unknown:
        shown = [name for name in own if name not in MODEL_OPTIONS]
        raise ConfigError(
            f"The {backend!r} backend has no option {', '.join(map(repr, unknown))} (every backend takes "
            f"diameter, model, weights, device); its own options are: {', '.join(shown)}."
        )
    return options


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
