"""Matplotlib canvases in the napari theme's colours, for the loss curve and the UMAP, and the pure functions
that colour and describe the UMAP's cells (no Qt in those: they are tested on their own)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PlotColors:
    background: str = "#23242b"
    foreground: str = "#f0f1f2"
    grid: str = "#424a54"


def theme_colors(viewer) -> PlotColors:
    """The viewer's theme colours (dark by default), so plots do not glare in a dark viewer."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return PlotColors(theme.background.as_hex(), theme.text.as_hex(), theme.primary.as_hex())
    except Exception:  # an unknown or custom theme: napari's default dark colours
        return PlotColors()


def themed_canvas(
    colors: PlotColors,
    *,
    height: int = 220,
    min_width: int = 200,
    min_height: int | None = None,
    margins: tuple[float, float, float, float] = (0.14, 0.97, 0.2, 0.88),
):
    """A (figure, axes, canvas) triple; the canvas is a QWidget that grows with the dock (``height`` px at
    first, never below ``min_height``, default ``height``).

    ``margins`` are the axes' (left, right, bottom, top) in figure fractions: fixed, because a layout
    engine would cost every redraw."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure
    from qtpy.QtWidgets import QSizePolicy

    figure = Figure(figsize=(4, height / 100), dpi=100, facecolor=colors.background)
    left, right, bottom, top = margins
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    axes = figure.add_subplot(1, 1, 1)
    style_axes(axes, colors)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumSize(min_width, height if min_height is None else min_height)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    return figure, axes, canvas


def style_axes(axes, colors: PlotColors) -> None:
    axes.set_facecolor(colors.background)
    for spine in axes.spines.values():
        spine.set_color(colors.grid)
    axes.tick_params(colors=colors.foreground, labelsize=8)
    axes.xaxis.label.set_color(colors.foreground)
    axes.yaxis.label.set_color(colors.foreground)
    axes.title.set_color(colors.foreground)


# ----------------------------------------------------------------------------------------------
# colouring the UMAP's cells by cluster or by a column of the cell table, and describing one cell

#: A column with at most this many values is coloured by category (a dose series too), one colour each; beyond,
#: a text column keeps this many commonest values and greys the rest ("other"); a numeric one gets a colour bar.
MAX_LEVELS = 12
OTHER_RGBA = (0.5, 0.5, 0.5, 1.0)
NUMERIC_CMAP = "viridis"
NUMERIC_STEPS = 64  # a colour scale in 64 steps: indistinguishable from a smooth one, and drawn as 64 groups
#: Not worth colouring by: identifiers, not properties of the cells.
NOT_COLOURED = ("cell_id", "label", "field_index", "crop_index")
LOCATION_COLUMNS = ("field", "plate", "well", "site")
#: Not said when a cell is described: geometry and bookkeeping of the tile store.
NOT_DESCRIBED = ("cell_id", "label", "field_index", "crop_index", "centroid_y", "centroid_x", "padded")


@dataclass(frozen=True)
class PointColours:
    """Each cell's colour and what the colours mean: legend entries (label, colour, cells) for categories, or
    the range of a colour bar for numbers."""

    rgba: np.ndarray  # (N, 4) float32
    title: str
    legend: tuple[tuple[str, tuple[float, ...], int], ...] = ()
    value_range: tuple[float, float] | None = None
    cmap: str | None = None


def cluster_point_colours(labels: np.ndarray, colors: np.ndarray) -> PointColours:
    """Colour by cluster: the viewer's cluster palette, and a legend entry (with its size) for every cluster;
    HDBSCAN's noise (cluster -1) grey, with a "noise" entry last."""
    labels = np.asarray(labels, dtype=np.int64)
    colors = np.asarray(colors, dtype=np.float32)
    clustered = labels >= 0
    counts = np.bincount(labels[clustered], minlength=len(colors))
    legend = tuple((f"{c} ({counts[c]:,})", tuple(float(v) for v in colors[c]), int(counts[c]))
                   for c in range(len(colors)))
    rgba = np.empty((labels.size, 4), dtype=np.float32)
    rgba[clustered] = colors[labels[clustered]]
    rgba[~clustered] = OTHER_RGBA
    n_noise = int((~clustered).sum())
    if n_noise:
        legend += ((f"noise ({n_noise:,})", OTHER_RGBA, n_noise),)
    return PointColours(rgba, "cluster (cells)", legend)


