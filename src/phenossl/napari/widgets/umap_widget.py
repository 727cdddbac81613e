"""The shown run's cells in 2-D (UMAP), coloured by cluster, linked both ways with the plate: a lasso
selects cells in the layers; cells selected elsewhere (a cluster, points in the viewer) light up here."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from phenossl.napari.cells import cell_count
from phenossl.napari.controller import UMAP_FIRST_NOTE, controller_for
from phenossl.napari.qt_helpers import note_label, reports_errors, row
from phenossl.napari.widgets.plots import style_axes, theme_colors, themed_canvas


def points_in_lasso(xy: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Indices of the 2-D points inside a lasso polygon."""
    from matplotlib.path import Path as PolygonPath

    if len(vertices) < 3 or len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(PolygonPath(vertices).contains_points(xy)).astype(np.int64)


class UmapWidget(QWidget):
    """Scatter of the UMAP layout; draw around cells (lasso) to select them."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.widgets import LassoSelector

        self.viewer = napari_viewer
        self.controller = controller_for(napari_viewer)
        self.colors = theme_colors(napari_viewer)
        self.figure, self.axes, self.canvas = themed_canvas(
            self.colors, height=170, margins=(0.02, 0.98, 0.03, 0.9)
        )
        layout = QVBoxLayout(self)
        self.info = note_label("The UMAP layout appears once a run is clustered. " + UMAP_FIRST_NOTE + ".")
        layout.addWidget(self.info)
        layout.addWidget(self.canvas, stretch=1)
        self.clear_button = QPushButton("Clear selection")
        self.count_label = QLabel("")
        layout.addWidget(row(self.clear_button, self.count_label))
        self._scatter = None
        self._highlight = None
        self._xy = np.zeros((0, 2))
        self.lasso = LassoSelector(self.axes, self._lasso_done, props={"color": self.colors.foreground})
        self.clear_button.clicked.connect(self._clear_selection)
        self.controller.umap_changed.connect(self.redraw)
        self.controller.clustering_changed.connect(self.redraw)
        self.controller.active_run_changed.connect(self.redraw)
        self.controller.selection_changed.connect(self._show_selection)
        self.controller.task_state.connect(self._task_state)
        self.redraw()

    def redraw(self) -> None:
        record = self.controller.active
        axes = self.axes
        axes.clear()
        style_axes(axes, self.colors)
        axes.set_xticks([])
        axes.set_yticks([])
        self._highlight = None
        if record is None or record.umap is None or record.clustering is None:
            self._xy = np.zeros((0, 2))
            axes.set_title("UMAP (not computed yet)", fontsize=9)
            self.canvas.draw_idle()
            return
        self._xy = np.asarray(record.umap)
        colors = self.controller.cluster_colors()[record.clustering.labels]
        size = float(np.clip(3000 / max(1, len(self._xy)), 2, 20))
        self._scatter = axes.scatter(self._xy[:, 0], self._xy[:, 1], c=colors, s=size, linewidths=0)
        axes.set_title(f"{record.name}: UMAP of {len(self._xy)} cells, coloured by cluster", fontsize=9)
        self.info.setText(
            "Draw around cells to select them (lasso); click a cluster in the gallery to "
            "select all of its cells."
        )
        self._show_selection()

    def _show_selection(self) -> None:
        if self._highlight is not None:
            self._highlight.remove()
            self._highlight = None
        selected = self.controller.selected
        selected = selected[selected < len(self._xy)]
        if selected.size:
            xy = self._xy[selected]
            self._highlight = self.axes.scatter(
                xy[:, 0], xy[:, 1], s=40, facecolors="none", edgecolors=self.colors.foreground, linewidths=1.0
            )
        self.count_label.setText(cell_count(self.controller.selected.size, "selected") if selected.size else "")
        self.canvas.draw_idle()

    @reports_errors("Selecting cells in the UMAP")
    def _lasso_done(self, vertices) -> None:
        self.controller.select_cells(points_in_lasso(self._xy, np.asarray(vertices)))

    @reports_errors("Clearing the selection")
    def _clear_selection(self, *_) -> None:
        self.controller.select_cells(np.zeros(0, dtype=np.int64))

    def _task_state(self, task: str, running: bool) -> None:
        if task == "umap" and running:
            self.axes.set_title("computing the UMAP layout (the first one compiles: 10-30 s)…", fontsize=9)
            self.canvas.draw_idle()
