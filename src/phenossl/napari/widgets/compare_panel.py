"""Step 5's "Compare two runs": which transform moved which cluster. ``phenossl compare``'s reading (what run B
was made with differently, how much the clusterings agree, what B's clusters follow more or less), its heat map
and variable chart, the gallery of the cells that changed cluster, and those cells selected on the plate.
Everything is computed and drawn in a worker (``run_tasks.compare_runs``); this panel only shows it."""

from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from phenossl.napari.cells import cell_count
from phenossl.napari.config_form import choice_box
from phenossl.napari.qt_helpers import button, note_label, reports_errors, row, show_busy
from phenossl.napari.widgets.report_panel import FittedImage
from phenossl.report.compare import moves_reading

ABOUT = ("Which clusters moved between two runs, what run B's clusters follow more or less than A's, and the "
         "cells that changed cluster. Each run is compared with the clusters it shows now (a run not shown: "
         "the clusters saved in its folder).")


class ComparePanel(QGroupBox):
    """Two runs of the session side by side (the picks, the comparison, the changed cells)."""

    def __init__(self, controller, parent: QWidget | None = None) -> None:
        super().__init__("Compare two runs", parent)
        self.controller = controller
        self.comparison = None  # run_tasks.RunComparison shown
        layout = QVBoxLayout(self)
        self.run_boxes = (choice_box(self._run_names), choice_box(self._run_names))
        self.run_a, self.run_b = (box.native for box in self.run_boxes)
        self.compare_button = button(
            "Compare",
            "Which of A's clusters became which of B's, what B's clusters follow more or less (density, size, "
            "stains, position, treatments) and the cells that moved: the same as 'phenossl compare A B'",
            self._compare,
        )
        layout.addWidget(row(self.run_a, QLabel("vs"), self.run_b, self.compare_button))
        self.made = note_label()  # what B was made with differently, one line each
        self.made.setVisible(False)
        layout.addWidget(self.made)
        self.reading = note_label(ABOUT)
        layout.addWidget(self.reading)
        self.chart = FittedImage()
        self.chart.setToolTip("Left / top: where each of A's clusters went in B (share of its cells, counts "
                              "written in). Below: each variable's clusters' AMI, B minus A")
        layout.addWidget(self.chart)
        self.gallery = FittedImage()
        self.gallery.setToolTip("Cells that changed cluster, one row per move (largest first)")
        layout.addWidget(self.gallery)
        self.changed_button = button(
            "Select the cells that changed cluster",
            "Show run A and select the cells whose cluster changed, on the plate and in the UMAP",
            self._select_changed,
        )
        self.changed_button.setEnabled(False)
        layout.addWidget(row(self.changed_button))
        self.status = note_label()
        layout.addWidget(self.status)
        controller.comparison_ready.connect(self.show_comparison)
        controller.task_state.connect(self._task_state)
        for signal in (controller.runs_changed, controller.session_changed):
            signal.connect(self.refresh)
        self.refresh()

    def _run_names(self, *_) -> list[tuple[str, str]]:
        return [(name, name) for name in self.controller.session.runs]

    def refresh(self, *_) -> None:
        """The run picks follow the session's runs: by default the two newest, A the older."""
        runs = list(self.controller.session.runs)
        for box, fallback in zip(self.run_boxes, (-2, -1), strict=True):
            current = box.value
            box.reset_choices()
            if current not in runs and len(runs) >= 2:
                box.value = runs[fallback]

    def pick(self, name_a: str, name_b: str) -> None:
        self.run_a.setCurrentText(name_a)
        self.run_b.setCurrentText(name_b)

    @reports_errors("Comparing runs")
    def _compare(self, *_):
        """Compare the two chosen runs (in a worker: reports of both runs, the pictures)."""
        return self.controller.compare(*(box.value for box in self.run_boxes))

    def show_comparison(self, comparison) -> None:
        self.comparison = comparison
        diff = comparison.difference
        made = list(diff.differences)
        rest = moves_reading(diff) if made else diff.reading  # "made with the same settings" stays a sentence
        self.made.setText("\n".join([f"{diff.name_b} was made differently from {diff.name_a}:",
                                      *(f"• {line}" for line in made)]))
        self.made.setVisible(bool(made))
        self.reading.setText(rest)
        self.chart.set_png(comparison.chart_png)
        self.gallery.set_png(comparison.gallery_png)
        self.changed_button.setEnabled(comparison.changed_cells.size > 0)
        self.status.setText("")

    def _task_state(self, task: str, running: bool) -> None:
        if task == "compare":
            show_busy(self.compare_button, running, "Compare", "Comparing…")

    @reports_errors("Selecting the cells that changed cluster")
    def _select_changed(self, *_):
        comparison = self.comparison
        if comparison is None:
            return
        if self.controller.active is None or self.controller.active.name != comparison.name_a:
            self.controller.activate_run(comparison.name_a)
        self.controller.select_cells(comparison.changed_cells)
        self.status.setText(
            f"{cell_count(comparison.changed_cells.size, 'selected')}: they changed cluster between "
            f"{comparison.name_a} and {comparison.name_b} (shown: {comparison.name_a})"
        )
