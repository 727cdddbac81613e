"""MoCo v2 (Chen et al. 2020, "Improved baselines with momentum contrastive learning").

Each query must pick its own key (the other view through the momentum encoder) among a queue of keys
from earlier batches. Written after solo-learn's ``mocov2plus`` and lightly's ``NTXentLoss`` with a
memory bank.

Choices:
- Symmetric loss: both views serve as query and as key, and the two InfoNCE terms are averaged
  (as in solo-learn), so every image gives two training signals per step and the loss scale does not
  depend on which view came first.
- One queue per branch, holding the keys of the first view only: one key per cell per step, so the
  queue's length in cells is easy to relate to the dataset size (see ``MethodParams.for_dataset``).
- The queue starts as random unit vectors (as in MoCo): harmless negatives until real keys replace them.
- Keys are enqueued inside ``forward`` in training mode, after the loss is computed, so the current
  batch's keys never serve as their own negatives and the training loop has nothing extra to call.
- No shuffled BatchNorm: on one device, shuffling a batch does not change its BatchNorm statistics, and
  solo-learn does without it. MoCo's paper warns that a query can then recognise its key through
  shared batch statistics; if a MoCo run's loss falls very fast while its clusters stay poor, suspect this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.methods.branch import Conditions, MomentumBranch, Pair


def info_nce_loss(
    query: Tensor, key: Tensor, queue: Tensor | None = None, temperature: float = 0.2
) -> Tensor:
    """InfoNCE: cross-entropy of picking ``key[i]`` for ``query[i]`` against the ``queue`` rows.

    query, key: (B, D), normalised here; queue: (K, D) of unit vectors (may be empty). Computed in float32
    with autocast off: logits divided by a small temperature lose too much precision in half precision.
    """
    with torch.autocast(query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=1)
        k = F.normalize(key.detach().float(), dim=1)
        positives = (q * k).sum(dim=1, keepdim=True)
        logits = positives
        if queue is not None and queue.numel() > 0:
            logits = torch.cat([positives, q @ queue.detach().float().T], dim=1)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits / temperature, labels)


@torch.no_grad()
def enqueue(queue: Tensor, pointer: Tensor, keys: Tensor) -> None:
    """Write ``keys`` (n, D) into the ring buffer ``queue`` (K, D) at ``pointer``, wrapping around.

    Works for any n (only the last K keys are kept when n > K) and keeps ``pointer`` on the device,
    so it does not synchronise with a GPU.
    """
    size = queue.shape[0]
    keys = keys.detach()[-size:].to(queue.dtype)
    positions = (pointer + torch.arange(keys.shape[0], device=queue.device)) % size
    queue.index_copy_(0, positions, keys)
    pointer.copy_((pointer + keys.shape[0]) % size)


class MoCoBranch(MomentumBranch):
    """One composition's MoCo head: projector (no BatchNorm, as in MoCo v2), its momentum copy, a queue of keys."""

    def __init__(self, feature_dim: int, params, condition_dim: int | None = None, condition_embed_dim: int = 64):
        super().__init__(feature_dim, params, condition_dim, condition_embed_dim, batch_norm=False)
        queue = F.normalize(torch.randn(params.queue_size, params.proj_output_dim), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def forward(self, features: Pair, momentum_features: Pair, conditions: Conditions = (None, None)) -> Tensor:
        q1, q2 = self.project_pair(features, conditions)
        k1, k2 = self.project_momentum_pair(momentum_features, conditions)
        negatives = self.queue.clone()  # autograd keeps it for backward; enqueue below writes in place
        loss = 0.5 * (
            info_nce_loss(q1, k2, negatives, self.params.temperature)
            + info_nce_loss(q2, k1, negatives, self.params.temperature)
        )
        if self.training:
            enqueue(self.queue, self.queue_pointer, F.normalize(k1.float(), dim=1))
        return loss
