"""Matplotlib canvases in the napari theme's colours, for the loss curve and the UMAP."""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtWidgets import QSizePolicy


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
    margins: tuple[float, float, float, float] = (0.14, 0.97, 0.2, 0.88),
):
    """A (figure, axes, canvas) triple; the canvas is a QWidget that grows with the dock.

    ``margins`` are the axes' (left, right, bottom, top) in figure fractions: fixed, because a layout
    engine would cost every redraw."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, height / 100), dpi=100, facecolor=colors.background)
    left, right, bottom, top = margins
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    axes = figure.add_subplot(1, 1, 1)
    style_axes(axes, colors)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumSize(min_width, height)
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
