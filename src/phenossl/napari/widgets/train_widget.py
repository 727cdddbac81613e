"""Step 3: train a self-supervised encoder on the tiles, with a live loss curve, speed, and Cancel."""

from __future__ import annotations

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from phenossl.config import RunConfig, TrainConfig
from phenossl.methods.params import YAwareParams
from phenossl.methods.registry import method_names, method_spec
from phenossl.models.registry import encoder_names, encoder_spec
from phenossl.napari.config_form import ConfigForm, Row, choice_box
from phenossl.napari.qt_helpers import button, note_label, reports_errors, row, show_busy
from phenossl.napari.widgets.plots import theme_colors, themed_canvas
from phenossl.napari.widgets.step import StepWidget

TRAIN_ROWS = [
    Row("encoder", "Encoder", choices=tuple((name, name) for name in encoder_names()),
        tooltip="\n".join(encoder_spec(name).summary for name in encoder_names())),
    Row("epochs", "Epochs", value=10, high=10_000, tooltip="passes over all cells"),
    Row("batch_size", "Batch size", value=64, high=4096,
        tooltip="cells per step; larger is better for contrastive methods, if memory allows"),
    Row("resolution", "Resolution", value=64, step=16, suffix=" px",
        tooltip="the views are resized to this many pixels before the network"),
]
#: shown only for a method that trains on a label (``MethodSpec.needs_label``); its choices: the numeric columns
#: of the tile store's cell table
LABEL_ROW = Row("label_column", "Label column", choices=(),
                tooltip="a number per cell the method learns from, e.g. the dose (concentration): cells with similar "
                "values are pulled together; cells without a value are not trained on, but all are embedded")
#: rows of a method's own parameters (by its ``MethodSpec.section``), shown when that method is chosen
METHOD_ROWS = {
    "yaware": (YAwareParams, [
        Row("sigma", "Label kernel σ", step=0.1,
            tooltip="how close two labels must be for their cells to count as alike (in label units; decades of "
            "dose with log10): small = only the same dose"),
        Row("label_transform", "Label scale", tooltip="log10: compare doses by their ratio (zero doses sit one "
            "decade below the lowest dose)"),
    ]),
}
SEED_ROW = Row("seed", "Seed", low=0, high=2**31 - 1,
               tooltip="the same seed gives the same training and clusters")
REDRAW_MS = 500  # the loss curve is redrawn at most this often (a redraw costs the UI thread tens of ms)


def method_combo() -> QComboBox:
    """The registered training methods, each with its one-line summary as the item's tooltip."""
    combo = QComboBox()
    for method in method_names():
        combo.addItem(method, method)
        combo.setItemData(combo.count() - 1, method_spec(method).summary, Qt.ItemDataRole.ToolTipRole)
    combo.setCurrentText(TrainConfig().method)
    return combo


