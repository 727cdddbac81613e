"""Checkpoints: written atomically (a crash mid-save never corrupts the last good one) and
self-describing (the configuration that produced them travels inside)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

from phenossl.atomic import atomic_write
from phenossl.errors import DiskFullError, InputError

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save ``state`` (tensors, numbers, plain containers) to ``path`` atomically. A full disk is a
    DiskFullError saying how much was needed and how much is free (torch reports it only as an iostream
    error); the previous checkpoint is left as it was."""
    import torch

    path = Path(path)
    payload = {"phenossl_checkpoint": CHECKPOINT_FORMAT, **state}
    try:
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except DiskFullError:
        raise
    except (RuntimeError, OSError) as exc:
        needed = payload_bytes(payload)
        free = _free_bytes(path.parent)
        if getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < needed + DISK_MARGIN):
            raise DiskFullError(
                f"The disk holding {path.parent} is full: the checkpoint needs about {needed / 2**20:.0f} MiB and "
                f"{(free or 0) / 2**20:.0f} MiB are free."
            ) from exc
        raise


DISK_MARGIN = 16 * 2**20  # a write that fails with less than this left beyond its own size: the disk was full


def payload_bytes(value: Any) -> int:
    """About how many bytes ``torch.save`` writes for ``value``: the tensors' storage (the rest is small)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return 64


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a phenossl checkpoint; a clear error if it is missing, damaged or something else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(
            f"checkpoint {path} cannot be read: it is damaged (cut short by a crash or a full disk?) or not a torch "
            f"file ({type(exc).__name__}: {str(exc)[:160]}). Train the run again with 'phenossl train CONFIG "
            "--overwrite' (or 'phenossl run CONFIG --overwrite')."
        ) from exc
    if not isinstance(state, dict) or "phenossl_checkpoint" not in state:
        raise InputError(f"{path} is not a phenossl checkpoint")
    return state


def encoder_state_of(path: str | Path) -> dict[str, Any]:
    """The encoder's weights in a phenossl checkpoint (its heads are not needed to start a new run from it)."""
    prefix = "encoder."
    return {key[len(prefix):]: value for key, value in load_checkpoint(path)["model"].items()
            if key.startswith(prefix)}
