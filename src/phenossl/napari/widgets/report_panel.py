"""Step 5's "What do the clusters follow?": ``phenossl report``'s reading, chart and table for the clustering
shown now (computed in a worker), and saving it beside the run when that clustering is the run's own."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from phenossl.napari.qt_helpers import ask_yes_no, button, note_label, reports_errors, row
from phenossl.napari.report_tasks import report_rows
from phenossl.napari.tasks import FilesExist

REPORT_COLUMNS = ("variable", "group", "AMI", "probe")
COLUMN_TIPS = ("", "nuisance or treatment", "the clusters' AMI with the variable (numbers on quantile bins)",
               ("a linear probe on the embedding, whole wells held out: R² for numbers, balanced accuracy for "
                "categories"))
REPORT_TEXT = "Report on the shown run"
SAVE_TEXT = "Save report beside the run"


class FittedImage(QLabel):
    """A picture shrunk to the label's width (never enlarged), keeping its proportions."""

    def __init__(self) -> None:
        super().__init__()
        self.original = QPixmap()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

    def set_png(self, png: bytes) -> None:
        self.original = QPixmap()
        self.original.loadFromData(png, "PNG")
        self._fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self.original.isNull():
            self.clear()
            self.setFixedHeight(0)
            return
        width = max(min(self.width(), self.original.width()), 50)
        pixmap = self.original.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
        self.setPixmap(pixmap)
        self.setFixedHeight(pixmap.height())


class ReportPanel(QGroupBox):
    """The report of the shown run's shown clustering (an exploration not kept yet included)."""

    def __init__(self, controller, parent: QWidget | None = None) -> None:
        super().__init__("What do the clusters follow?", parent)
        self.controller = controller
        self.result = None  # report_tasks.ClusterReport shown
        layout = QVBoxLayout(self)
        self.report_button = button(
            REPORT_TEXT,
            "Score nuisance variables (density, nucleus size, stain levels, position) and the treatments "
            "against the clusters shown now and the embedding: the same report as 'phenossl report RUN'",
            self._report,
        )
        self.save_button = button(SAVE_TEXT, on_click=self._save)
        layout.addWidget(row(self.report_button, self.save_button))
        self.about = note_label(
            "Which variables the shown clusters follow (AMI) and which a linear probe reads from the embedding, "
            "with whole wells held out."
        )
        layout.addWidget(self.about)
        self.reading = note_label()
        layout.addWidget(self.reading)
        self.chart = FittedImage()
        layout.addWidget(self.chart)
        self.table = report_table()
        layout.addWidget(self.table)
        self.status = note_label()
        layout.addWidget(self.status)
        controller.report_ready.connect(self.show_report)
        for signal in (controller.active_run_changed, controller.clustering_changed,
                       controller.saved_clustering_changed):
            signal.connect(self.refresh)
        controller.task_state.connect(self._task_state)
        self.refresh()

    @reports_errors("Reporting on the clusters")
    def _report(self, *_):
        return self.controller.report_on_shown()

    def show_report(self, result) -> None:
        self.result = result
        report = result.report
        kind = "the run's saved clustering" if result.saved else "an exploration, not kept as the run's clustering"
        self.about.setText(f"{result.run}, k={report.k} ({kind}):")
        self.reading.setText(report.reading)
        self.chart.set_png(result.png)
        rows = report_rows(report.table)
        self.table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(r, c, item)
        self.table.setFixedHeight(min(len(rows), 8) * 24 + self.table.horizontalHeader().height() + 4)
        self.status.setText("")
        self.refresh()

    def is_current(self) -> bool:
        """True when the report is of the run and the clusters shown now."""
        record = self.controller.active
        return (self.result is not None and record is not None and record.name == self.result.run
                and record.clustering is not None
                and np.array_equal(record.clustering.labels, self.result.labels))

    def refresh(self, *_) -> None:
        record = self.controller.active
        if not self.controller.running("report"):
            self.report_button.setEnabled(record is not None and record.clustering is not None)
        if self.result is None:
            why = "Report on the shown run first."
        elif not self.is_current():
            why = "The shown run or clustering changed since this report: report on it again."
            self.status.setText(why)
        elif not self.result.saved:
            why = (f"This is an exploration: keep it as the run's clustering first (step 4, Keep k={self.result.report.k}"
                   "), then report on it again.")
        else:
            why = ""
        can_save = not why and not self.controller.running("save-report")
        self.save_button.setEnabled(can_save)
        self.save_button.setToolTip(
            why or "Write report.csv, report.md and report.png into the run folder (as 'phenossl report RUN')")

    @reports_errors("Saving the report")
    def _save(self, *_):
        self.save(overwrite=False)

    def save(self, *, overwrite: bool = False):
        """Save the shown report beside its run (asks before replacing an earlier report)."""
        # connected before the worker starts: a quick "files exist" answer is never missed
        return self.controller.save_report(self.result, overwrite=overwrite, on_saved=self._saved)

    def _saved(self, result) -> None:
        if isinstance(result, FilesExist):
            if ask_yes_no(self, "Replace the report?", f"{result.message}\n\nReplace them?"):
                self.save(overwrite=True)
            return
        self.status.setText(f"Saved {', '.join(path.name for path in result)} in {result[0].parent}")

    def _task_state(self, task: str, running: bool) -> None:
        if task == "report":
            self.report_button.setText("Reporting…" if running else REPORT_TEXT)
            self.report_button.setEnabled(not running)
            if not running:
                self.refresh()
        elif task == "save-report":
            self.save_button.setText("Saving…" if running else SAVE_TEXT)
            self.refresh()


def report_table() -> QTableWidget:
    table = QTableWidget(0, len(REPORT_COLUMNS))
    for c, (name, tip) in enumerate(zip(REPORT_COLUMNS, COLUMN_TIPS, strict=True)):
        item = QTableWidgetItem(name)
        item.setToolTip(tip)
        table.setHorizontalHeaderItem(c, item)
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(24)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # long names are elided, the numbers never
    table.setFixedHeight(60)
    return table
