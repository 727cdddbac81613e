"""BYOL (Grill et al. 2020, "Bootstrap your own latent").

The online network (encoder, projector, predictor) predicts the target network's projection of the
other view; the target is an EMA of the online encoder and projector, so no negatives are needed.
Written after solo-learn's ``byol_loss_func`` and lightly's ``NegativeCosineSimilarity`` and
``cosine_schedule``.

The loss is symmetric (each view predicts the other) and the two terms are averaged, so it lies in
[0, 4] like the one-directional loss and weighs the same as the other branch in the dual loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.methods.branch import Conditions, MomentumBranch, Pair
from phenossl.models.heads import mlp


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


class BYOLBranch(MomentumBranch):
    """One composition's BYOL heads: projector, predictor and the projector's EMA copy (target)."""

    def __init__(self, feature_dim: int, params, condition_dim: int | None = None, condition_embed_dim: int = 64):
        super().__init__(feature_dim, params, condition_dim, condition_embed_dim)
        self.predictor = mlp(params.proj_output_dim, params.pred_hidden_dim, params.proj_output_dim)

    def momentum_at(self, progress: float) -> float:
        return cosine_momentum(self.params.momentum, self.params.final_momentum, progress)

    def forward(self, features: Pair, momentum_features: Pair, conditions: Conditions = (None, None)) -> Tensor:
        p1, p2 = (self.predictor(z) for z in self.project_pair(features, conditions))
        t1, t2 = self.project_momentum_pair(momentum_features, conditions)
        return 0.5 * (byol_loss(p1, t2) + byol_loss(p2, t1))
