"""Projector and predictor heads: small MLPs on top of the encoder, discarded after training.

``ConditionedProjector`` is CASSLE's projector (Przewięźlikowski et al. 2023): it also receives the
parameters of the augmentation that made each view, so the projector can account for the augmentation
and the encoder does not have to become invariant to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phenossl.errors import ConfigError


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    batch_norm: bool = True,
    last_bn: bool = False,
) -> nn.Sequential:
    """``num_layers`` linear layers, with BatchNorm + ReLU between them (solo-learn / lightly style).

    ``last_bn`` adds a BatchNorm without affine parameters at the output (SimSiam-style projectors).
    """
    if num_layers < 1:
        raise ConfigError(f"an MLP head needs at least 1 layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))  # BN's shift makes a bias useless
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class ConditionedProjector(nn.Module):
    """CASSLE projector: embed the per-view augmentation parameters, concatenate, project.

    ``condition`` is a (B, P) float vector per view (crop box, flip flags, jitter strengths...), ideally
    scaled to roughly [-1, 1] by whoever draws the augmentations.
    """

    def __init__(
        self,
        in_dim: int,
        condition_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
        condition_embed_dim: int = 64,
    ) -> None:
        super().__init__()
        if condition_dim < 1:
            raise ConfigError(f"condition_dim must be at least 1, got {condition_dim}")
        self.condition_dim = condition_dim
        self.condition_embedding = nn.Sequential(
            nn.Linear(condition_dim, condition_embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(condition_embed_dim, condition_embed_dim),
        )
        self.projector = mlp(
            in_dim + condition_embed_dim, hidden_dim, out_dim, num_layers, batch_norm, last_bn
        )

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        if condition.ndim != 2 or condition.shape != (features.shape[0], self.condition_dim):
            raise ConfigError(
                f"augmentation parameters must have shape (batch, {self.condition_dim}) = "
                f"({features.shape[0]}, {self.condition_dim}), got {tuple(condition.shape)}"
            )
        embedded = self.condition_embedding(condition.to(features.device, dtype=features.dtype))
        # under autocast the embedding may come out in another dtype than the features
        return self.projector(torch.cat([features, embedded.to(features.dtype)], dim=1))


def make_projector(
    feature_dim: int,
    hidden_dim: int,
    out_dim: int,
    *,
    condition_dim: int | None = None,
    condition_embed_dim: int = 64,
    num_layers: int = 2,
    batch_norm: bool = True,
) -> nn.Module:
    """A method's projector: a plain MLP, or the CASSLE conditioned one when ``condition_dim`` is given."""
    if condition_dim is None:
        return mlp(feature_dim, hidden_dim, out_dim, num_layers=num_layers, batch_norm=batch_norm)
    return ConditionedProjector(
        feature_dim,
        condition_dim,
        hidden_dim,
        out_dim,
        num_layers=num_layers,
        batch_norm=batch_norm,
        condition_embed_dim=condition_embed_dim,
    )


def project(head: nn.Module, features: Tensor, condition: Tensor | None = None) -> Tensor:
    """Apply a projector, passing the augmentation parameters only to a conditioned (CASSLE) one."""
    if isinstance(head, ConditionedProjector):
        if condition is None:
            raise ConfigError(
                "this model's projector is conditioned (CASSLE): pass the augmentation parameters"
            )
        return head(features, condition)
    return head(features)
