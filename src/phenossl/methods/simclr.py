"""SimCLR (Chen et al. 2020, "A simple framework for contrastive learning of visual representations").

Each view must pick the other view of its image among the 2B - 2 other views of the batch (NT-Xent).
Written after solo-learn's ``simclr_loss_func`` and lightly's ``NTXentLoss``, on one device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.methods.branch import Branch, Conditions, Pair


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """Normalised-temperature cross-entropy over the 2B views; z1[i] and z2[i] are positives.

    Computed in float32 with autocast off (see ``info_nce_loss``). Symmetric by construction.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        batch = z1.shape[0]
        logits = z @ z.T / temperature
        self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # a view is not its own positive or negative
        targets = torch.arange(2 * batch, device=z.device).roll(batch)  # view i <-> view i + B
        return F.cross_entropy(logits, targets)


class SimCLRBranch(Branch):
    """One composition's SimCLR head: a projector with BatchNorm."""

    def forward(self, features: Pair, momentum_features: None = None, conditions: Conditions = (None, None)) -> Tensor:
        z1, z2 = self.project_pair(features, conditions)
        return nt_xent_loss(z1, z2, self.params.temperature)
