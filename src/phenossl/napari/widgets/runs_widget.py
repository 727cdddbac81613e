"""Step 5: every run of the session (configuration, checkpoint, embeddings kept), switching between them,
what the shown clusters follow (``report_panel``), and comparing two (``compare_panel``): which clusters moved,
what they follow now, and which cells changed cluster."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from phenossl.config import ClusterConfig
from phenossl.napari.config_form import ConfigForm, Row, choice_box
from phenossl.napari.qt_helpers import (
    button,
    choose_session_folder,
    note_label,
    open_session_folder,
    reports_errors,
    row,
    scrollable,
    show_busy,
)
from phenossl.napari.widgets.compare_panel import ComparePanel
from phenossl.napari.widgets.report_panel import ReportPanel
from phenossl.napari.widgets.step import StepWidget

COLUMNS = ("run", "training", "status")
EVALUATION_COLUMNS = ("run", "space", "AMI", "AMI within", "1-NN bal. acc.")
NO_GROUPS = "(all cells together)"
CONTROLS_ROW = Row(
    "controls",
    "Controls",
    tooltip="Negative controls: each plate is also scored standardised to its own controls, the profiling "
    "field's correction for plate-to-plate staining differences",
)


class RunsWidget(StepWidget):
    """The session's runs; show one; compare two."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        layout = self.layout()

        self.folder_label = note_label()
        self.open_button = button(
            "Open session folder…",
            "Reopen the tiles and runs of an earlier session (its folder under "
            "~/phenossl-runs, or wherever you saved it)",
            self._choose_session,
        )
        layout.addWidget(self.folder_label)
        layout.addWidget(row(self.open_button))

        runs_box = QGroupBox("Runs")
        runs_layout = QVBoxLayout(runs_box)
        self.table = runs_table()
        self.table.horizontalHeader().sectionResized.connect(self._fit_rows)
        self.table.cellDoubleClicked.connect(lambda *_: self._show_run())
        runs_layout.addWidget(self.table)
        self.show_button = button(
            "Show this run",
            "Colour the plate, the UMAP and the gallery by this run's clusters",
            self._show_run,
        )
        self.embed_button = button(
            "Embed cells",
            "Compute this run's embeddings from its checkpoint (e.g. after a cancel)",
            self._embed,
        )
        runs_layout.addWidget(row(self.show_button, self.embed_button))
        runs_layout.addWidget(
            note_label(
                "To retrain with other compositions: change them in step 2, pick "
                "'Start from' in step 3 if you want, and train: a new run is added."
            )
        )
        layout.addWidget(runs_box)
        self.report = ReportPanel(self.controller)
        layout.addWidget(self.report)

        self.compare = ComparePanel(self.controller)
        layout.addWidget(self.compare)
        layout.addWidget(self._evaluation_box())
        self.status = note_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.follow(
            runs_changed=self.refresh, session_changed=(self.refresh, self._refresh_label_columns),
            active_run_changed=self.refresh, clustering_changed=self.refresh,
            evaluation_ready=self._show_evaluation,
            store_changed=self._refresh_label_columns, task_state=self._task_state,
        )
        self.refresh()
        self._refresh_label_columns()

    def _evaluation_box(self) -> QGroupBox:
        """Every run side by side on the plate's own labels: does training beat measuring the cells?"""
        box = QGroupBox("Does training beat measuring?")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self._columns: tuple[list[str], list[str]] = ([], [])
        self.eval_label_box = choice_box(
            lambda *_: [(name, name) for name in self._columns[0]],
            "The treatment column the runs should separate (from the plate's metadata)",
        )
        self.eval_within_box = choice_box(
            lambda *_: [(NO_GROUPS, None), *((name, name) for name in self._columns[1])],
            "Also score inside each plate (K-Means refitted there): no plate effect can help",
        )
        self.eval_label, self.eval_within = self.eval_label_box.native, self.eval_within_box.native
        form.addRow("Separate", self.eval_label)
        form.addRow("Within each", self.eval_within)
        self.eval_form = ConfigForm(ClusterConfig, [CONTROLS_ROW])
        self.eval_form.add_rows(form)
        self.eval_controls = self.eval_form.native("controls")
        self.eval_controls.setPlaceholderText("e.g. compound=DMSO")
        layout.addLayout(form)
        self.evaluate_button = button(
            "Evaluate the runs",
            "K-Means AMI, AMI within groups and 1-NN balanced accuracy of every run with embeddings: "
            "trained, measured (CellProfiler) and untrained side by side",
            self._evaluate,
        )
        layout.addWidget(row(self.evaluate_button))
        self.evaluation = QTableWidget(0, len(EVALUATION_COLUMNS))
        self.evaluation.setHorizontalHeaderLabels(list(EVALUATION_COLUMNS))
        self.evaluation.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.evaluation.verticalHeader().setVisible(False)
        self.evaluation.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.evaluation.setMinimumHeight(90)
        layout.addWidget(self.evaluation)
        self.evaluation_note = note_label(
            "Measure cells (step 3) gives the CellProfiler baseline. Higher is better; 1-NN leaves one group "
            "out. The same table as 'phenossl evaluate'."
        )
        layout.addWidget(self.evaluation_note)
        return box

    def _refresh_label_columns(self) -> None:
        store = self.controller.session.store
        cells = store.cells if store is not None else None
        self._columns = label_choices(cells)
        for box in (self.eval_label_box, self.eval_within_box):
            box.reset_choices()
        if "plate" in self._columns[1] and self.eval_within_box.value is None:
            self.eval_within_box.value = "plate"
        if not self.eval_controls.text() and cells is not None:
            self.eval_controls.setText(guess_controls(cells))

    @reports_errors("Evaluating the runs")
    def _evaluate(self, *_):
        controls = self.eval_form.values()["controls"]
        return self.controller.evaluate(self.eval_label_box.value, self.eval_within_box.value, controls)

    def _show_evaluation(self, table) -> None:
        self.evaluation.setRowCount(len(table))
        for r, item in enumerate(table.itertuples(index=False)):
            within = "–" if item.ami_within_mean is None or item.ami_within_mean != item.ami_within_mean \
                else f"{item.ami_within_mean:.2f}"
            values = (item.run, item.space, f"{item.ami_mean:.2f} ± {item.ami_sd:.2f}", within,
                      f"{item.knn_balanced_accuracy:.2f}")
            for c, text in enumerate(values):
                cell = QTableWidgetItem(text)
                cell.setToolTip(f"{item.run}: {item.representation}")
                self.evaluation.setItem(r, c, cell)
        best = table.loc[table["ami_within_mean"].fillna(table["ami_mean"]).idxmax()]
        self.evaluation_note.setText(
            f"Best at separating {self.eval_label.currentText()}: {best['run']} ({best['representation']}, "
            f"{best['space']}). 1-NN: {table['knn_scheme'].iloc[0]}."
        )

    def refresh(self) -> None:
        session = self.controller.session
        self.folder_label.setText(f"Session folder: {session.folder}")
        runs = list(session.runs.values())
        selected = self.selected_run()
        self.table.setRowCount(len(runs))
        active = self.controller.active
        for r, record in enumerate(runs):
            k = f", k={record.clustering.k}" if record.clustering is not None else ""
            shown = " (shown)" if record is active else ""
            for c, text in enumerate((record.name, record.describe(), f"{record.disk_status()}{k}{shown}")):
                item = QTableWidgetItem(text)
                item.setToolTip(record.message or text)
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()
        if selected in session.runs:
            self.table.selectRow(list(session.runs).index(selected))
        elif runs:
            self.table.selectRow(len(runs) - 1)

    def _fit_rows(self, *_) -> None:
        self.table.resizeRowsToContents()

    def showEvent(self, event) -> None:  # column widths are known once shown: wrap the descriptions then
        super().showEvent(event)
        self._fit_rows()

    def selected_run(self) -> str | None:
        items = self.table.selectedItems()
        if not items:
            return None
        return self.table.item(items[0].row(), 0).text()

    @reports_errors("Showing the run")
    def _show_run(self, *_):
        name = self.selected_run()
        if name is not None:
            self.controller.activate_run(name)

    @reports_errors("Embedding")
    def _embed(self, *_):
        name = self.selected_run()
        if name is not None:
            self.controller.embed(self.controller.session.runs[name])

    def _task_state(self, task: str, running: bool) -> None:
        if task == "evaluate":
            show_busy(self.evaluate_button, running, "Evaluate the runs", "Evaluating…")

    def _choose_session(self, *_):
        choose_session_folder(self, self.controller)

    def open_session(self, folder: str) -> None:
        open_session_folder(self.controller, folder)


