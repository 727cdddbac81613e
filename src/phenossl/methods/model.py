"""The dual-loss SSL model (Bendidi et al. 2024): one shared encoder, one branch per augmentation composition.

Each branch turns its composition's two views into one loss of the same SSL method, with its own heads
(and, for MoCo, its own queue); training minimises ``w * L_a + (1 - w) * L_b``. Only the encoder is
kept for the embedding.

Choices:
- The encoder runs once on all views of all branches, concatenated: one large batch uses an accelerator
  far better than four small ones. Its BatchNorm layers therefore normalise views of both compositions
  together. We accept that: both compositions are views of the same cells, the encoder is shared
  anyway, and the embedding is computed with the running statistics of that mixture. Each branch's
  projector sees only its own composition's views (its BatchNorm batch is that branch's 2B views).
- For MoCo and BYOL a single momentum encoder (EMA of the shared encoder) serves both branches, also run
  once on all views without gradient; each branch keeps its own momentum projector.
- ``update_momentum(progress)`` is called by the training loop after each optimizer step.
- A branch absent from ``views`` is not computed, so a weight of 1.0 or 0.0 costs one branch only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from phenossl.errors import ConfigError, TooFewCellsError
from phenossl.methods.params import MethodParams
from phenossl.methods.registry import method_spec
from phenossl.models.encoders import Encoder, embed_in_eval_mode

ViewPairs = Mapping[str, tuple[Tensor, Tensor]]


class SSLModel(nn.Module):
    """Shared encoder (+ its EMA copy for MoCo/BYOL) and one method branch per composition."""

    #: under torchrun, the parts that see only this rank's cells (their BatchNorm is synchronised); the
    #: branches see every rank's features, gathered in ``forward``
    per_rank_parts = ("encoder", "momentum_encoder")

    def __init__(
        self,
        method: str,
        encoder: Encoder,
        branches: Mapping[str, nn.Module],
        condition_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.encoder = encoder
        self.branches = nn.ModuleDict(branches)
        self.branch_names: tuple[str, ...] = tuple(branches)
        self.condition_dim = condition_dim
        first_branch = next(iter(self.branches.values()))
        self.momentum_encoder: Encoder | None = None
        if first_branch.uses_momentum_encoder:
            self.momentum_encoder = copy.deepcopy(encoder).requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        """Width of the embedding."""
        return self.encoder.feature_dim

    def forward(self, views: ViewPairs, aug_params: ViewPairs | None = None,
                targets: Tensor | None = None) -> dict[str, Tensor]:
        """One scalar loss per branch present in ``views`` ({branch: (view1, view2)}, each (B, C, H, W)).

        ``aug_params`` ({branch: (params1, params2)}, each (B, P)) is required for a CASSLE model and
        ignored otherwise. ``targets`` (B,): the cells' labels, given to branches that take them
        (``Branch.takes_targets``). In training mode MoCo branches enqueue this batch's keys after their loss.
        """
        from phenossl.train.distributed import gather, gather_with_grad

        names = self._check_views(views, aug_params)
        images = [view for name in names for view in views[name]]
        # under torchrun each rank holds its share of the batch: the heads and losses see the global batch
        features = [gather_with_grad(f) for f in _encode_together(self.encoder, images)]
        momentum_features: list[Tensor | None] = [None] * len(images)
        if self.momentum_encoder is not None:
            with torch.no_grad():
                momentum_features = [gather(f) for f in _encode_together(self.momentum_encoder, images)]
        targets = None if targets is None else gather(targets)
        losses = {}
        for index, name in enumerate(names):
            pair = slice(2 * index, 2 * index + 2)
            conditions = (tuple(gather(c) for c in aug_params[name]) if self.condition_dim is not None
                          else (None, None))
            momentum_pair = tuple(momentum_features[pair]) if self.momentum_encoder is not None else None
            extra = {"targets": targets} if getattr(self.branches[name], "takes_targets", False) else {}
            losses[name] = self.branches[name](tuple(features[pair]), momentum_pair, conditions, **extra)
        return losses

    def _check_views(self, views: ViewPairs, aug_params: ViewPairs | None) -> list[str]:
        unknown = sorted(set(views) - set(self.branch_names))
        if unknown:
            raise ConfigError(
                f"views for unknown branches {unknown}: this model has {list(self.branch_names)}"
            )
        names = [name for name in self.branch_names if name in views]
        if not names:
            raise ConfigError(f"no views given: pass views for at least one of {list(self.branch_names)}")
        for name in names:
            pair = views[name]
            if len(pair) != 2 or pair[0].shape != pair[1].shape:
                raise ConfigError(f"branch {name!r} needs two views of the same shape (B, C, H, W)")
            if pair[0].shape[0] < 2:
                raise TooFewCellsError(
                    f"branch {name!r} got a batch of {pair[0].shape[0]} cell(s): SSL losses and BatchNorm "
                    "need at least 2 per batch; use a larger batch size"
                )
            if self.condition_dim is not None and (aug_params is None or name not in aug_params):
                raise ConfigError(
                    f"this model is conditioned on augmentation parameters (CASSLE): pass aug_params for "
                    f"branch {name!r}, a pair of (B, {self.condition_dim}) tensors"
                )
        return names

    @torch.no_grad()
    def update_momentum(self, progress: float) -> None:
        """Move the EMA networks toward the online ones; call after each optimizer step.

        ``progress`` is the fraction of training done (0..1), for BYOL's momentum schedule.
        No-op for SimCLR and VICReg.
        """
        if self.momentum_encoder is None:
            return
        tau = self.momentum_at(progress)
        ema_update(self.encoder, self.momentum_encoder, tau)
        for branch in self.branches.values():
            for online, target in branch.momentum_pairs:
                ema_update(getattr(branch, online), getattr(branch, target), tau)

    def momentum_at(self, progress: float) -> float | None:
        """The EMA momentum used at ``progress`` (None for methods without a momentum network)."""
        return next(iter(self.branches.values())).momentum_at(progress)

    def embed(self, images: Tensor) -> Tensor:
        """Encoder features (B, D) in float32, in eval mode (BatchNorm running statistics), without grad."""
        return embed_in_eval_mode(self.encoder, images)

    def branch_weights(self, weight_a: float) -> dict[str, float]:
        """{branch: weight} for ``weight_a`` on the first branch and 1 - weight_a on the second."""
        return branch_weights(weight_a, self.branch_names)

    def active_branches(self, weight_a: float) -> tuple[str, ...]:
        """The branches whose loss has a non-zero weight: the ones to make views for."""
        return tuple(name for name, weight in self.branch_weights(weight_a).items() if weight > 0)

    def total_loss(self, losses: Mapping[str, Tensor], weight_a: float) -> Tensor:
        """``weight_a * L_a + (1 - weight_a) * L_b`` over this model's branches."""
        return dual_loss(losses, weight_a, self.branch_names)


