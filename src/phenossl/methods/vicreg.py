"""VICReg (Bardes et al. 2022, "Variance-invariance-covariance regularization").

Two views' embeddings should match (invariance) while every embedding dimension keeps a standard
deviation of at least 1 over the batch (variance) and the dimensions stay decorrelated (covariance);
the last two prevent collapse without negatives or a momentum encoder. The terms follow the authors'
code (facebookresearch/vicreg) and solo-learn's ``vicreg_loss_func``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.methods.branch import Branch, Conditions, Pair


def invariance_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean squared distance between the two views' embeddings."""
    return F.mse_loss(z1, z2)


def variance_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge on each dimension's standard deviation over the batch: zero once every std is >= 1."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances, divided by the number of dimensions."""
    batch, dim = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (batch - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / dim


def vicreg_loss(
    z1: Tensor, z2: Tensor, sim_coeff: float = 25.0, var_coeff: float = 25.0, cov_coeff: float = 1.0
) -> Tensor:
    """The weighted VICReg loss, in float32 with autocast off (variances and covariances over a batch
    of wide embeddings overflow or lose precision in half precision)."""
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        return (
            sim_coeff * invariance_loss(z1, z2)
            + var_coeff * (variance_loss(z1) + variance_loss(z2)) / 2
            + cov_coeff * (covariance_loss(z1) + covariance_loss(z2))
        )


class VICRegBranch(Branch):
    """One composition's VICReg head: a 3-layer expander with BatchNorm."""

    def __init__(self, feature_dim: int, params, condition_dim: int | None = None, condition_embed_dim: int = 64):
        super().__init__(feature_dim, params, condition_dim, condition_embed_dim, num_layers=params.proj_num_layers)

    def forward(self, features: Pair, momentum_features: None = None, conditions: Conditions = (None, None)) -> Tensor:
        z1, z2 = self.project_pair(features, conditions)
        p = self.params
        return vicreg_loss(z1, z2, p.sim_coeff, p.var_coeff, p.cov_coeff)
