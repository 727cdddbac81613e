"""Training methods: the registry (``registry``), the SSL branches (MoCo v2, SimCLR, BYOL, VICReg) of the
dual-loss model, GAN-DL, and building a configuration's model (``build``).

Names are imported lazily: ``phenossl.methods.params`` (imported by the configuration) must not pull in
torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "MethodSpec": "registry",
    "method_names": "registry",
    "method_spec": "registry",
    "register_method": "registry",
    "build_model": "build",
    "SSLModel": "model",
    "branch_weights": "model",
    "build_ssl_model": "model",
    "dual_loss": "model",
    "ema_update": "model",
    "BYOLParams": "params",
    "MethodParams": "params",
    "MoCoParams": "params",
    "SimCLRParams": "params",
    "VICRegParams": "params",
    "byol_loss": "byol",
    "cosine_momentum": "byol",
    "info_nce_loss": "moco",
    "nt_xent_loss": "simclr",
    "vicreg_loss": "vicreg",
}

__all__ = [
    "BYOLParams",
    "MethodParams",
    "MethodSpec",
    "MoCoParams",
    "SSLModel",
    "SimCLRParams",
    "VICRegParams",
    "branch_weights",
    "build_model",
    "build_ssl_model",
    "byol_loss",
    "cosine_momentum",
    "dual_loss",
    "ema_update",
    "info_nce_loss",
    "method_names",
    "method_spec",
    "nt_xent_loss",
    "register_method",
    "vicreg_loss",
]

if TYPE_CHECKING:
    from phenossl.methods.build import build_model
    from phenossl.methods.byol import byol_loss, cosine_momentum
    from phenossl.methods.moco import info_nce_loss
    from phenossl.methods.model import (
        SSLModel,
        branch_weights,
        build_ssl_model,
        dual_loss,
        ema_update,
    )
    from phenossl.methods.params import BYOLParams, MethodParams, MoCoParams, SimCLRParams, VICRegParams
    from phenossl.methods.registry import MethodSpec, method_names, method_spec, register_method
    from phenossl.methods.simclr import nt_xent_loss
    from phenossl.methods.vicreg import vicreg_loss


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
