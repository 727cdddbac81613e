"""Learning-rate schedule and mixed-precision choice, shared by every kind of training step (torch-free
at import, like the rest of the training package's top level)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def lr_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 0, as a multiplier of the base learning rate."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_dtype(device) -> Any:
    """bfloat16 where the GPU has it, else float16; None (no autocast) off CUDA."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
