"""Step 4: clusters of the shown run: the algorithm (K-Means, Gaussian mixture, HDBSCAN), k and Recluster (instant,
cached embeddings), Suggest k (the silhouette, and AMI with a chosen column, for k = 2..15, in a worker), how well
the clusters match the treatments, a legend of the clusters, a gallery of each cluster's most typical cells (the
crop the model embedded, nucleus outlined, at a size the user picks), and the CSV export. HDBSCAN's noise cells
(cluster -1) are grey, counted in the legend as "noise", and have no gallery row: they have no centroid."""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QIcon
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from phenossl.cluster.algorithms import ALGORITHMS, NOISE
from phenossl.config import ClusterConfig, HdbscanConfig
from phenossl.napari.config_form import ConfigForm, Row
from phenossl.napari.qt_helpers import (
    ask_yes_no,
    button,
    color_swatch,
    note_label,
    reports_errors,
    rgb_pixmap,
    row,
    show_busy,
)
from phenossl.napari.session import choice_words, config_choice_words
from phenossl.napari.tasks import FilesExist
from phenossl.napari.thumbnails import embedded_view, gallery_thumbnails
from phenossl.napari.widgets.plots import describe_cell, theme_colors, themed_canvas
from phenossl.napari.widgets.step import StepWidget

logger = logging.getLogger(__name__)

THUMB_PX = 112  # default thumbnail side: large enough to judge a cell's shape
THUMB_RANGE = (64, 192)
LEGEND_ENTRY_PX = 84  # a legend entry's width (swatch and "12 · 1,234")
NOISE_RGBA = (0.5, 0.5, 0.5, 1.0)  # HDBSCAN's noise: the grey of cells without a cluster on the plate
CURVE_PX = 150  # the k curve's height


def draw_k_curve(axes, curve, colors) -> None:
    """The silhouette (and AMI) of every k tried, the chosen k marked: on ``axes``, in the theme's colours."""
    from phenossl.napari.widgets.plots import style_axes

    axes.clear()
    style_axes(axes, colors)
    axes.plot(curve.ks, curve.silhouette, "o-", color="#4fc3f7", markersize=3, linewidth=1.2, label="silhouette")
    if curve.ami is not None:
        axes.plot(curve.ks, curve.ami, "s--", color="#ffb74d", markersize=3, linewidth=1.0,
                  label=f"AMI with {curve.label_column}")
    axes.axvline(curve.best_k, color=colors.foreground, linewidth=0.8, linestyle=":")
    axes.set_xticks(list(curve.ks))
    axes.set_xlabel(f"k (chosen: {curve.best_k}, the best silhouette)", fontsize=8)
    legend = axes.legend(fontsize=7, loc="upper right", frameon=False)
    for text in legend.get_texts():
        text.set_color(colors.foreground)


def label_column_choices(record) -> list[str]:
    """Columns of the shown run's cell table that the k curve's AMI can be scored against: the run's label
    columns, else the known treatment columns present."""
    from phenossl.cluster.metrics import label_columns_to_score

    if record is None:
        return []
    try:
        return label_columns_to_score(record.tile_store().cells, record.config.cluster.label_columns)
    except Exception:  # noqa: BLE001 -- a label column the table lacks: offer none rather than fail the step
        return []


def metrics_text(metrics: dict[str, float]) -> str:
    """Silhouette and AMI with each treatment column, in words a biologist can read."""
    parts = []
    silhouette = metrics.get("silhouette")
    if silhouette is not None and np.isfinite(silhouette):
        parts.append(f"silhouette {silhouette:.2f}")
    for name, value in metrics.items():
        if name.startswith("ami_") and np.isfinite(value):
            parts.append(f"AMI with {name[4:]} {value:.2f}")
    if not parts:
        return ""
    return "Cluster quality: " + ", ".join(parts) + ". (AMI: 1 = clusters match that column, 0 = unrelated.)"


