"""Early warnings that a run has gone wrong: a non-finite loss, or a collapsed representation."""

from __future__ import annotations

import math


def is_finite(value: float) -> bool:
    return math.isfinite(value)


def embedding_spread(features) -> float:
    """How different the embeddings of a batch are, relative to their size (0 = all identical).

    Mean per-dimension standard deviation over the batch divided by the mean absolute value. A
    collapsed encoder maps every cell to the same vector (or to zero), which drives this to 0;
    a healthy one, even randomly initialised, stays well above 1e-2.
    """
    import torch

    features = features.detach().float()
    spread = features.std(dim=0).mean() / (features.abs().mean() + 1e-12)
    return float(torch.nan_to_num(spread, nan=0.0))
