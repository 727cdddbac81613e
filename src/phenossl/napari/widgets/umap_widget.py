"""The shown run's cells in 2-D (UMAP), coloured by cluster or by any column of the cell table, linked both ways
with the plate: a lasso selects cells in the layers; cells selected elsewhere (a cluster, points in the viewer)
light up here. Hovering names the cell under the mouse; the wheel zooms, Pan drags, Reset view goes back."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QCursor
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QLabel,
    QRadioButton,
    QSizePolicy,
    QToolTip,
    QWidget,
)

from phenossl.napari.cells import cell_count
from phenossl.napari.controller import UMAP_FIRST_NOTE
from phenossl.napari.qt_helpers import button, note_label, reports_errors, row
from phenossl.napari.widgets.plots import (
    PointColours,
    cluster_point_colours,
    colour_by_choices,
    colour_groups,
    column_point_colours,
    describe_cell,
    style_axes,
    theme_colors,
    themed_canvas,
)
from phenossl.napari.widgets.step import StepWidget

CLUSTER = "cluster"
HOVER_PX = 6  # the mouse names a cell this close to it (screen px)
ZOOM_STEP = 1.25  # per wheel notch
MARGINS = (0.02, 0.98, 0.03, 0.915)  # left, right, bottom, top; right moves in for a legend or colour bar
HOVER_HINT = "Point at a cell to see which it is."


def padded_range(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """An axis range around ``values`` with ``pad`` of their span either side (1 either side when flat)."""
    low, high = float(np.min(values)), float(np.max(values))
    margin = (high - low) * pad if high > low else 1.0
    return low - margin, high + margin


def points_in_lasso(xy: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Indices of the 2-D points inside a lasso polygon."""
    from matplotlib.path import Path as PolygonPath

    if len(vertices) < 3 or len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(PolygonPath(vertices).contains_points(xy)).astype(np.int64)


def nearest_point(tree, xy: np.ndarray, at: tuple[float, float], px_per_unit: tuple[float, float],
                  radius_px: float) -> int | None:
    """The point of ``xy`` nearest ``at`` on screen (axes may scale x and y differently), if within
    ``radius_px``; ``tree`` is a scipy cKDTree of ``xy`` (one search of a small ball, no loop over points)."""
    if len(xy) == 0:
        return None
    scale = np.asarray(px_per_unit, dtype=float)
    candidates = np.asarray(tree.query_ball_point(at, r=radius_px / scale.min()), dtype=np.int64)
    if candidates.size == 0:
        return None
    distances = (((xy[candidates] - np.asarray(at)) * scale) ** 2).sum(axis=1)
    best = int(np.argmin(distances))
    return int(candidates[best]) if distances[best] <= radius_px**2 else None


def zoomed_limits(limits: tuple[float, float], at: float, factor: float) -> tuple[float, float]:
    """An axis range scaled by ``factor`` (< 1 zooms in) about ``at``, which stays where it is on screen."""
    low, high = limits
    return at - (at - low) * factor, at + (high - at) * factor


