"""Building the model of a training configuration, where the methods live: training, embedding and the
benchmarks all call this (a trained model is rebuilt from its checkpoint's configuration, then loaded).

The encoder is built first and given its starting weights (ImageNet weights, or a previous run's encoder)
*before* the model is assembled around it, so a momentum method's EMA encoder is copied from the encoder
it will follow, never from a random one. There is no other place that loads starting weights.

Importing this module stays light: torch is imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phenossl.errors import InputError
from phenossl.methods.registry import method_spec


def build_model(
    config: Any,
    in_channels: int,
    num_samples: int,
    tile_size: int | None = None,
    *,
    encoder_weights: str | Path | None = None,
    encoder_state: Mapping[str, Any] | None = None,
    state_source: str = "the given encoder state",
):
    """``(model, augmenters)`` for the ``TrainConfig`` ``config``: one augmenter per composition in the loss.

    SSL methods: a shared encoder plus one branch per composition (``num_samples``, the number of cells, bounds
    MoCo's queue, so it is part of a checkpoint). Other methods: their registered builder (GAN-DL generates
    images like the store's ``tile_size`` tiles).
    ``encoder_weights``: a local ImageNet weights file (or "imagenet" for torch.hub's cache), and/or
    ``encoder_state``: an encoder state dict (a previous run's, named ``state_source`` in errors), loaded into
    the encoder in that order before the model is assembled. A model rebuilt to load a checkpoint needs neither.
    """
    from phenossl.augment.pipeline import Augmenter

    spec = method_spec(config.method)
    augmenters = {name: Augmenter(comp, config.resolution) for name, comp in config.compositions().items()}
    encoder = starting_encoder(config.encoder, in_channels, config.stem, encoder_weights=encoder_weights,
                               encoder_state=encoder_state, state_source=state_source)
    if spec.model is not None:
        return spec.model_builder()(config, encoder, augmenters, tile_size), augmenters
    condition_dim = max(aug.param_dim for aug in augmenters.values()) if config.cassle else None
    params = config.method_params.for_dataset(num_samples)
    model = assemble_ssl_model(config.method, encoder, tuple(augmenters), spec.params(params),
                               condition_dim, params.condition_embed_dim)
    return model, augmenters


def starting_encoder(
    name: str,
    in_channels: int,
    stem: str = "imagenet",
    *,
    encoder_weights: str | Path | None = None,
    encoder_state: Mapping[str, Any] | None = None,
    state_source: str = "the given encoder state",
):
    """A ``name`` encoder for ``in_channels`` channels with its starting weights loaded (see :func:`build_model`)."""
    from phenossl.models.encoders import build_encoder, load_encoder_weights

    encoder = build_encoder(name, in_channels, stem)
    if encoder_weights is not None:
        load_encoder_weights(encoder, None if str(encoder_weights) == "imagenet" else encoder_weights)
    if encoder_state is not None:
        try:
            encoder.load_state_dict(encoder_state)
        except RuntimeError as exc:
            raise InputError(
                f"cannot start from {state_source}: its encoder does not match this one "
                f"(another encoder type or channel count?): {exc}"
            ) from exc
    return encoder


def assemble_ssl_model(method: str, encoder, branch_names: tuple[str, ...], params: Any,
                       condition_dim: int | None = None, condition_embed_dim: int = 64):
    """The dual-loss :class:`~phenossl.methods.model.SSLModel` of ``method`` around ``encoder``, whose weights
    are final here: a momentum method's EMA encoder is copied from it."""
    from phenossl.methods.model import SSLModel

    branch_class = method_spec(method).branch_class()
    branches = {name: branch_class(encoder.feature_dim, params, condition_dim, condition_embed_dim)
                for name in branch_names}
    return SSLModel(method, encoder, branches, condition_dim)
