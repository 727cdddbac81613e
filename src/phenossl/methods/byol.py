"""BYOL (Grill et al. 2020, "Bootstrap your own latent").

The online network (encoder, projector, predictor) predicts the target network's projection of the
other view; the target is an EMA of the online encoder and projector, so no negatives are needed.
Written after solo-learn's ``byol_loss_func`` and lightly's ``NegativeCosineSimilarity`` and
``cosine_schedule``.

The loss is symmetric (each view predicts the other) and the two terms are averaged, so it lies in
[0, 4] like the one-directional loss and weighs the same as the other branch in the dual loss.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phenossl.methods.params import BYOLParams
from phenossl.models.heads import make_projector, mlp, project


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """2 - 2 cos(prediction, target), averaged over the batch: the MSE of the normalised vectors.

    The target is detached (no gradient flows into the EMA network). float32, autocast off.
    """
    with torch.autocast(prediction.device.type, enabled=False):
        cosine = F.cosine_similarity(prediction.float(), target.detach().float(), dim=1)
        return (2 - 2 * cosine).mean()


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: ``base`` at the start, rising along a half cosine to ``final`` at the end."""
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


class BYOLBranch(nn.Module):
    """One composition's BYOL heads: projector, predictor and the projector's EMA copy (target)."""

    uses_momentum_encoder = True
    momentum_pairs = (("projector", "momentum_projector"),)  # (online, EMA copy), updated by SSLModel

    def __init__(
        self,
        feature_dim: int,
        params: BYOLParams,
        condition_dim: int | None = None,
        condition_embed_dim: int = 64,
    ) -> None:
        super().__init__()
        self.params = params
        self.projector = make_projector(
            feature_dim,
            params.proj_hidden_dim,
            params.proj_output_dim,
            condition_dim=condition_dim,
            condition_embed_dim=condition_embed_dim,
        )
        self.predictor = mlp(params.proj_output_dim, params.pred_hidden_dim, params.proj_output_dim)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def momentum_at(self, progress: float) -> float:
        return cosine_momentum(self.params.momentum, self.params.final_momentum, progress)

    def forward(
        self,
        features: tuple[Tensor, Tensor],
        momentum_features: tuple[Tensor, Tensor],
        conditions: tuple[Tensor, Tensor] | tuple[None, None] = (None, None),
    ) -> Tensor:
        p1, p2 = (
            self.predictor(project(self.projector, f, c)) for f, c in zip(features, conditions, strict=True)
        )
        with torch.no_grad():
            t1, t2 = (
                project(self.momentum_projector, m, c)
                for m, c in zip(momentum_features, conditions, strict=True)
            )
        return 0.5 * (byol_loss(p1, t2) + byol_loss(p2, t1))