def runs_dock(napari_viewer) -> QScrollArea:
    """Step 5 docked on its own ("5. Runs"): scrollable as in the workflow's tab, so its report and comparison
    pictures never squeeze the canvas."""
    return scrollable(RunsWidget(napari_viewer))


def runs_table() -> QTableWidget:
    """One row per run, selected whole; the training column takes the width left and wraps."""
    table = QTableWidget(0, len(COLUMNS))
    table.setHorizontalHeaderLabels(list(COLUMNS))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
    table.setWordWrap(True)
    table.setTextElideMode(Qt.TextElideMode.ElideNone)
    table.setMinimumHeight(120)
    return table


def label_choices(cells) -> tuple[list[str], list[str]]:
    """Columns a run can be scored against (treatments: 2-50 values) and grouped by (plate, well...)."""
    if cells is None:
        return [], []
    skip = {"cell_id", "label", "centroid_y", "centroid_x", "area", "padded", "crop_index", "key"}
    labels, groups = [], []
    for column in cells.columns:
        if column in skip or str(column).startswith("file"):  # file names are not treatments
            continue
        values = cells[column].nunique(dropna=True)
        if column in ("plate", "well", "field", "site"):
            groups.append(column)
        elif 2 <= values <= 50:
            labels.append(column)
    known = [c for c in ("compound", "treatment", "moa", "phenotype") if c in labels]
    return known + [c for c in labels if c not in known], groups


def guess_controls(cells) -> str:
    """``compound=DMSO`` when a treatment column holds a usual negative-control name, else empty."""
    for column in ("compound", "treatment", "perturbation"):
        if column in cells.columns:
            values = {str(v) for v in cells[column].dropna().unique()}
            for name in ("DMSO", "dmso", "control", "untreated", "NT", "vehicle"):
                if name in values:
                    return f"{column}={name}"
    return ""
