"""What every SSL branch repeats, written once: its projector, projecting a pair of views, and (for methods
with a target network) the projector's EMA copy and the momentum schedule.

A method's module then holds only its loss (a pure function) and what is really its own, as in solo-learn's
and lightly's method files. A branch is called with the encoder's features of a composition's two views, the
momentum encoder's features of the same views (momentum methods) and, for CASSLE, the views' augmentation
parameters; a branch with ``takes_targets`` (a method registered with ``needs_label``) also gets ``targets=``,
one label per cell of the batch. It returns one scalar loss.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from phenossl.models.heads import make_projector, project

Pair = tuple[Tensor, Tensor]
Conditions = tuple[Tensor, Tensor] | tuple[None, None]


class Branch(nn.Module):
    """A projector on the shared encoder's features. ``projector_options`` are passed to ``make_projector``
    (e.g. ``batch_norm=False`` for MoCo v2, ``num_layers=3`` for VICReg)."""

    uses_momentum_encoder = False
    #: whether ``forward`` takes ``targets=`` (one label per cell; see ``MethodSpec.needs_label``)
    takes_targets = False
    #: (online module, its EMA copy) attribute names, moved by ``SSLModel.update_momentum``
    momentum_pairs: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        feature_dim: int,
        params: Any,
        condition_dim: int | None = None,
        condition_embed_dim: int = 64,
        **projector_options: Any,
    ) -> None:
        super().__init__()
        self.params = params
        self.projector = make_projector(
            feature_dim,
            params.proj_hidden_dim,
            params.proj_output_dim,
            condition_dim=condition_dim,
            condition_embed_dim=condition_embed_dim,
            **projector_options,
        )

    def project_pair(self, features: Pair, conditions: Conditions = (None, None),
                     projector: nn.Module | None = None) -> Pair:
        """Both views through ``projector`` (default: the online one), each with its own condition."""
        projector = self.projector if projector is None else projector
        first, second = (project(projector, f, c) for f, c in zip(features, conditions, strict=True))
        return first, second

    def momentum_at(self, progress: float) -> float | None:
        """The EMA momentum at ``progress`` (0..1 of training); None: no target network."""
        return None

    def forward(self, features: Pair, momentum_features: Pair | None = None,
                conditions: Conditions = (None, None)) -> Tensor:
        raise NotImplementedError


class MomentumBranch(Branch):
    """A branch with a target network: the EMA copy of its projector, fed by the momentum encoder."""

    uses_momentum_encoder = True
    momentum_pairs = (("projector", "momentum_projector"),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def project_momentum_pair(self, momentum_features: Pair, conditions: Conditions = (None, None)) -> Pair:
        """The target network's projections of both views (no gradient)."""
        with torch.no_grad():
            return self.project_pair(momentum_features, conditions, self.momentum_projector)

    def momentum_at(self, progress: float) -> float:
        """A constant momentum (``params.momentum``); BYOL overrides this with its schedule."""
        return self.params.momentum
