"""y-aware contrastive learning (Dufumier et al. 2021, "Contrastive learning with continuous proxy meta-data
for 3D MRI classification", MICCAI): SimCLR's two views per cell, but the other cells of the batch count as
positives in proportion to a Gaussian kernel on a continuous label (e.g. the log-dose), so cells treated at
similar doses are pulled together while the augmentation still defines the views.

Written after the authors' ``GeneralizedSupervisedNTXenLoss`` (github.com/Duplums/yAwareContrastiveLearning,
``losses.py``), with two documented differences (``tests/methods/test_yaware.py`` checks both):

- the kernel weights are normalised per anchor (each row sums to 1), as the paper's equation writes it. The
  reference's ``weights /= weights.sum(axis=1)`` broadcasts along the last axis, so entry (i, j) is divided by
  row j's sum; on a symmetric kernel matrix that is the same whenever the rows' sums are equal (one label, or
  sigma -> 0), and differs slightly otherwise;
- the loss is the mean over the 2B views, as ``nt_xent_loss``; the reference sums the 2B rows and divides by B
  (twice ours). With sigma -> 0 and distinct labels ours equals ``nt_xent_loss`` exactly.

The label transform (``none``/``log10``) is applied where the labels are read (``phenossl.train.labels``); this
module sees labels in the units ``sigma`` is given in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.errors import ConfigError
from phenossl.methods.branch import Conditions, Pair
from phenossl.methods.simclr import SimCLRBranch


def kernel_weights(labels: Tensor, sigma: float) -> Tensor:
    """(2B, 2B) Gaussian kernel on the labels of both views (view i and i + B are the same cell), zero on the
    diagonal (a view is not its own positive), each row normalised to sum to 1. A row never sums to 0: the other
    view of the same cell has the same label (weight 1)."""
    y = labels.float().reshape(-1).repeat(2)
    weights = torch.exp(-((y[:, None] - y[None, :]) ** 2) / (2.0 * sigma**2))
    weights = weights.masked_fill(torch.eye(len(y), dtype=torch.bool, device=y.device), 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def yaware_loss(z1: Tensor, z2: Tensor, labels: Tensor, temperature: float = 0.1, sigma: float = 1.0) -> Tensor:
    """Kernel-weighted NT-Xent over the 2B views: ``-mean_i sum_j w_ij log softmax_j(sim_ij / T)`` with
    ``w_ij`` the row-normalised Gaussian kernel (bandwidth ``sigma``, in label units) between the cells' labels.

    ``labels``: (B,) one finite label per cell. Computed in float32 with autocast off (see ``nt_xent_loss``).
    """
    if labels.shape[0] != z1.shape[0]:
        raise ConfigError(f"y-aware needs one label per cell: got {labels.shape[0]} labels for {z1.shape[0]} cells")
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
        logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
        log_prob = F.log_softmax(logits, dim=1).masked_fill(self_mask, 0.0)  # 0 * -inf would be NaN
        weights = kernel_weights(labels.to(z.device), sigma)
        return -(weights * log_prob).sum(dim=1).mean()


class YAwareBranch(SimCLRBranch):
    """SimCLR's branch (its projector with BatchNorm) trained with the y-aware loss on each cell's label."""

    takes_targets = True

    def forward(self, features: Pair, momentum_features: None = None, conditions: Conditions = (None, None),
                targets: Tensor | None = None) -> Tensor:
        if targets is None:
            raise ConfigError("y-aware training needs each cell's label: set train.label_column to a numeric "
                              "column of the cell table (e.g. the dose)")
        z1, z2 = self.project_pair(features, conditions)
        return yaware_loss(z1, z2, targets, self.params.temperature, self.params.sigma)