def grid_columns(width: int, item_px: int) -> int:
    """How many items of ``item_px`` fit side by side in ``width`` px (at least one)."""
    return max(1, int(width) // max(1, int(item_px)))


def place_in_grid(grid: QGridLayout, widgets: list[QWidget], columns: int) -> None:
    """Lay ``widgets`` out row by row, ``columns`` to a row, left-aligned (the stretch takes the rest)."""
    for widget in widgets:
        grid.removeWidget(widget)
    for column in range(grid.columnCount()):
        grid.setColumnStretch(column, 0)
    for i, widget in enumerate(widgets):
        grid.addWidget(widget, i // columns, i % columns)
    grid.setColumnStretch(columns, 1)


class ClusterLegend(QWidget):
    """Every cluster's colour and size in a few compact rows, above the gallery (so it needs no scrolling);
    click one to select its cells."""

    def __init__(self, controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(2)
        self._grid.setVerticalSpacing(0)
        self.entries: list[QToolButton] = []
        self._columns = 5

    def rebuild(self) -> None:
        for entry in self.entries:
            self._grid.removeWidget(entry)
            entry.deleteLater()
        self.entries = []
        record = self.controller.active
        if record is None or record.clustering is None:
            self.setVisible(False)
            return
        colors = self.controller.cluster_colors()
        sizes = np.asarray(record.clustering.sizes)
        for cluster in range(record.clustering.k):
            entry = QToolButton()
            entry.setIcon(QIcon(color_swatch(colors[cluster], 12)))
            entry.setText(f"{cluster} · {int(sizes[cluster]):,}")
            entry.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            entry.setAutoRaise(True)
            entry.setToolTip(f"Cluster {cluster}: {int(sizes[cluster]):,} cells. Click: select them.")
            entry.clicked.connect(lambda _=False, c=cluster: self._select(c))
            self.entries.append(entry)
        if record.clustering.n_noise:
            entry = QToolButton()
            entry.setIcon(QIcon(color_swatch(NOISE_RGBA, 12)))
            entry.setText(f"noise · {record.clustering.n_noise:,}")
            entry.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            entry.setAutoRaise(True)
            entry.setToolTip(f"Noise: {record.clustering.n_noise:,} cells HDBSCAN put in no cluster (cluster -1). "
                             "Click: select them.")
            entry.clicked.connect(lambda _=False: self._select(NOISE))
            self.entries.append(entry)
        place_in_grid(self._grid, self.entries, self._columns)
        self.setVisible(True)

    def set_width(self, width: int) -> None:
        columns = grid_columns(width, LEGEND_ENTRY_PX)
        if columns != self._columns:
            self._columns = columns
            place_in_grid(self._grid, self.entries, columns)

    @reports_errors("Selecting the cluster")
    def _select(self, cluster: int) -> None:
        self.controller.select_cluster(cluster)


class ClusterGallery(QWidget):
    """Per cluster: a header (colour, size; click to select the cluster) and its most typical cells
    (nearest the centroid; click one to go to it on the plate). Each thumbnail is the crop the run's model
    embedded, with the central nucleus outlined, ``thumb_px`` px wide."""

    def __init__(self, controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(2, 2, 2, 2)
        self._layout.setSpacing(6)
        self.buttons: dict[int, list[QToolButton]] = {}
        self.headers: dict[int, QPushButton] = {}
        self.images: dict[int, list[np.ndarray]] = {}  # the thumbnails shown, (px, px, 3) uint8
        self.view = None  # thumbnails.ThumbnailView of the shown run
        self.thumb_px = THUMB_PX
        self.build_ms = 0.0  # the last rebuild's time (it runs on the UI thread)
        self._grids: dict[int, QGridLayout] = {}
        self._width = 4 * (THUMB_PX + 8)
        self._columns = 4

    def set_thumbnail_size(self, px: int) -> None:
        """The size of the next rebuild's thumbnails (and so how many fit in a row)."""
        self.thumb_px = int(px)
        self._columns = grid_columns(self._width, self._cell_px())

    def set_width(self, width: int) -> None:
        """Reflow the thumbnails to the width there is (no sideways scrolling)."""
        self._width = int(width)
        columns = grid_columns(width, self._cell_px())
        if columns != self._columns:
            self._columns = columns
            for cluster, grid in self._grids.items():
                place_in_grid(grid, self.buttons[cluster], columns)

    def _cell_px(self) -> int:
        return self.thumb_px + 8  # the button's frame and the grid's spacing

    def rebuild(self) -> None:
        started = time.perf_counter()
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.buttons, self.headers, self.images, self._grids = {}, {}, {}, {}
        record = self.controller.active
        if record is None or record.clustering is None:
            self.view = None
            return
        clustering = record.clustering
        store = record.tile_store()
        colors = self.controller.cluster_colors()
        self.view = embedded_view(record.config, store.nucleus_diameter, store.tile_size)
        members = {cluster: clustering.nearest[cluster].tolist() for cluster in range(clustering.k)}
        self.images = gallery_thumbnails(store.tiles, store.masks, members, self.view, self.thumb_px)
        shown = sorted({cell for cells in members.values() for cell in cells})
        info = dict(zip(shown, store.cells.iloc[shown].to_dict("records"), strict=True))  # one table read
        for cluster in range(clustering.k):
            header = QPushButton(f"  Cluster {cluster}: {int(clustering.sizes[cluster]):,} cells")
            header.setIcon(QIcon(color_swatch(colors[cluster], 14)))
            header.setFlat(True)
            header.setStyleSheet("text-align: left; font-weight: bold;")
            header.setToolTip("Select every cell of this cluster (in the UMAP and on the plate)")
            header.clicked.connect(lambda _=False, c=cluster: self._select_cluster(c))
            self._layout.addWidget(header)
            self.headers[cluster] = header
            grid_holder = QWidget()
            grid = QGridLayout(grid_holder)
            grid.setContentsMargins(0, 0, 0, 0)
            grid.setSpacing(3)
            self.buttons[cluster] = []
            for i, (cell, image) in enumerate(zip(members[cluster], self.images[cluster], strict=True)):
                button = QToolButton()
                button.setIcon(QIcon(rgb_pixmap(image)))
                button.setIconSize(QSize(self.thumb_px, self.thumb_px))
                button.setAutoRaise(True)
                button.setToolTip(
                    f"{describe_cell(info[cell], cell, cluster)}\n"
                    f"{i + 1}. nearest the centroid. Click: go to this cell."
                )
                button.clicked.connect(lambda _=False, c=cell: self._go_to_cell(c))
                self.buttons[cluster].append(button)
            place_in_grid(grid, self.buttons[cluster], self._columns)
            self._layout.addWidget(grid_holder)
            self._grids[cluster] = grid
        if clustering.n_noise:
            header = QPushButton(f"  Noise: {clustering.n_noise:,} cells in no cluster (no centroid: no typical "
                                 "cells to show)")
            header.setIcon(QIcon(color_swatch(NOISE_RGBA, 14)))
            header.setFlat(True)
            header.setStyleSheet("text-align: left;")
            header.setToolTip("HDBSCAN's noise (cluster -1): select these cells (in the UMAP and on the plate)")
            header.clicked.connect(lambda _=False: self._select_cluster(NOISE))
            self._layout.addWidget(header)
            self.headers[NOISE] = header
        self._layout.addStretch(1)
        self.build_ms = (time.perf_counter() - started) * 1000
        logger.debug("gallery of %d cells built in %.0f ms", sum(map(len, members.values())), self.build_ms)

    @reports_errors("Going to the cell")
    def _go_to_cell(self, cell: int) -> None:
        self.controller.go_to_cell(cell)

    @reports_errors("Selecting the cluster")
    def _select_cluster(self, cluster: int) -> None:
        self.controller.select_cluster(cluster)


def cluster_rows(k: int, n_nearest: int, algorithm: str = "kmeans") -> list[Row]:
    """The algorithm, k and the typical cells per cluster, starting at the controller's values."""
    return [
        Row("algorithm", "", value=algorithm, choices=tuple((spec.label, name) for name, spec in ALGORITHMS.items()),
            tooltip="K-Means: k round clusters, every cell in one. Gaussian mixture: k clusters of different "
            "spreads. HDBSCAN: finds the number of clusters itself; cells in no dense region are noise (grey)"),
        Row("k", "k", value=k, high=100,
            tooltip="Number of clusters (K-Means on the run's saved embeddings: no retraining)"),
        Row("n_nearest", "typical cells", value=n_nearest, high=32,
            tooltip="Typical cells shown per cluster: those nearest its centre"),
    ]


class ClusterWidget(StepWidget):
    """k, Recluster, cluster quality, the cluster legend, the gallery of typical cells, export."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        layout = self.layout()

        self.run_label = note_label("No run yet: train one (step 3), or reopen a session in Runs.")
        layout.addWidget(self.run_label)
        controls = QGroupBox("Clusters")
        controls_layout = QVBoxLayout(controls)
        state = self.controller.state
        rows = cluster_rows(self.controller.k, self.controller.n_nearest, state.algorithm)
        self.cluster_form = ConfigForm(ClusterConfig, rows)
        self.k, self.n_nearest = self.cluster_form.native("k"), self.cluster_form.native("n_nearest")
        self.algorithm = self.cluster_form.native("algorithm")
        self.hdbscan_form = ConfigForm(HdbscanConfig, [
            Row("min_cluster_size", "min size", value=state.min_cluster_size, high=100_000,
                tooltip="HDBSCAN: the smallest group of cells called a cluster (larger: fewer, bigger clusters "
                "and more noise)")])
        self.min_cluster_size = self.hdbscan_form.native("min_cluster_size")
        self.recluster_button = button(
            "Recluster",
            "Cluster the shown run again with this algorithm and k (instant: embeddings are cached)",
            self._recluster,
        )
        # label, widget, ... (the algorithm's label is empty): algorithm, k (or min size), Recluster in one row;
        # the typical cells beside the thumbnail size, below (one row of all would not fit the dock)
        form_parts = self.cluster_form.inline()
        controls_layout.addWidget(row(form_parts[1], *form_parts[2:4], *self.hdbscan_form.inline(),
                                      self.recluster_button))
        self.suggest_button = button(
            "Suggest k",
            "Cluster a seeded sample of the cached embeddings with k = 2..15 and score each: the silhouette (how "
            "compact and separate the clusters are) and, with a column chosen, the AMI with it. Sets k to the best "
            "silhouette; nothing is reclustered or saved until you press Recluster.",
            self._suggest_k,
        )
        self.ami_column = QComboBox()
        self.ami_column.setToolTip("Also score each k's clusters against this column of the cell table (AMI: 1 = the "
                                   "clusters are that column's groups). It is shown, never used to choose k.")
        controls_layout.addWidget(row(self.suggest_button, QLabel("AMI with"), self.ami_column, stretch_last=True))
        self.curve_figure, self.curve_axes, self.curve_canvas = themed_canvas(
            theme_colors(napari_viewer), height=CURVE_PX, margins=(0.12, 0.97, 0.27, 0.95))
        self.curve_colors = theme_colors(napari_viewer)
        self.curve_canvas.setVisible(False)
        self.curve_canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.curve_canvas.setFixedHeight(CURVE_PX)
        controls_layout.addWidget(self.curve_canvas)
        self.curve_note = note_label()
        self.curve_note.setVisible(False)  # until a curve is shown: an empty label still takes a line
        controls_layout.addWidget(self.curve_note)
        self.curve = None  # the last KCurve shown
        self._show_algorithm_fields()
        self.thumb_size = QSpinBox()
        self.thumb_size.setRange(*THUMB_RANGE)
        self.thumb_size.setSingleStep(16)
        self.thumb_size.setSuffix(" px")
        self.thumb_size.setValue(THUMB_PX)
        self.thumb_size.setToolTip("Size of the gallery's thumbnails (redrawn at once; nothing is reclustered)")
        controls_layout.addWidget(row(*form_parts[4:6], QLabel("thumbnail size"), self.thumb_size))
        self.metrics_label = note_label()
        controls_layout.addWidget(self.metrics_label)
        layout.addWidget(controls)
        self.legend = ClusterLegend(self.controller)
        self.legend.setVisible(False)
        layout.addWidget(self.legend)

        gallery_box = QGroupBox("Typical cells of each cluster (click one to go to it)")
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(2, 2, 2, 2)
        self.view_note = note_label()
        gallery_layout.addWidget(self.view_note)
        self.gallery = ClusterGallery(self.controller)
        scroll = QScrollArea()
        scroll.setWidget(self.gallery)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the thumbnails reflow
        scroll.setMinimumHeight(THUMB_PX + 60)
        scroll.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        scroll.viewport().installEventFilter(self)
        self.gallery_scroll = scroll
        gallery_layout.addWidget(scroll)
        layout.addWidget(gallery_box, stretch=1)

        self.export_button = button(
            "Export…",
            "Every cell with its cluster: a CSV (the embeddings and the run's configuration in files beside it), "
            "an AnnData file for scanpy (.h5ad), or per-cell and per-well profiles for pycytominer",
            self._choose_export,
        )
        self.save_button = button(
            "Keep as the run's clustering",
            "Reclustering only explores. This makes the shown clusters the run's result: its clusters.csv, "
            "metrics and saved k (what a reopened session and `phenossl export` show)",
            self._save_clustering,
        )
        layout.addWidget(row(self.save_button, self.export_button))
        self.status = note_label()
        layout.addWidget(self.status)

        self.thumb_size.valueChanged.connect(self._thumb_size_changed)
        self.cluster_form["algorithm"].changed.connect(self._algorithm_changed)
        self.follow(
            saved_clustering_changed=self._run_changed, active_run_changed=self._run_changed,
            clustering_changed=self._clustering_changed, task_state=self._task_state,
            status=self.status.setText,
        )
        self._run_changed()
        self._clustering_changed()

    @reports_errors("Clustering")
    def _recluster(self, *_):
        return self.controller.recluster(**self.cluster_form.values(), **self.hdbscan_form.values())

    def _algorithm_changed(self, *_) -> None:
        self._show_algorithm_fields()
        self._run_changed()

    def _show_algorithm_fields(self) -> None:
        """HDBSCAN takes a minimum cluster size instead of k, and has no k to suggest."""
        hdbscan = self.cluster_form["algorithm"].value == "hdbscan"
        self.cluster_form.set_visible("k", not hdbscan)
        self.hdbscan_form.set_visible("min_cluster_size", hdbscan)

    @reports_errors("Suggesting k")
    def _suggest_k(self, *_):
        column = self.ami_column.currentData()
        suggested = weakref.WeakMethod(self._k_suggested)  # dropped if the widget is closed meanwhile

        def returned(curve) -> None:
            method = suggested()
            if method is not None:
                method(curve)

        return self.controller.suggest_k(column or None, self.cluster_form["algorithm"].value, on_returned=returned)

    def _k_suggested(self, curve) -> None:
        """Show the k curve and set k to its choice (the user reclusters when they agree)."""
        self.curve = curve
        draw_k_curve(self.curve_axes, curve, self.curve_colors)
        self.curve_canvas.setVisible(True)
        self.curve_canvas.draw_idle()
        self.k.setValue(curve.best_k)
        self.curve_note.setText(f"Suggested {curve.describe()}. Press Recluster to use it.")
        self.curve_note.setVisible(True)

    def _fill_ami_columns(self) -> None:
        record = self.controller.active
        current = self.ami_column.currentData()
        self.ami_column.blockSignals(True)
        self.ami_column.clear()
        self.ami_column.addItem("(none)", None)
        for column in label_column_choices(record):
            self.ami_column.addItem(column, column)
        index = self.ami_column.findData(current) if current else (1 if self.ami_column.count() > 1 else 0)
        self.ami_column.setCurrentIndex(max(index, 0))
        self.ami_column.blockSignals(False)

    def _run_changed(self) -> None:
        record = self.controller.active
        if record is None:
            self.run_label.setText("No run yet: train one (step 3), or reopen a session in Runs.")
        else:
            self.run_label.setText(f"<b>{record.name}</b>: {record.describe()}")
        has_clusters = record is not None and record.clustering is not None
        self.export_button.setEnabled(has_clusters)
        self.recluster_button.setEnabled(record is not None and record.has_embeddings)
        self.suggest_button.setEnabled(record is not None and record.has_embeddings
                                       and self.cluster_form["algorithm"].value != "hdbscan"
                                       and not self.controller.running("suggest-k"))
        if record is not getattr(self, "_ami_record", None):
            self._ami_record = record
            self._fill_ami_columns()
        unsaved = has_clusters and not self.controller.clustering_is_saved(record)
        self.save_button.setEnabled(unsaved and not self.controller.running("save-clustering"))
        if unsaved:
            self.save_button.setText(f"Keep {choice_words(record.clustering)} as the run's clustering")
        else:
            self.save_button.setText("Kept as the run's clustering" if has_clusters else "Keep as the run's clustering")

    @reports_errors("Saving the clustering")
    def _save_clustering(self, *_):
        """Replace the run's saved clustering with the shown one, after asking (it cannot be undone)."""
        record = self.controller.active
        if record is None or record.clustering is None:
            return None
        saved = config_choice_words(record.config)
        question = (
            f"Run {record.name}'s saved clustering is {saved}. Replace it (its "
            f"clusters.csv and metrics) with the shown one, {choice_words(record.clustering)}?"
        )
        if record.paths.clusters.is_file() and not ask_yes_no(self, "Replace the saved clustering?", question):
            self.status.setText(f"Nothing was saved: {record.name} keeps {saved}.")
            return None
        return self.controller.save_clustering()

    def _clustering_changed(self) -> None:
        record = self.controller.active
        self._run_changed()
        if record is not None and record.clustering is not None:
            clustering = record.clustering
            self.cluster_form["algorithm"].value = clustering.algorithm
            if clustering.algorithm == "hdbscan":
                self.min_cluster_size.setValue(clustering.params.get("min_cluster_size", 25))
            else:
                self.k.setValue(clustering.k)
            noise = (f" HDBSCAN found {clustering.k} clusters; {clustering.n_noise:,} cells are noise (in none)."
                     if clustering.algorithm == "hdbscan" else "")
            self.metrics_label.setText(metrics_text(record.metrics) + noise)
        else:
            self.metrics_label.setText("")
        self.legend.rebuild()
        self._rebuild_gallery()

    @reports_errors("Showing the typical cells")
    def _rebuild_gallery(self) -> None:
        self.gallery.rebuild()
        view = self.gallery.view
        if view is None:
            self.view_note.setText("")
            return
        self.view_note.setText(
            f"Each picture is {view.describe()}; the white line is the cell's nucleus."
            if self.controller.active.tile_store().masks is not None
            else f"Each picture is {view.describe()}. This tile store keeps no nucleus masks to outline: "
            "make its tiles again to get them."
        )

    def _thumb_size_changed(self, px: int) -> None:
        self.gallery_scroll.setMinimumHeight(px + 60)
        self.gallery.set_thumbnail_size(px)
        self._rebuild_gallery()

    def eventFilter(self, watched, event) -> bool:
        """The gallery's viewport was resized: reflow its thumbnails to the new width."""
        if event.type() == QEvent.Type.Resize and watched is self.gallery_scroll.viewport():
            self.gallery.set_width(watched.width())
        return super().eventFilter(watched, event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.legend.set_width(self.width() - 20)

    def _task_state(self, task: str, running: bool) -> None:
        if task == "cluster":
            show_busy(self.recluster_button, running, "Recluster", "Clustering…")
            self.recluster_button.setEnabled(not running and self.controller.active is not None)
        elif task == "suggest-k":
            show_busy(self.suggest_button, running, "Suggest k", "Scoring k = 2..15…")
            if not running:
                self._run_changed()
        elif task == "export":
            self.export_button.setEnabled(not running)
        if task == "save-clustering":
            self._run_changed()

    # ------------------------------------------------------------------------------------------
    # export: file dialog, then ask before replacing anything (export_clusters checks every file)

    def _choose_export(self, *_):
        from phenossl.export_formats import DIALOG_FILTERS, dialog_choice

        record = self.controller.active
        folder = Path(self.controller.session.folder)  # beside the session's tiles and runs
        start = str(folder / f"{record.name}_clusters.csv") if record is not None else str(folder)
        path, name_filter = QFileDialog.getSaveFileName(
            self,
            "Export clusters",
            start,
            ";;".join(DIALOG_FILTERS.values()),
            # we ask ourselves, for the CSV and for the files beside it
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            target, fmt = dialog_choice(path, name_filter)
            self.export_to(target, fmt=fmt)

    @reports_errors("Export")
    def export_to(self, path: str | Path, *, overwrite: bool = False, fmt: str = "csv"):
        """Export the shown run to ``path`` in format ``fmt`` (csv, h5ad, profiles: a folder); asks before
        replacing existing files."""
        self._export_path, self._export_format = Path(path), fmt
        exported = weakref.WeakMethod(self._exported)  # dropped if the widget is closed meanwhile

        def returned(result) -> None:
            method = exported()
            if method is not None:
                method(result)

        # connected before the worker starts: the replace question's check can return before a later connect
        return self.controller.start_export(path, overwrite=overwrite, fmt=fmt, on_returned=returned)

    @reports_errors("Export")
    def _exported(self, result) -> None:
        from napari.utils.notifications import show_info

        path = self._export_path

        if isinstance(result, FilesExist):
            if ask_yes_no(self, "Replace files?", f"{result.message}\n\nReplace them?"):
                self.export_to(path, overwrite=True, fmt=self._export_format)
            else:
                self.status.setText("Export cancelled: nothing was written.")
            return
        first, *rest = result.written()
        extras = [p.name for p in rest]
        message = f"Exported {first.name} to {first.parent}"
        self.status.setText(message + (f" (beside it: {', '.join(extras)})" if extras else ""))
        show_info(message)