class UmapWidget(StepWidget):
    """Scatter of the UMAP layout, coloured by cluster or a column, with its legend or colour bar; draw around
    cells (Lasso) to select them, point at one to name it, zoom with the wheel, drag the view in Pan mode."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        from matplotlib.widgets import LassoSelector

        self.colors = theme_colors(napari_viewer)
        self.figure, self.axes, self.canvas = themed_canvas(
            self.colors, height=360, min_height=240, margins=MARGINS
        )
        layout = self.layout()
        self.info = note_label("The UMAP layout appears once a run is clustered. " + UMAP_FIRST_NOTE + ".")
        layout.addWidget(self.info)

        self.colour_by = QComboBox()
        self.colour_by.setToolTip("Colour the cells by cluster, or by a treatment or other column of the cell table")
        self.colour_by.addItem(CLUSTER)
        self.lasso_button = QRadioButton("Lasso")
        self.lasso_button.setToolTip("Drag around cells to select them (in the layers too)")
        self.pan_button = QRadioButton("Pan")
        self.pan_button.setToolTip("Drag to move the view (the mouse wheel zooms in either mode)")
        self.modes = QButtonGroup(self)
        for mode in (self.lasso_button, self.pan_button):
            self.modes.addButton(mode)
        self.modes.setExclusive(True)
        self.lasso_button.setChecked(True)
        self.reset_button = button(
            "Reset view", "Show every cell again (after zooming or panning)", self.reset_view
        )
        layout.addWidget(row(QLabel("Colour by"), self.colour_by, self.lasso_button, self.pan_button,
                             self.reset_button))
        layout.addWidget(self.canvas, stretch=1)
        self.hover_label = note_label()
        self.hover_label.setToolTip("The cell under the mouse")
        # always three lines (see _set_hover_text), cut at the dock's edge (the tooltip has it all): a hover must
        # not resize the plot, which would redraw every point
        self.hover_label.setWordWrap(False)
        self.hover_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.hover_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.hover_label)
        self.clear_button = button("Clear selection", on_click=self._clear_selection)
        self.count_label = QLabel("")
        layout.addWidget(row(self.clear_button, self.count_label))

        self._groups: list[tuple[object, np.ndarray]] = []  # (Line2D, the cells it draws)
        self._highlight = None
        self._legend = None
        self._legend_entries: PointColours | None = None
        self._colorbar_axes = None
        self._xy = np.zeros((0, 2))
        self._tree = None
        self._cells = None  # the shown run's cell table
        self._labels = None  # its clusters
        self._home = None  # the whole layout's limits
        self._run_name = ""
        self._pan_start = None
        self.point_colours: PointColours | None = None
        self.hovered: int | None = None
        self.lasso = LassoSelector(self.axes, self._lasso_done, props={"color": self.colors.foreground})

        self.colour_by.currentTextChanged.connect(self._recolour)
        self.modes.buttonToggled.connect(self._mode_changed)
        self.canvas.mpl_connect("motion_notify_event", self._mouse_moved)
        self.canvas.mpl_connect("scroll_event", self._scrolled)
        self.canvas.mpl_connect("button_press_event", self._pressed)
        self.canvas.mpl_connect("button_release_event", self._released)
        self.canvas.mpl_connect("figure_leave_event", lambda _event: self._show_hover(None))
        self.canvas.mpl_connect("resize_event", lambda _event: self._fit_key())
        self.follow(
            umap_changed=self.redraw, clustering_changed=self.redraw, active_run_changed=self.redraw,
            selection_changed=self._show_selection, task_state=self._task_state,
        )
        self.redraw()

    # ------------------------------------------------------------------------------------------
    # drawing

    def redraw(self) -> None:
        record = self.controller.active
        axes = self.axes
        axes.clear()
        style_axes(axes, self.colors)
        axes.set_xticks([])
        axes.set_yticks([])
        self._highlight = None
        self._groups = []
        self._tree = None
        self._show_hover(None)
        if record is None or record.umap is None or record.clustering is None:
            self._xy = np.zeros((0, 2))
            self._cells = self._labels = self._home = None
            self._set_key(None)
            self._fill_colour_choices([])
            self._set_hover_text("")
            axes.set_title("UMAP (not computed yet)", fontsize=9)
            self.canvas.draw_idle()
            return
        self._xy = np.asarray(record.umap, dtype=np.float64)
        self._labels = np.asarray(record.clustering.labels)
        self._cells = record.tile_store().cells
        self._fill_colour_choices(colour_by_choices(self._cells))
        self._home = tuple(padded_range(self._xy[:, i]) for i in (0, 1))
        axes.set_xlim(self._home[0])
        axes.set_ylim(self._home[1])
        self._run_name = record.name
        self._set_hover_text(HOVER_HINT)
        self.info.setText(
            "Draw around cells to select them (Lasso); the mouse wheel zooms, Pan moves the view. Click a cluster "
            "in the gallery to select all of its cells."
        )
        self._recolour()
        self._show_selection()

    def _fill_colour_choices(self, columns: list[str]) -> None:
        """Cluster, then the cell table's columns; the current choice is kept when the new run has it."""
        current = self.colour_by.currentText()
        self.colour_by.blockSignals(True)
        self.colour_by.clear()
        self.colour_by.addItems([CLUSTER, *columns])
        self.colour_by.setCurrentIndex(max(0, self.colour_by.findText(current)))
        self.colour_by.blockSignals(False)

    @reports_errors("Colouring the UMAP")
    def _recolour(self, *_) -> None:
        """Colour the cells by the chosen column (the view stays where it is), with its legend or colour bar."""
        if self._cells is None:
            return
        choice = self.colour_by.currentText() or CLUSTER
        if choice == CLUSTER or self._cells is None or choice not in self._cells.columns:
            colours = cluster_point_colours(self._labels, self.controller.cluster_colors())
        else:
            colours = column_point_colours(self._cells[choice], choice)
        self.point_colours = colours
        self._draw_points(colours.rgba)
        what = "cluster" if choice == CLUSTER else choice
        self.axes.set_title("", fontsize=9)  # the centre title (of 'computing...'), replaced by the left one
        self.axes.set_title(f"{self._run_name}: UMAP of {len(self._xy):,} cells, coloured by {what}", fontsize=9,
                            loc="left", color=self.colors.foreground)  # centred, a legend's room would cut it
        self._set_key(colours)
        self.canvas.draw_idle()

    def _draw_points(self, rgba: np.ndarray) -> None:
        """The cells as markers, one artist per colour, largest group first (small groups stay visible): matplotlib
        stamps a marker of one line ~10x faster than it draws a scatter's points (100k cells: ~50 ms, not 500)."""
        for line, _ in self._groups:
            line.remove()
        size = float(np.sqrt(np.clip(3000 / max(1, len(self._xy)), 2, 20)))
        self._groups = []
        for colour, rows in colour_groups(rgba):
            (line,) = self.axes.plot(self._xy[rows, 0], self._xy[rows, 1], linestyle="", marker="o", markersize=size,
                                     markeredgewidth=0, color=colour, scalex=False, scaley=False)
            self._groups.append((line, rows))

    def drawn_colours(self) -> np.ndarray:
        """(N, 4): each cell's colour as drawn (read back from the plot's artists)."""
        from matplotlib.colors import to_rgba

        rgba = np.zeros((len(self._xy), 4))
        for line, rows in self._groups:
            rgba[rows] = to_rgba(line.get_color())
        return rgba

    def _set_key(self, colours: PointColours | None) -> None:
        """The legend (categories) or colour bar (numbers) right of the plot."""
        if self._colorbar_axes is not None:
            self._colorbar_axes.remove()
            self._colorbar_axes = None
        self._legend_entries = colours if colours is not None and colours.legend else None
        if colours is not None and not colours.legend and colours.value_range is not None:
            from matplotlib import colormaps
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            self._colorbar_axes = self.figure.add_axes((0.87, MARGINS[2], 0.025, MARGINS[3] - MARGINS[2]))
            bar = self.figure.colorbar(ScalarMappable(Normalize(*colours.value_range), colormaps[colours.cmap]),
                                       cax=self._colorbar_axes)
            bar.ax.tick_params(colors=self.colors.foreground, labelsize=7)
            bar.outline.set_edgecolor(self.colors.grid)
            bar.set_label(colours.title, color=self.colors.foreground, fontsize=7)
        self._fit_key()

    def _make_legend(self, columns: int) -> None:
        from matplotlib.lines import Line2D

        if self._legend is not None:
            self._legend.remove()
            self._legend = None
        colours = self._legend_entries
        if colours is None:
            return
        handles = [Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor=rgba, markeredgewidth=0)
                   for _, rgba, _ in colours.legend]
        self._legend = self.figure.legend(
            handles, [label for label, _, _ in colours.legend], title=colours.title, loc="upper right",
            bbox_to_anchor=(0.995, MARGINS[3]), ncols=columns, fontsize=8, title_fontsize=8, frameon=False,
            handletextpad=0.2, columnspacing=0.8, borderaxespad=0.0, labelcolor=self.colors.foreground,
        )
        self._legend.get_title().set_color(self.colors.foreground)

    def _fit_key(self) -> None:
        """Room right of the plot for the legend (as wide as its longest entry, in more columns when it is
        taller than the plot) or the colour bar; none without either. Again at every resize of the canvas."""
        right = MARGINS[1]
        self._make_legend(1)
        if self._legend is not None:
            renderer = self.canvas.get_renderer()
            room = self.figure.bbox.height * (MARGINS[3] - MARGINS[2])
            tall = self._legend.get_window_extent(renderer).height
            if tall > room:  # more columns, none taller than the plot
                entries = len(self._legend_entries.legend)
                per_entry = tall / (entries + 1)  # the title is about one entry tall
                self._make_legend(int(np.ceil(entries / max(1, room // per_entry - 1))))
            width = self._legend.get_window_extent(renderer).width
            right = max(0.45, 1 - (width + 12) / max(1.0, self.figure.bbox.width))
        elif self._colorbar_axes is not None:
            right = 0.84
        if abs(self.figure.subplotpars.right - right) > 1e-3:
            self.figure.subplots_adjust(right=right)

    def _show_selection(self) -> None:
        if self._highlight is not None:
            self._highlight.remove()
            self._highlight = None
        selected = self.controller.selected
        selected = selected[selected < len(self._xy)]
        if selected.size:
            xy = self._xy[selected]
            (self._highlight,) = self.axes.plot(
                xy[:, 0], xy[:, 1], linestyle="", marker="o", markersize=6.3, markerfacecolor="none",
                markeredgecolor=self.colors.foreground, markeredgewidth=1.0, scalex=False, scaley=False,
            )
        self.count_label.setText(cell_count(self.controller.selected.size, "selected") if selected.size else "")
        self.canvas.draw_idle()

    # ------------------------------------------------------------------------------------------
    # the mouse: lasso, hover, zoom and pan

    @reports_errors("Selecting cells in the UMAP")
    def _lasso_done(self, vertices) -> None:
        self.controller.select_cells(points_in_lasso(self._xy, np.asarray(vertices)))

    @reports_errors("Clearing the selection")
    def _clear_selection(self, *_) -> None:
        self.controller.select_cells(np.zeros(0, dtype=np.int64))

    def _mode_changed(self, *_) -> None:
        panning = self.pan_button.isChecked()
        self.lasso.set_active(not panning)
        self.canvas.setCursor(Qt.CursorShape.OpenHandCursor if panning else Qt.CursorShape.ArrowCursor)

    def _px_per_unit(self) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.axes.get_xlim(), self.axes.get_ylim()
        box = self.axes.bbox
        return box.width / abs(x1 - x0), box.height / abs(y1 - y0)

    def cell_at(self, x: float, y: float) -> int | None:
        """The cell drawn at data point (x, y), within HOVER_PX on screen; None if none is that close."""
        if not self._groups or len(self._xy) == 0:
            return None
        if self._tree is None:  # built at the first hover, not at every redraw
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self._xy)
        return nearest_point(self._tree, self._xy, (x, y), self._px_per_unit(), HOVER_PX)

    def _mouse_moved(self, event) -> None:
        if self._pan_start is not None:
            self._pan_to(event)
            return
        if event.inaxes is not self.axes or event.button is not None:  # outside, or drawing a lasso
            self._show_hover(None)
            return
        self._show_hover(self.cell_at(event.xdata, event.ydata))

    def _show_hover(self, cell: int | None) -> None:
        """Name the cell under the mouse below the plot and in a tooltip (no redraw of the points)."""
        if cell == self.hovered:
            return
        self.hovered = cell
        if cell is None or self._cells is None:
            self._set_hover_text(HOVER_HINT if self._groups else "")
            QToolTip.hideText()
            return
        text = describe_cell(self._cells.iloc[cell].to_dict(), cell, int(self._labels[cell]))
        choice = self.colour_by.currentText()
        if choice not in (CLUSTER, "") and choice in self._cells.columns and f"{choice} " not in text:
            text += f", {choice} {self._cells[choice].iloc[cell]}"
        self._set_hover_text(text)
        QToolTip.showText(QCursor.pos(), text, self.canvas)

    def _set_hover_text(self, text: str) -> None:
        """Exactly three lines, so the label keeps its height whatever it says."""
        lines = text.split("\n")[:3]
        self.hover_label.setText("\n".join(lines + [""] * (3 - len(lines))))

    def _scrolled(self, event) -> None:
        """The wheel zooms about the mouse (in either mode; the lasso then works in the zoomed view)."""
        if event.inaxes is not self.axes or not self._groups:
            return
        factor = ZOOM_STEP ** (-float(event.step))
        self.axes.set_xlim(zoomed_limits(self.axes.get_xlim(), event.xdata, factor))
        self.axes.set_ylim(zoomed_limits(self.axes.get_ylim(), event.ydata, factor))
        self.canvas.draw_idle()

    def _pressed(self, event) -> None:
        if self.pan_button.isChecked() and event.inaxes is self.axes and event.button == 1:
            self._pan_start = (event.x, event.y, self.axes.get_xlim(), self.axes.get_ylim())
            self.canvas.setCursor(Qt.CursorShape.ClosedHandCursor)

    def _pan_to(self, event) -> None:
        x, y, (x0, x1), (y0, y1) = self._pan_start
        px_x, px_y = self._px_per_unit()
        dx, dy = (event.x - x) / px_x, (event.y - y) / px_y
        self.axes.set_xlim(x0 - dx, x1 - dx)
        self.axes.set_ylim(y0 - dy, y1 - dy)
        self.canvas.draw_idle()

    def _released(self, event) -> None:
        if self._pan_start is not None:
            self._pan_to(event)
            self._pan_start = None
            self.canvas.setCursor(Qt.CursorShape.OpenHandCursor)

    def reset_view(self, *_) -> None:
        """Back to the whole layout."""
        if self._home is not None:
            self.axes.set_xlim(self._home[0])
            self.axes.set_ylim(self._home[1])
            self.canvas.draw_idle()

    def _task_state(self, task: str, running: bool) -> None:
        if task == "umap" and running:
            self.axes.set_title("", loc="left")
            self.axes.set_title("computing the UMAP layout (seconds; up to ~30 s for 100k cells)…", fontsize=9)
            self.canvas.draw_idle()
