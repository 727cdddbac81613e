"""The Segment stage: nuclei instance labels from a nuclear-stain image.

Two backends behind one function: ``classical`` (scikit-image; needs no weights, the default) and
``cellpose`` (Cellpose 4 from local weights; GPU when present). Both return int32 labels 1..n.
"""

from __future__ import annotations

import numpy as np

from phenossl.errors import ConfigError, InputError
from phenossl.segment.metrics import InstanceScores, match_instances

BACKENDS = ("classical", "cellpose")


def check_nuclear_image(image: np.ndarray) -> np.ndarray:
    """A 2-D, real-valued, finite image as float32 (InputError otherwise, naming what is wrong)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(
            f"nuclei are segmented in a 2-D image (one channel of one field), got shape {image.shape}; "
            "pick the nuclear channel (and one plane of a stack) first"
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"cannot segment an image of dtype {image.dtype}: expected integer or float intensities")
    image = image.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.all():
        if not finite.any():
            raise InputError("the nuclear image holds no finite value (all NaN or infinite)")
        image = np.where(finite, image, np.nanmin(np.where(finite, image, np.nan)))
    return image


def segment_nuclei(
    image: np.ndarray,
    *,
    backend: str = "classical",
    diameter: float | None = None,
    model: str | None = None,
    weights=None,
    device: str = "auto",
    **options,
) -> np.ndarray:
    """Instance labels (int32, 0 = background) of the nuclei in a 2-D image.

    ``diameter`` is the typical nucleus diameter in pixels (None: estimated / left to the backend).
    ``model`` / ``weights`` / ``device`` are used by the cellpose backend (a model name in the local
    Cellpose models folder, or a weights file path, which wins). Other ``options`` go to the backend
    (e.g. ``threshold`` for classical, ``cellprob_threshold`` for cellpose). Raises NoNucleiError
    when nothing is found.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    image = check_nuclear_image(image)
    if backend == "classical":
        from phenossl.segment.classical import segment_classical

        return segment_classical(image, diameter=diameter, **options)
    from phenossl.segment.cellpose_backend import DEFAULT_MODEL, segment_cellpose

    return segment_cellpose(image, diameter=diameter, weights=weights or model or DEFAULT_MODEL, device=device, **options)


__all__ = ["BACKENDS", "InstanceScores", "check_nuclear_image", "match_instances", "segment_nuclei"]
