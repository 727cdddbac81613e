"""Hyper-parameters of the SSL methods, one section per method, with the papers' defaults scaled down.

The papers train on ImageNet (1.3 M images, batches of 256-4096, hundreds of epochs); a screen gives
thousands to a few hundred thousand cells and is trained for far fewer steps. So heads are narrower
(2048 instead of 4096-8192), MoCo's queue is shorter and its momentum lower, which lets the momentum
encoder follow the online one within a short run. Unknown keys are rejected (``extra="forbid"``) so a
typo in a YAML file fails loudly instead of being ignored.

Importing this module must stay light (no torch): the configuration imports it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from phenossl.errors import ConfigError

PositiveInt = Annotated[int, Field(ge=1)]
Momentum = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MoCoParams(_Section):
    """MoCo v2 (Chen et al. 2020): 2-layer MLP projector without BatchNorm, InfoNCE against a queue."""

    proj_hidden_dim: PositiveInt = 2048
    proj_output_dim: PositiveInt = 128
    temperature: Annotated[float, Field(gt=0.0)] = 0.2
    queue_size: PositiveInt = Field(
        4096,
        description="negatives kept per branch (paper: 65536). Longer than the dataset, the queue would "
        "hold stale keys of the very cells it contrasts: MethodParams.for_dataset clamps it to half "
        "the dataset.",
    )
    momentum: Momentum = Field(
        0.99, description="EMA of the key encoder (paper: 0.999 for 200 epochs of ImageNet)"
    )


class SimCLRParams(_Section):
    """SimCLR (Chen et al. 2020): 2-layer MLP projector with BatchNorm, NT-Xent over in-batch negatives."""

    proj_hidden_dim: PositiveInt = 2048
    proj_output_dim: PositiveInt = 128
    temperature: Annotated[float, Field(gt=0.0)] = 0.2


class YAwareParams(_Section):
    """y-aware contrastive learning (Dufumier et al. 2021): SimCLR's projector; other cells are positives in
    proportion to a Gaussian kernel on a continuous label (``train.label_column``, e.g. the dose)."""

    proj_hidden_dim: PositiveInt = 2048
    proj_output_dim: PositiveInt = 128
    temperature: Annotated[float, Field(gt=0.0)] = Field(0.1, description="the paper's and reference code's 0.1")
    sigma: Annotated[float, Field(gt=0.0)] = Field(
        1.0, description="bandwidth of the Gaussian kernel, in label units (after label_transform: decades of "
        "dose for log10); small: only cells at (nearly) the same dose are positives"
    )
    label_transform: Literal["none", "log10"] = Field(
        "none", description="log10: compare doses by their ratio (doses span decades); a dose of 0 (the "
        "controls) is placed one decade below the smallest positive dose; negative labels are an error"
    )

    def transform_labels(self, values: np.ndarray) -> np.ndarray:
        """The labels the kernel compares: ``values`` (finite) as they are, or their log10 (zeros one decade
        below the smallest positive value). Raises ConfigError for labels log10 cannot take."""
        values = np.asarray(values, dtype=np.float64)
        if self.label_transform == "none":
            return values
        if (values < 0).any():
            raise ConfigError(f"has negative values (e.g. {values[values < 0][0]:g}): label_transform log10 "
                              "needs doses >= 0; use label_transform: none")
        positive = values[values > 0]
        if positive.size == 0:
            raise ConfigError("has no positive value: log10 of only zero doses is undefined; use label_transform: "
                              "none")
        floor = np.log10(positive.min()) - 1.0
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), floor)


class BYOLParams(_Section):
    """BYOL (Grill et al. 2020): projector and predictor MLPs, EMA target with cosine momentum to 1."""

    proj_hidden_dim: PositiveInt = 2048
    proj_output_dim: PositiveInt = 256
    pred_hidden_dim: PositiveInt = 2048
    momentum: Momentum = 0.996
    final_momentum: Momentum = 1.0

    @model_validator(mode="after")
    def _momentum_increases(self) -> BYOLParams:
        if self.final_momentum < self.momentum:
            raise ValueError(f"final_momentum ({self.final_momentum}) must be >= momentum ({self.momentum})")
        return self


class VICRegParams(_Section):
    """VICReg (Bardes et al. 2022): 3-layer expander, invariance/variance/covariance weighted 25/25/1."""

    proj_hidden_dim: PositiveInt = 2048
    proj_output_dim: PositiveInt = 2048
    proj_num_layers: PositiveInt = 3
    sim_coeff: Annotated[float, Field(ge=0.0)] = 25.0
    var_coeff: Annotated[float, Field(ge=0.0)] = 25.0
    cov_coeff: Annotated[float, Field(ge=0.0)] = 1.0


class GANParams(_Section):
    """GAN-DL (Mascolini et al. 2022): non-saturating GAN loss with R1, Adam as in StyleGAN2, small generator."""

    latent_dim: PositiveInt = 128
    generator_width: PositiveInt = Field(64, description="channels of the generator's last block (x8 at its start)")
    r1_gamma: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="weight of the R1 penalty on real images (gamma / 2 * |grad D|^2); None: StyleGAN2-ADA's "
        "heuristic 0.0002 * resolution^2 / batch size"
    )
    r1_every: PositiveInt = Field(4, description="lazy R1: computed every n steps, scaled by n (StyleGAN2: 16)")
    lr: Annotated[float, Field(gt=0.0)] | None = Field(
        2e-4, description="learning rate of both networks (GANs need less than SSL); None = train.lr"
    )
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99


class MethodParams(_Section):
    """Every method's section (only the trained method's is used) and CASSLE's condition embedding."""

    moco: MoCoParams = Field(default_factory=MoCoParams)
    simclr: SimCLRParams = Field(default_factory=SimCLRParams)
    yaware: YAwareParams = Field(default_factory=YAwareParams)
    byol: BYOLParams = Field(default_factory=BYOLParams)
    vicreg: VICRegParams = Field(default_factory=VICRegParams)
    gandl: GANParams = Field(default_factory=GANParams)
    condition_embed_dim: PositiveInt = Field(
        64, description="width of the embedding of the augmentation parameters (CASSLE only)"
    )

    def for_method(self, method: str) -> _Section:
        """The section of the registered method ``method`` (its ``MethodSpec.section``: MoCo v2's is ``moco``)."""
        from phenossl.methods.registry import method_spec

        return method_spec(method).params(self)

    def for_dataset(self, num_samples: int) -> MethodParams:
        """A copy that fits a dataset of ``num_samples`` cells: MoCo's queue at most half the dataset.

        Each training step enqueues one key per cell, so a queue as long as the dataset holds every cell
        once, and a cell met again in the next epoch still finds its own older key among its negatives
        about half of the time (a false negative nearly identical to its positive). A queue of half the
        dataset lowers that to about 1 in 8 (on ImageNet, MoCo's queue is 5 % of the dataset).
        """
        queue_size = max(1, min(self.moco.queue_size, num_samples // 2))
        if queue_size == self.moco.queue_size:
            return self.model_copy(deep=True)
        return self.model_copy(
            update={"moco": self.moco.model_copy(update={"queue_size": queue_size})}, deep=True
        )
