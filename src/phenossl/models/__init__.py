"""Encoders (torchvision VGG13 trunk, ResNet18) and the small heads put on top of them.

Names are imported lazily so that ``import phenossl.models`` does not import torch until one is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "encoder_names": "registry",
    "encoder_spec": "registry",
    "register_encoder": "registry",
    "Encoder": "encoders",
    "adapt_first_conv": "encoders",
    "build_encoder": "encoders",
    "find_local_imagenet_weights": "encoders",
    "load_encoder_weights": "encoders",
    "ConditionedProjector": "heads",
    "mlp": "heads",
    "project": "heads",
}

__all__ = [
    "ConditionedProjector",
    "Encoder",
    "adapt_first_conv",
    "build_encoder",
    "encoder_names",
    "encoder_spec",
    "find_local_imagenet_weights",
    "load_encoder_weights",
    "mlp",
    "project",
    "register_encoder",
]

if TYPE_CHECKING:
    from phenossl.models.encoders import (
        Encoder,
        adapt_first_conv,
        build_encoder,
        find_local_imagenet_weights,
        load_encoder_weights,
    )
    from phenossl.models.heads import ConditionedProjector, mlp, project
    from phenossl.models.registry import encoder_names, encoder_spec, register_encoder


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
