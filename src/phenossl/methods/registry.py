"""Every training method by name, in one table: what the configuration accepts, what napari lists, what the
CLI help shows, and how the trainer builds and updates the model all come from here.

A method is one module plus one :func:`register_method` line. An SSL method (a loss on two views of each
composition, weighted ``w * L_A + (1 - w) * L_B``) names its *branch* class (see
:mod:`phenossl.methods.branch`); the dual-loss model, its shared encoder and (for momentum methods) the EMA
encoder are built around it. A method that is not a pair of views and a loss (GAN-DL) names a *model builder*
and its own update step instead.

This module must stay light (no torch): the configuration imports it to validate ``train.method``. Classes
and builders are named as ``"module:attribute"`` strings and imported when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phenossl.errors import ConfigError
from phenossl.registry import Registry, load_object

#: the update steps a method can use (keys of ``phenossl.train.steps.UPDATES``)
DUAL_LOSS_STEP = "dual-loss"
ADVERSARIAL_STEP = "adversarial"


@dataclass(frozen=True)
class MethodSpec:
    """One training method.

    ``section``: its attribute in ``train.method_params`` (the YAML section of its hyper-parameters); a method
    registered by a plug-in without such an attribute gets ``params_class()``'s defaults.
    ``branch``: ``"module:Class"`` of its SSL branch; ``model``: ``"module:function"`` building the whole
    model, ``function(config, encoder, augmenters, tile_size) -> nn.Module``, for methods that are no branch.
    ``step``: which update trains it. ``conditionable``: whether CASSLE can condition its projector.
    ``needs_label``: it trains on a numeric column of the cell table (``train.label_column``), given to its
    branch as ``targets`` (one value per cell); only the cells whose label is known are trained on.
    """

    name: str
    summary: str
    section: str
    branch: str | None = None
    model: str | None = None
    step: str = DUAL_LOSS_STEP
    conditionable: bool = True
    params_class: str | None = None
    needs_label: bool = False

    def __post_init__(self) -> None:
        if (self.branch is None) == (self.model is None):
            raise ConfigError(f"method {self.name!r} needs exactly one of branch= or model=")

    def params(self, method_params: Any) -> Any:
        """This method's hyper-parameters in ``method_params`` (a :class:`~phenossl.methods.params.MethodParams`)."""
        section = getattr(method_params, self.section, None)
        if section is not None:
            return section
        if self.params_class is None:
            raise ConfigError(f"method {self.name!r} has no section {self.section!r} in method_params "
                              "and no params_class to take defaults from")
        return load_object(self.params_class)()

    def branch_class(self) -> type:
        return load_object(self.branch)

    def model_builder(self):
        return load_object(self.model)


METHODS: Registry[MethodSpec] = Registry("training method")
register_method = METHODS.register
unregister_method = METHODS.unregister
method_names = METHODS.names
method_spec = METHODS.get


def methods_help() -> str:
    """One line per method, for the CLI's help."""
    width = max(map(len, method_names()))
    return "\n".join(f"  {spec.name.ljust(width)}  {spec.summary}" for spec in METHODS)


register_method(MethodSpec("mocov2", "MoCo v2: contrastive with a queue of negatives; robust, the paper's default",
                           "moco", branch="phenossl.methods.moco:MoCoBranch"))
register_method(MethodSpec("simclr", "SimCLR: contrastive within the batch; likes large batches",
                           "simclr", branch="phenossl.methods.simclr:SimCLRBranch"))
register_method(MethodSpec("byol", "BYOL: no negatives, momentum target network",
                           "byol", branch="phenossl.methods.byol:BYOLBranch"))
register_method(MethodSpec("vicreg", "VICReg: variance-invariance-covariance; no negatives",
                           "vicreg", branch="phenossl.methods.vicreg:VICRegBranch"))
register_method(MethodSpec("yaware", "y-aware: SimCLR where cells with similar labels (e.g. dose, "
                           "train.label_column) are positives too", "yaware",
                           branch="phenossl.methods.yaware:YAwareBranch", needs_label=True))
register_method(MethodSpec("gandl", "GAN-DL: a GAN; the discriminator (your encoder) learns to tell real cells "
                           "from generated ones", "gandl", model="phenossl.methods.gandl:build_gan_for_config",
                           step=ADVERSARIAL_STEP, conditionable=False))