def is_categorical(values: pd.Series) -> bool:
    """Text, booleans and numbers with few values (doses, replicates) are categories; other numbers a scale."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    return values.nunique(dropna=True) <= MAX_LEVELS


def colour_by_choices(cells: pd.DataFrame) -> list[str]:
    """The cell-table columns worth colouring the UMAP by: any with two values or more, except identifiers, file
    names and text that differs for almost every cell."""
    choices = []
    for name in cells.columns:
        if name in NOT_COLOURED or str(name).startswith(("file", "source")):
            continue
        values = cells[name]
        n_values = values.nunique(dropna=True)
        if n_values < 2:
            continue
        if not pd.api.types.is_numeric_dtype(values) and n_values > max(50, len(values) // 2):
            continue
        choices.append(str(name))
    return choices


def _level_label(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def column_point_colours(values: pd.Series, name: str | None = None) -> PointColours:
    """Colour by a column: categories get a palette (tab10, tab20 beyond 10) and a legend with their sizes, the
    commonest MAX_LEVELS only (the rest grey, as "other"); numbers a colour scale (NUMERIC_STEPS steps) over
    their 1st-99th percentile. Missing values are grey."""
    from matplotlib import colormaps

    name = str(values.name if name is None else name)
    n = len(values)
    rgba = np.empty((n, 4), dtype=np.float32)
    rgba[:] = OTHER_RGBA
    if is_categorical(values):
        codes, levels = pd.factorize(values, sort=True)  # -1: missing
        counts = np.bincount(codes[codes >= 0], minlength=len(levels))
        if pd.api.types.is_numeric_dtype(values) and len(levels) <= MAX_LEVELS:
            shown = np.arange(len(levels))  # a dose series: in its own order
        else:
            shown = np.argsort(-counts, kind="stable")[:MAX_LEVELS]  # the commonest, commonest first
        palette = colormaps["tab10" if len(shown) <= 10 else "tab20"]
        lut = np.tile(np.asarray(OTHER_RGBA, dtype=np.float32), (len(levels), 1))
        lut[shown] = np.asarray([palette(i) for i in range(len(shown))], dtype=np.float32)
        rgba[codes >= 0] = lut[codes[codes >= 0]]
        legend = [(f"{_level_label(levels[i])} ({counts[i]:,})", tuple(float(v) for v in lut[i]), int(counts[i]))
                  for i in shown]
        rest = int(counts.sum() - counts[shown].sum())
        if rest:
            legend.append((f"{len(levels) - len(shown)} others ({rest:,})", OTHER_RGBA, rest))
        missing = int((codes < 0).sum())
        if missing:
            legend.append((f"missing ({missing:,})", OTHER_RGBA, missing))
        return PointColours(rgba, f"{name} (cells)", tuple(legend))
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    known = np.isfinite(numbers)
    low, high = np.percentile(numbers[known], [1, 99]) if known.any() else (0.0, 1.0)
    if not high > low:
        high = low + 1.0
    scaled = np.clip((numbers[known] - low) / (high - low), 0.0, 1.0)
    scaled = np.round(scaled * (NUMERIC_STEPS - 1)) / (NUMERIC_STEPS - 1)
    rgba[known] = colormaps[NUMERIC_CMAP](scaled).astype(np.float32)
    return PointColours(rgba, name, value_range=(float(low), float(high)), cmap=NUMERIC_CMAP)


def colour_groups(rgba: np.ndarray) -> list[tuple[tuple[float, ...], np.ndarray]]:
    """The points of each distinct colour (colour, point indices), the largest group first: a plot draws one
    artist per colour, and small groups drawn last stay visible. Colours are told apart at 8 bits a channel
    (one sort of 32-bit codes: fast for 100k points)."""
    rgba = np.asarray(rgba, dtype=np.float64)
    if len(rgba) == 0:
        return []
    codes = np.ascontiguousarray(np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8)).view(np.uint32).reshape(-1)
    order = np.argsort(codes, kind="stable")
    _, starts, counts = np.unique(codes[order], return_index=True, return_counts=True)
    members = np.split(order, starts[1:])
    ranked = np.argsort(-counts, kind="stable")
    return [(tuple(float(v) for v in rgba[members[g][0]]), members[g]) for g in ranked]


def describe_cell(info: Mapping[str, Any], cell: int, cluster: int | None = None) -> str:
    """A cell in words for a tooltip, from its row of the cell table (``info``: column -> value): its id and
    cluster, where it is (field, plate, well, site) and its treatment and other columns (not the tile store's
    bookkeeping nor file names)."""
    head = f"cell {int(cell)}" + ("" if cluster is None else f", cluster {int(cluster)}")
    where = ", ".join(f"{c} {info[c]}" for c in LOCATION_COLUMNS if c in info and pd.notna(info[c]))
    other = [c for c in info if c not in LOCATION_COLUMNS and c not in NOT_DESCRIBED
             and not str(c).startswith(("file", "source"))]
    what = ", ".join(f"{c} {_level_label(info[c])}" for c in other if pd.notna(info[c]))
    return "\n".join(part for part in (head, where, what) if part)