def branch_weights(weight_a: float, branch_names: Sequence[str] = ("a", "b")) -> dict[str, float]:
    """{first branch: weight_a, second branch: 1 - weight_a}; a single branch must have weight 1."""
    if not 0.0 <= weight_a <= 1.0:
        raise ConfigError(f"the weight of branch {branch_names[0]!r} must be between 0 and 1, got {weight_a}")
    if len(branch_names) == 1:
        if weight_a != 1.0:
            raise ConfigError(
                f"a model with the single branch {branch_names[0]!r} needs weight 1, got {weight_a}"
            )
        return {branch_names[0]: 1.0}
    if len(branch_names) != 2:
        raise ConfigError(f"the dual loss needs one or two branches, got {list(branch_names)}")
    return {branch_names[0]: float(weight_a), branch_names[1]: 1.0 - float(weight_a)}


def dual_loss(
    losses: Mapping[str, Tensor], weight_a: float, branch_names: Sequence[str] = ("a", "b")
) -> Tensor:
    """``weight_a * L_a + (1 - weight_a) * L_b``; a branch with weight 0 is neither required nor added
    (so a NaN in an unused branch cannot leak in)."""
    weights = {name: w for name, w in branch_weights(weight_a, branch_names).items() if w > 0}
    missing = [name for name in weights if name not in losses]
    if missing:
        raise ConfigError(
            f"no loss for branch(es) {missing} although their weight is not 0: pass their views to the model"
        )
    total: Tensor | None = None
    for name, weight in weights.items():
        term = losses[name] if weight == 1.0 else weight * losses[name]
        total = term if total is None else total + term
    assert total is not None  # weights always hold at least one branch
    return total


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target keeps its own, from its forward
    passes in training mode, as in solo-learn and lightly.
    """
    for online_param, target_param in zip(online.parameters(), target.parameters(), strict=True):
        target_param.lerp_(online_param.detach(), 1.0 - momentum)


def _encode_together(encoder: nn.Module, images: Sequence[Tensor]) -> list[Tensor]:
    """Run ``encoder`` once on all images of the same size (one large batch), and split the features back."""
    if all(image.shape[1:] == images[0].shape[1:] for image in images):
        features = encoder(torch.cat(list(images)))
        return list(features.split([image.shape[0] for image in images]))
    # compositions with different output sizes: one batch per size
    outputs: list[Tensor | None] = [None] * len(images)
    for shape in dict.fromkeys(image.shape[1:] for image in images):
        indices = [i for i, image in enumerate(images) if image.shape[1:] == shape]
        group = _encode_together(encoder, [images[i] for i in indices])
        for i, feature in zip(indices, group, strict=True):
            outputs[i] = feature
    return outputs  # type: ignore[return-value]


def build_ssl_model(
    method: str,
    encoder: str,
    in_channels: int,
    branch_names: Sequence[str] = ("a", "b"),
    params: MethodParams | None = None,
    condition_dim: int | None = None,
    *,
    encoder_weights: str | Path | None = None,
    num_samples: int | None = None,
    stem: str = "imagenet",
) -> SSLModel:
    """An SSL model with a shared ``encoder`` and one ``method`` branch per name in ``branch_names``.

    ``condition_dim``: width of the augmentation-parameter vector, for CASSLE projectors.
    ``encoder_weights``: a local weights file for the encoder, or "imagenet" for torchvision's file in
    torch.hub's cache (never downloaded); loaded before the momentum encoder is copied from it.
    ``num_samples``: the dataset size, to keep MoCo's queue no longer than the dataset.
    """
    from phenossl.methods.build import assemble_ssl_model, starting_encoder

    if method_spec(method).branch is None:
        raise ConfigError(f"{method!r} is not an SSL method with a branch per composition: build it with "
                          "phenossl.methods.build.build_model")
    names = tuple(branch_names)
    if (
        not 1 <= len(names) <= 2
        or len(set(names)) != len(names)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ConfigError(
            f"branch_names must be one or two distinct non-empty names, got {list(branch_names)}"
        )
    if condition_dim is not None and (not isinstance(condition_dim, int) or condition_dim < 1):
        raise ConfigError(f"condition_dim must be a positive integer or None, got {condition_dim!r}")
    params = params if params is not None else MethodParams()
    if num_samples is not None:
        params = params.for_dataset(num_samples)
    trunk = starting_encoder(encoder, in_channels, stem, encoder_weights=encoder_weights)
    return assemble_ssl_model(method, trunk, names, method_spec(method).params(params), condition_dim,
                              params.condition_embed_dim)
