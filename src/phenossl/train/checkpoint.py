"""Checkpoints: written atomically (a crash mid-save never corrupts the last good one) and
self-describing (the configuration that produced them travels inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phenossl.atomic import atomic_write
from phenossl.errors import InputError

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save ``state`` (tensors, numbers, plain containers) to ``path`` atomically."""
    import torch

    payload = {"phenossl_checkpoint": CHECKPOINT_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a phenossl checkpoint; a clear error if it is missing, damaged or something else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(f"checkpoint {path} cannot be read (damaged or not a torch file): {exc}") from exc
    if not isinstance(state, dict) or "phenossl_checkpoint" not in state:
        raise InputError(f"{path} is not a phenossl checkpoint")
    return state
