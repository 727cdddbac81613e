"""The label a labelled method trains on (``MethodSpec.needs_label``, e.g. y-aware's dose): one numeric value per
cell from the cell table's ``train.label_column``, checked before any training, NaN where it is unknown.

Only training reads it: the embedding of every cell, labelled or not, is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, TooFewCellsError
from phenossl.methods.registry import method_spec


class LabelColumnError(ConfigError):
    """``train.label_column`` cannot be trained on: missing, not numeric, constant or empty."""


def numeric_columns(cells: pd.DataFrame) -> list[str]:
    """The columns of ``cells`` a labelled method can train on: numeric, with at least two distinct values."""
    return [name for name in cells.columns if name != "cell_id" and pd.api.types.is_numeric_dtype(cells[name])
            and not pd.api.types.is_bool_dtype(cells[name]) and cells[name].nunique(dropna=True) >= 2]


def training_labels(cells: pd.DataFrame, config) -> np.ndarray | None:
    """``train.label_column`` of ``cells`` as float64 (NaN: unknown, not trained on) after the method's label
    transform, or None when ``config.method`` trains on no label. A clear :class:`LabelColumnError` otherwise."""
    spec = method_spec(config.method)
    if not spec.needs_label:
        return None
    column = config.label_column
    choices = ", ".join(numeric_columns(cells)) or "none: add one with input.metadata"
    if column is None:
        raise LabelColumnError(f"train.method {config.method} trains on a label: set train.label_column to a numeric "
                               f"column of the cell table (numeric columns: {choices})")
    if column not in cells.columns:
        raise LabelColumnError(f"train.label_column {column!r} is not a column of the cell table: choose one of its "
                               f"numeric columns ({choices}), or join it with input.metadata")
    raw = cells[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    text = raw[raw.notna() & np.isnan(values)]
    if len(text):
        raise LabelColumnError(f"train.label_column {column!r} is not numeric (e.g. {text.iloc[0]!r}): "
                               f"{config.method} needs a number per cell such as a dose; numeric columns: {choices}")
    known = np.isfinite(values)
    if not known.any():
        raise LabelColumnError(f"train.label_column {column!r} has no value for any cell: fill it (input.metadata) "
                               "or choose another column")
    if known.sum() < 2:
        raise TooFewCellsError(f"only {known.sum()} cell has a value in train.label_column {column!r}: "
                               "training needs at least 2")
    if np.unique(values[known]).size < 2:
        raise LabelColumnError(f"train.label_column {column!r} is constant ({values[known][0]:g} for every labelled "
                               f"cell): nothing to learn from; choose a column that varies (numeric columns: "
                               f"{choices})")
    transform = getattr(spec.params(config.method_params), "transform_labels", None)
    if transform is not None:
        try:
            values[known] = transform(values[known])
        except ConfigError as exc:
            raise LabelColumnError(f"train.label_column {column!r} {exc}") from None
    values[~known] = np.nan
    return values
