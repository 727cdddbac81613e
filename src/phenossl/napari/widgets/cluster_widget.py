"""Step 4: clusters of the shown run: k and Recluster (instant, cached embeddings), how well the clusters
match the treatments, a gallery of each cluster's most typical cells, and the CSV export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QSize
from qtpy.QtGui import QIcon
from qtpy.QtWidgets import (
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

from phenossl.napari.controller import controller_for
from phenossl.napari.qt_helpers import ask_yes_no, color_swatch, note_label, reports_errors, rgb_pixmap, row
from phenossl.napari.tasks import FilesExist, to_rgb8

THUMB_PX = 64
GALLERY_COLUMNS = 4


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


class ClusterGallery(QWidget):
    """Per cluster: a header (colour, size; click to select the cluster) and its most typical cells
    (nearest the centroid; click one to go to it on the plate)."""

    def __init__(self, controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(2, 2, 2, 2)
        self._layout.setSpacing(6)
        self.buttons: dict[int, list[QToolButton]] = {}
        self.headers: dict[int, QPushButton] = {}

    def rebuild(self) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.buttons, self.headers = {}, {}
        record = self.controller.active
        if record is None or record.clustering is None:
            return
        clustering = record.clustering
        store = record.tile_store()
        colors = self.controller.cluster_colors()
        for cluster in range(clustering.k):
            header = QPushButton(f"  Cluster {cluster}: {int(clustering.sizes[cluster])} cells")
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
            for i, cell in enumerate(clustering.nearest[cluster].tolist()):
                button = QToolButton()
                button.setIcon(QIcon(rgb_pixmap(to_rgb8(store.tiles[cell]), THUMB_PX)))
                button.setIconSize(QSize(THUMB_PX, THUMB_PX))
                button.setAutoRaise(True)
                info = store.cells.iloc[cell]
                button.setToolTip(
                    f"cell {cell}, field {info.get('field', '?')}, label {info.get('label', '?')}; "
                    f"{i + 1}. nearest the centroid. Click: go to this cell."
                )
                button.clicked.connect(lambda _=False, c=cell: self._go_to_cell(c))
                grid.addWidget(button, i // GALLERY_COLUMNS, i % GALLERY_COLUMNS)
                self.buttons[cluster].append(button)
            grid.setColumnStretch(GALLERY_COLUMNS, 1)
            self._layout.addWidget(grid_holder)
        self._layout.addStretch(1)

    @reports_errors("Going to the cell")
    def _go_to_cell(self, cell: int) -> None:
        self.controller.go_to_cell(cell)

    @reports_errors("Selecting the cluster")
    def _select_cluster(self, cluster: int) -> None:
        self.controller.select_cluster(cluster)


class ClusterWidget(QWidget):
    """k, Recluster, cluster quality, the gallery of typical cells, export."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controller = controller_for(napari_viewer)
        layout = QVBoxLayout(self)

        self.run_label = note_label("No run yet: train one (step 3), or reopen a session in Runs.")
        layout.addWidget(self.run_label)
        controls = QGroupBox("Clusters")
        controls_layout = QVBoxLayout(controls)
        self.k = QSpinBox()
        self.k.setRange(2, 100)
        self.k.setValue(self.controller.k)
        self.k.setToolTip("Number of clusters (K-Means on the run's saved embeddings: no retraining)")
        self.n_nearest = QSpinBox()
        self.n_nearest.setRange(1, 32)
        self.n_nearest.setValue(self.controller.n_nearest)
        self.n_nearest.setToolTip("Typical cells shown per cluster: those nearest its centre")
        self.recluster_button = QPushButton("Recluster")
        self.recluster_button.setToolTip(
            "Cluster the shown run again with this k (instant: embeddings are cached)"
        )
        controls_layout.addWidget(
            row(QLabel("k"), self.k, QLabel("typical cells"), self.n_nearest, self.recluster_button)
        )
        self.metrics_label = note_label()
        controls_layout.addWidget(self.metrics_label)
        layout.addWidget(controls)

        gallery_box = QGroupBox("Typical cells of each cluster (click one to go to it)")
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(2, 2, 2, 2)
        self.gallery = ClusterGallery(self.controller)
        scroll = QScrollArea()
        scroll.setWidget(self.gallery)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setMinimumHeight(THUMB_PX + 60)
        scroll.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        gallery_layout.addWidget(scroll)
        layout.addWidget(gallery_box, stretch=1)

        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip(
            "Every cell with its cluster, plus the embeddings and the run's "
            "configuration in files beside the CSV"
        )
        layout.addWidget(row(self.export_button))
        self.status = note_label()
        layout.addWidget(self.status)

        self.recluster_button.clicked.connect(self._recluster)
        self.export_button.clicked.connect(self._choose_export)
        self.controller.active_run_changed.connect(self._run_changed)
        self.controller.clustering_changed.connect(self._clustering_changed)
        self.controller.task_state.connect(self._task_state)
        self.controller.status.connect(self.status.setText)
        self._run_changed()
        self._clustering_changed()

    @reports_errors("Clustering")
    def _recluster(self, *_):
        return self.controller.recluster(self.k.value(), self.n_nearest.value())

    def _run_changed(self) -> None:
        record = self.controller.active
        if record is None:
            self.run_label.setText("No run yet: train one (step 3), or reopen a session in Runs.")
        else:
            self.run_label.setText(f"<b>{record.name}</b>: {record.describe()}")
        has_clusters = record is not None and record.clustering is not None
        self.export_button.setEnabled(has_clusters)
        self.recluster_button.setEnabled(record is not None and record.has_embeddings)

    def _clustering_changed(self) -> None:
        record = self.controller.active
        self._run_changed()
        if record is None or record.clustering is None:
            self.metrics_label.setText("")
            self.gallery.rebuild()
            return
        self.k.setValue(record.clustering.k)
        self.metrics_label.setText(metrics_text(record.metrics))
        self.gallery.rebuild()

    def _task_state(self, task: str, running: bool) -> None:
        if task == "cluster":
            self.recluster_button.setEnabled(not running and self.controller.active is not None)
            self.recluster_button.setText("Clustering…" if running else "Recluster")
        elif task == "export":
            self.export_button.setEnabled(not running)

    # ------------------------------------------------------------------------------------------
    # export: file dialog, then ask before replacing anything (export_clusters checks every file)

    def _choose_export(self, *_):
        record = self.controller.active
        start = str(Path.home() / f"{record.name}_clusters.csv") if record is not None else str(Path.home())
        path, _filter = QFileDialog.getSaveFileName(
            self,
            "Export clusters as CSV",
            start,
            "CSV files (*.csv)",
            # we ask ourselves, for the CSV and for the files beside it
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            if not path.lower().endswith(".csv"):
                path += ".csv"
            self.export_to(path)

    @reports_errors("Export")
    def export_to(self, path: str | Path, *, overwrite: bool = False):
        """Export the shown run to ``path`` (asks before replacing existing files)."""
        worker = self.controller.start_export(path, overwrite=overwrite)
        self._export_path = Path(path)
        worker.returned.connect(self._exported)  # a bound method: dropped if the widget is closed meanwhile
        return worker

    @reports_errors("Export")
    def _exported(self, result) -> None:
        from napari.utils.notifications import show_info

        path = self._export_path

        if isinstance(result, FilesExist):
            if ask_yes_no(self, "Replace files?", f"{result.message}\n\nReplace them?"):
                self.export_to(path, overwrite=True)
            else:
                self.status.setText("Export cancelled: nothing was written.")
            return
        extras = [p.name for p in result.written()[1:]]
        message = f"Exported {result.csv.name} to {result.csv.parent}"
        self.status.setText(message + (f" (beside it: {', '.join(extras)})" if extras else ""))
        show_info(message)
