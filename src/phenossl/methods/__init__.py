"""SSL methods (MoCo v2, SimCLR, BYOL, VICReg) as branches of the dual-loss model.

Names are imported lazily: ``phenossl.methods.params`` (imported by the configuration) must not pull in
torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "METHOD_NAMES": "model",
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
    "METHOD_NAMES",
    "BYOLParams",
    "MethodParams",
    "MoCoParams",
    "SSLModel",
    "SimCLRParams",
    "VICRegParams",
    "branch_weights",
    "build_ssl_model",
    "byol_loss",
    "cosine_momentum",
    "dual_loss",
    "ema_update",
    "info_nce_loss",
    "nt_xent_loss",
    "vicreg_loss",
]

if TYPE_CHECKING:
    from phenossl.methods.byol import byol_loss, cosine_momentum
    from phenossl.methods.moco import info_nce_loss
    from phenossl.methods.model import (
        METHOD_NAMES,
        SSLModel,
        branch_weights,
        build_ssl_model,
        dual_loss,
        ema_update,
    )
    from phenossl.methods.params import BYOLParams, MethodParams, MoCoParams, SimCLRParams, VICRegParams
    from phenossl.methods.simclr import nt_xent_loss
    from phenossl.methods.vicreg import vicreg_loss


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
