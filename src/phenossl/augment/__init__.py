"""Transformation compositions: what each self-supervised view may change, and a batched executor for them.

``specs`` (light: pydantic only) describes compositions and loads presets; ``pipeline`` (torch) runs them on
the training device. The torch-based names are imported on first use, so reading a configuration or the CLI's
``--help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phenossl.augment.specs import (
    PRESETS,
    Affine,
    Blur,
    CenterCrop,
    Composition,
    Erasing,
    Flip,
    Intensity,
    RandomCrop,
    Rotation,
    TransformSpec,
    identity_composition,
    load_composition,
    save_composition,
    transform_from_dict,
)

if TYPE_CHECKING:
    from phenossl.augment.pipeline import AugmentedBatch, Augmenter, eval_view, preview_views

__all__ = [
    "PRESETS",
    "Affine",
    "AugmentedBatch",
    "Augmenter",
    "Blur",
    "CenterCrop",
    "Composition",
    "Erasing",
    "Flip",
    "Intensity",
    "RandomCrop",
    "Rotation",
    "TransformSpec",
    "eval_view",
    "identity_composition",
    "load_composition",
    "preview_views",
    "save_composition",
    "transform_from_dict",
]

_PIPELINE_NAMES = frozenset({"AugmentedBatch", "Augmenter", "eval_view", "preview_views"})


def __getattr__(name: str) -> Any:
    """Import the torch-based pipeline only when one of its names is first used."""
    if name in _PIPELINE_NAMES:
        from phenossl.augment import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
