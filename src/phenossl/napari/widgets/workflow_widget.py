"""The whole workflow in one dock: a tab per step, all sharing the viewer's controller."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSplitter, QTabWidget, QVBoxLayout, QWidget

from phenossl.napari.controller import controller_for
from phenossl.napari.qt_helpers import scrollable
from phenossl.napari.widgets.augment_widget import AugmentWidget
from phenossl.napari.widgets.cluster_widget import ClusterWidget
from phenossl.napari.widgets.runs_widget import RunsWidget
from phenossl.napari.widgets.segment_widget import SegmentWidget
from phenossl.napari.widgets.train_widget import TrainWidget
from phenossl.napari.widgets.umap_widget import UmapWidget


class WorkflowWidget(QWidget):
    """Tabs: 1 Segment, 2 Augment, 3 Train, 4 Explore (clusters, UMAP, gallery), 5 Runs."""

    TABS = ("1 Segment", "2 Augment", "3 Train", "4 Explore", "5 Runs")

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller_for(napari_viewer)
        self.segment = SegmentWidget(napari_viewer)
        self.augment = AugmentWidget(napari_viewer)
        self.train = TrainWidget(napari_viewer)
        self.clusters = ClusterWidget(napari_viewer)
        self.umap = UmapWidget(napari_viewer)
        self.runs = RunsWidget(napari_viewer)
        explore = QSplitter(Qt.Orientation.Vertical)
        explore.addWidget(self.umap)
        explore.addWidget(scrollable(self.clusters))
        explore.setStretchFactor(0, 2)
        explore.setStretchFactor(1, 3)
        explore.setChildrenCollapsible(False)
        self.tabs = QTabWidget()
        for title, page in zip(
            self.TABS,
            (
                scrollable(self.segment),
                scrollable(self.augment),
                scrollable(self.train),
                explore,
                scrollable(self.runs),
            ),
            strict=True,
        ):
            self.tabs.addTab(page, title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(450)
        # move on to the next step when the current one is done (bound methods: Qt drops them with the widget)
        self.controller.store_changed.connect(self._tiles_made)
        self.controller.clustering_changed.connect(self._clusters_made)

    def _tiles_made(self) -> None:
        if self.tabs.currentIndex() == 0:
            self.tabs.setCurrentIndex(1)

    def _clusters_made(self) -> None:
        if self.tabs.currentIndex() == 2:
            self.tabs.setCurrentIndex(3)