class LossPlot(QWidget):
    """Loss against training step, redrawn on a timer so a fast trainer cannot flood the UI thread."""

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.colors = theme_colors(viewer)
        self.figure, self.axes, self.canvas = themed_canvas(self.colors, height=180)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.epoch_marks: list = []
        self.axes.set_xlabel("step", fontsize=8)
        self.axes.set_ylabel("loss", fontsize=8)
        (self._line,) = self.axes.plot([], [], color="#5fb0ff", linewidth=1.2)
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()
        self.reset("")

    def reset(self, title: str) -> None:
        self.steps, self.losses = [], []
        for mark in self.epoch_marks:
            mark.remove()
        self.epoch_marks = []
        self.axes.set_title(title, fontsize=9)
        self._line.set_data([], [])
        self._dirty = True
        self._redraw()

    def add(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self._dirty = True

    def mark_epoch(self, step: int) -> None:
        self.epoch_marks.append(self.axes.axvline(step, color=self.colors.grid, linewidth=0.8))
        self._dirty = True

    def _redraw(self) -> None:
        """Move the line's data and rescale: much cheaper than redrawing the axes from scratch."""
        if not self._dirty:
            return
        self._dirty = False
        self._line.set_data(self.steps, self.losses)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()


class TrainWidget(StepWidget):
    """Method, encoder and length of training; device; train / cancel; live loss and speed."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        from phenossl.train import available_devices

        layout = self.layout()

        settings = QGroupBox("Training")
        form = QFormLayout(settings)
        self.method = method_combo()
        form.addRow("Method", self.method)
        self.train_form = ConfigForm(TrainConfig, TRAIN_ROWS)
        self.seed_form = ConfigForm(RunConfig, [SEED_ROW])
        self.label_form = ConfigForm(TrainConfig, [LABEL_ROW])
        self.method_forms = {section: ConfigForm(model, rows) for section, (model, rows) in METHOD_ROWS.items()}
        for part in (self.label_form, *self.method_forms.values(), self.train_form, self.seed_form):
            part.add_rows(form)
        self.label_column = self.label_form["label_column"]
        self.encoder, self.epochs, self.batch, self.resolution = (
            self.train_form.native(name) for name in ("encoder", "epochs", "batch_size", "resolution")
        )
        self.seed = self.seed_form.native("seed")
        self.device_box = choice_box(
            [(option.label, option) for option in available_devices()],
            "Only the devices this computer has are listed.",
        )
        self.cpu_note = note_label(
            "Training on the CPU: much slower than on a GPU (minutes for a few hundred cells at 64 px; "
            "hours for large screens). Keep the resolution and epochs small, or use a computer with a GPU.",
            warning=True,
        )
        self.init_box = choice_box(
            self._start_points,
            "Start from the encoder of an earlier run (its heads are rebuilt), e.g. to "
            "refine a model with other compositions.",
        )
        self.device, self.init_from = self.device_box.native, self.init_box.native
        form.addRow("Device", self.device)
        form.addRow(self.cpu_note)
        form.addRow("Start from", self.init_from)
        layout.addWidget(settings)
        self.summary = note_label()
        layout.addWidget(self.summary)

        self.train_button = button(
            "Train",
            "Train a new run with these settings and the compositions of step 2; "
            "then the cells are embedded and clustered.",
            self._train,
        )
        self.cancel_button = button(
            "Cancel",
            "Stop the training before the next step (the last finished epoch is kept), "
            "or the embedding of the cells that follows it.",
            self._cancel,
        )
        self.cancel_button.setEnabled(False)
        layout.addWidget(row(self.train_button, self.cancel_button))
        baselines = QGroupBox("Baselines: no training")
        baselines_layout = QVBoxLayout(baselines)
        self.measure_button = button(
            "Measure cells",
            "CellProfiler features (cp_measure) of each nucleus, no training: size, shape, intensity, "
            "texture... A trained encoder is worth its time only if it separates your treatments better "
            "than this.",
            lambda *_: self._baseline("cellprofiler"),
        )
        self.untrained_button = button(
            "Untrained encoder",
            "The chosen encoder with random weights, no training: what the network alone gives.",
            lambda *_: self._baseline("random-init"),
        )
        baselines_layout.addWidget(row(self.measure_button, self.untrained_button))
        baselines_layout.addWidget(note_label(
            "Measure cells: CellProfiler features, no training. Compare the runs in step 5 "
            "(Does training beat measuring?)."
        ))
        layout.addWidget(baselines)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)  # the set-up's messages are longer than a step's line
        layout.addWidget(self.progress_label)
        self.loss_plot = LossPlot(napari_viewer)
        layout.addWidget(self.loss_plot)
        self.status = note_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.device.currentIndexChanged.connect(self._device_changed)
        self.method.currentIndexChanged.connect(self._method_changed)
        self.follow(
            train_event=self._on_event, training_finished=self._finished, runs_changed=self._refresh_runs,
            store_changed=self._refresh_summary, compositions_changed=self._refresh_summary,
            task_state=self._task_state, status=self.status.setText,
        )
        self._device_changed()
        self._method_changed()
        self._refresh_runs()
        self._refresh_summary()
        self._last = None

    def settings(self) -> dict:
        """The training section of the run configuration (compositions come from step 2)."""
        spec = method_spec(self.method.currentData())
        extra = self.label_form.values() if spec.needs_label else {}
        if spec.section in self.method_forms:
            extra["method_params"] = {spec.section: self.method_forms[spec.section].values()}
        return {
            "method": spec.name,
            **self.train_form.values(),
            **extra,
            "device": self.device.currentData().name,
        }

    def _method_changed(self, *_) -> None:
        """Show the label column for a method that trains on one, and the chosen method's own rows."""
        spec = method_spec(self.method.currentData())
        self.label_form.set_visible("label_column", spec.needs_label)
        for section, part in self.method_forms.items():
            for name in part.rows:
                part.set_visible(name, section == spec.section)

    def _seed(self) -> int:
        return self.seed_form.values()["seed"]

    @reports_errors("Training")
    def _train(self, *_):
        record = self.controller.start_training(
            self.settings(), seed=self._seed(), init_from=self.init_from.currentData()
        )
        self.loss_plot.reset(f"{record.name}: {record.config.train.method}/{record.config.train.encoder}")
        self.progress_label.setText("starting…")
        self._last = None
        return record

    @reports_errors("Starting the baseline")
    def _baseline(self, representation: str):
        record = self.controller.start_baseline(representation, self.settings(), seed=self._seed())
        self.progress_label.setText(
            "measuring the cells…" if representation == "cellprofiler" else "saving the untrained encoder…"
        )
        return record

    def _cancel(self, *_):
        training = self.controller.running("train")
        self.controller.cancel_training()
        self.cancel_button.setEnabled(False)
        self.progress_label.setText(
            "cancelling: stops before the next step…" if training else "cancelling the embedding…"
        )

    def _on_event(self, event) -> None:
        from phenossl.train import EpochDone, SetUp, StepProgress

        if isinstance(event, SetUp):  # the first seconds: what the set-up is doing, as the CLI says it
            self.progress_label.setText(f"{event.text}…")
        elif isinstance(event, StepProgress):
            self.loss_plot.add(event.global_step, event.loss)
            self.progress_label.setText(
                f"epoch {event.epoch + 1}/{event.epochs}, step {event.step}/{event.steps_per_epoch}: "
                f"loss {event.loss:.3f}, {event.images_per_s:.0f} images/s"
            )
            self._last = event
        elif isinstance(event, EpochDone):
            step = self._last.global_step if self._last is not None else 0
            self.loss_plot.mark_epoch(step)
            self.status.setText(
                f"epoch {event.epoch + 1}/{event.epochs} done: mean loss {event.mean_loss:.3f}, "
                f"checkpoint saved"
            )

    def _finished(self, outcome) -> None:
        self.progress_label.setText(
            {
                "trained": "training finished",
                "cancelled": "training cancelled",
                "failed": "training failed",
            }.get(outcome.status, outcome.status)
        )

    def _task_state(self, task: str, running: bool) -> None:
        if task == "train":
            show_busy(self.train_button, running, "Train", "Training…")
        if task in ("train", "embed"):  # Cancel also stops the embedding that follows a training
            controller = self.controller
            busy = controller.running("train") or controller.running("embed")
            self.cancel_button.setEnabled(busy)
            self.measure_button.setEnabled(not busy)
            self.untrained_button.setEnabled(not controller.running("train"))
            if task == "embed" and not running and self.progress_label.text().startswith("measuring"):
                self.progress_label.setText("measuring finished (see the status below)")

    def _device_changed(self, *_):
        option = self.device.currentData()
        self.cpu_note.setVisible(option is not None and option.kind == "cpu")

    def _start_points(self, *_) -> list[tuple[str, str | None]]:
        """A fresh encoder, or the checkpoint of an earlier run."""
        runs = self.controller.session.runs.items()
        earlier = [(f"{name} ({r.config.train.encoder})", name) for name, r in runs if r.has_checkpoint]
        return [("a fresh encoder", None), *earlier]

    def _refresh_runs(self) -> None:
        self.init_box.reset_choices()

    def _refresh_label_columns(self) -> None:
        """The label column's choices: the numeric columns of the tiles' cell table (concentration first)."""
        from phenossl.train.labels import numeric_columns

        store = self.controller.session.store
        columns = numeric_columns(store.cells) if store is not None else []
        columns.sort(key=lambda name: name not in ("concentration", "dose"))
        current = self.label_column.value
        self.label_column.choices = [(name, name) for name in columns]
        if columns:
            self.label_column.value = current if current in columns else columns[0]

    def _refresh_summary(self) -> None:
        self._refresh_label_columns()
        store = self.controller.session.store
        cells = f"{store.n_cells} cells" if store is not None else "no tiles yet (step 1)"
        comps = self.controller.compositions()
        w = self.controller.weight_a
        mix = (
            f"A = {comps['a'].name}"
            if w >= 1
            else f"B = {comps['b'].name}"
            if w <= 0
            else f"{w:.2f}·A ({comps['a'].name}) + {1 - w:.2f}·B ({comps['b'].name})"
        )
        self.summary.setText(f"Trains on {cells} with {mix}.")

