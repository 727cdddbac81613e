"""Step 2: the two augmentation compositions A and B, the loss weight between them, and a live preview.

What the views may change decides what clusters mean (Bendidi et al. 2024): a 360° rotation and a centre
crop hide orientation and neighbours, so clusters follow the cell's morphology; a random crop lets
neighbours and density in. The preview draws views exactly as training will (``preview_views``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from phenossl.napari.compositions import KNOBS, CompositionDraft, magnitude, preset_names, weight_text
from phenossl.napari.qt_helpers import button, note_label, reports_errors, rgb_pixmap, row
from phenossl.napari.widgets.step import StepWidget

PREVIEW_VIEWS = 6
PREVIEW_PX = 56
DEBOUNCE_MS = 250


def preview_start_cell(
    cells: pd.DataFrame, tile_size: int, field_shapes: Mapping[str, Sequence[int]] | None = None
) -> int:
    """The store row to preview first: a typical cell well inside its field, not row 0 (often a mostly empty
    tile at the border). Among cells whose centroid is at least half a tile from their field's border (the
    field sizes given, else tiles that needed no padding), the one with the median nucleus area."""
    if len(cells) == 0:
        return 0
    inside = np.ones(len(cells), dtype=bool)
    known = False
    if field_shapes and {"field", "centroid_y", "centroid_x"} <= set(cells.columns):
        shapes = cells["field"].map(lambda key: tuple(field_shapes.get(key, (np.nan, np.nan))))
        height = np.array([s[0] for s in shapes], dtype=float)
        width = np.array([s[1] for s in shapes], dtype=float)
        if not np.isnan(height).all():
            half = tile_size / 2
            y, x = cells["centroid_y"].to_numpy(float), cells["centroid_x"].to_numpy(float)
            inside = (y >= half) & (x >= half) & (y <= height - half) & (x <= width - half)
            known = True
    if not known and "padded" in cells.columns:
        inside = ~cells["padded"].astype(bool).to_numpy()
    if not inside.any():
        inside[:] = True  # every tile touches a border: the median cell of all
    rows = np.flatnonzero(inside)
    area = (pd.to_numeric(cells["area"], errors="coerce").to_numpy(float)[rows] if "area" in cells.columns
            else np.full(len(rows), np.nan))
    if np.isnan(area).all():  # no areas (pre-cropped cells): the middle one of the candidates
        return int(rows[len(rows) // 2])
    median = np.nanmedian(area)
    return int(rows[np.nanargmin(np.abs(area - median))])  # the first of ties


class CompositionPanel(QGroupBox):
    """One composition: a preset to start from, then a row per transform (on, magnitude, probability)."""

    changed = Signal()

    def __init__(self, title: str, draft: CompositionDraft, parent: QWidget | None = None):
        super().__init__(title, parent)
        self.draft = draft
        layout = QVBoxLayout(self)
        self.preset = QComboBox()
        self.preset.addItems(list(preset_names()))
        self.preset.setToolTip(
            "morphology: 360° rotation + centre crop (clusters follow the cell's shape). "
            "context: random crops (neighbours and density count). none: no augmentation."
        )
        self.name_label = QLabel()
        layout.addWidget(row(QLabel("Preset"), self.preset, self.name_label, stretch_last=True))
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        for column, text in enumerate(("transform", "magnitude", "chance", "")):
            header = QLabel(f"<small>{text}</small>")
            grid.addWidget(header, 0, column)
        self.toggles: dict[str, QCheckBox] = {}
        self.magnitudes: dict[str, QDoubleSpinBox] = {}
        self.probabilities: dict[str, QDoubleSpinBox] = {}
        self.options: dict[str, QCheckBox] = {}
        for line, knob in enumerate(KNOBS.values(), start=1):
            toggle = QCheckBox(knob.label)
            toggle.setToolTip(knob.help)
            grid.addWidget(toggle, line, 0)
            self.toggles[knob.kind] = toggle
            toggle.toggled.connect(lambda on, kind=knob.kind: self._edit(self.draft.set_enabled, kind, on))
            if knob.field is not None:
                spin = QDoubleSpinBox()
                spin.setRange(knob.special_value if knob.special else knob.minimum, knob.maximum)
                spin.setSingleStep(knob.step)
                spin.setDecimals(knob.decimals)
                if knob.special:
                    spin.setSpecialValueText(knob.special)  # shown at the lowest value
                spin.setSuffix(knob.suffix)
                spin.setToolTip(knob.help)
                spin.setKeyboardTracking(False)
                _compact(spin, 104)
                spin.valueChanged.connect(
                    lambda v, kind=knob.kind: self._edit(self.draft.set_magnitude, kind, v)
                )
                grid.addWidget(spin, line, 1)
                self.magnitudes[knob.kind] = spin
            p = QDoubleSpinBox()
            p.setRange(0.0, 1.0)
            p.setSingleStep(0.1)
            p.setDecimals(2)
            p.setToolTip("Chance, per cell and per view, that this transform is applied.")
            p.setKeyboardTracking(False)
            _compact(p, 46)
            p.valueChanged.connect(lambda v, kind=knob.kind: self._edit(self.draft.set_probability, kind, v))
            grid.addWidget(p, line, 2)
            self.probabilities[knob.kind] = p
            if knob.option is not None:
                option = QCheckBox(knob.option_label)
                option.setToolTip(
                    "Rotate by 0/90/180/270° only: exact, and no empty corners in random crops."
                )
                option.toggled.connect(lambda on, kind=knob.kind: self._edit(self.draft.set_option, kind, on))
                grid.addWidget(option, line, 3)
                self.options[knob.kind] = option
        grid.setColumnStretch(4, 1)
        layout.addLayout(grid)
        self.preset.currentTextChanged.connect(self._load_preset)
        self.set_draft(draft)

    def set_draft(self, draft: CompositionDraft) -> None:
        """Show ``draft`` in the widgets (without feeding the changes back)."""
        self.draft = draft
        widgets = [
            self.preset,
            *self.toggles.values(),
            *self.magnitudes.values(),
            *self.probabilities.values(),
            *self.options.values(),
        ]
        for widget in widgets:
            widget.blockSignals(True)
        if draft.base in preset_names():
            self.preset.setCurrentText(draft.base)
        for kind, toggle in self.toggles.items():
            spec = draft.specs[kind]
            toggle.setChecked(draft.enabled[kind])
            if kind in self.magnitudes:
                self.magnitudes[kind].setValue(magnitude(spec))
            self.probabilities[kind].setValue(spec.p)
            if kind in self.options:
                self.options[kind].setChecked(bool(getattr(spec, KNOBS[kind].option)))
        for widget in widgets:
            widget.blockSignals(False)
        self._refresh_enabled()

    def _refresh_enabled(self) -> None:
        self.name_label.setText(f"<i>{self.draft.name}</i>")
        for kind, toggle in self.toggles.items():
            on = toggle.isChecked()
            option_on = kind in self.options and self.options[kind].isChecked()
            if kind in self.magnitudes:
                self.magnitudes[kind].setEnabled(on and not option_on)
            self.probabilities[kind].setEnabled(on)
            if kind in self.options:
                self.options[kind].setEnabled(on)

    def _load_preset(self, name: str) -> None:
        self.set_draft(CompositionDraft.from_preset(name))
        self.changed.emit()

    @reports_errors("Changing the composition")
    def _edit(self, setter, kind: str, value) -> None:
        try:
            setter(kind, value)
        finally:
            self.set_draft(self.draft)  # show what the draft holds (a rejected value springs back)
        self.changed.emit()


def _compact(spin: QAbstractSpinBox, width: int) -> None:
    """Spin boxes without arrow buttons (type, scroll or use the arrow keys): 16 of them fit a dock.
    napari's theme gives every spin box a 70 px minimum plus padding; this one's own style lifts that."""
    spin.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
    spin.setStyleSheet("QAbstractSpinBox { min-width: 0px; padding: 1px 4px; }")
    spin.setFixedWidth(width)
    spin.setAlignment(Qt.AlignmentFlag.AlignRight)


class PreviewStrip(QWidget):
    """A row of small views with a caption."""

    def __init__(self, caption: str, n: int, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        self.caption = QLabel(caption)
        self.caption.setFixedWidth(20)
        layout.addWidget(self.caption)
        self.images = []
        for _ in range(n):
            label = QLabel()
            label.setFixedSize(PREVIEW_PX, PREVIEW_PX)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setStyleSheet("background: black;")
            layout.addWidget(label)
            self.images.append(label)
        layout.addStretch(1)

    def show_images(self, images) -> None:
        for label, rgb in zip(self.images, images, strict=False):
            label.setPixmap(rgb_pixmap(rgb, PREVIEW_PX))

    def clear_images(self) -> None:
        for label in self.images:
            label.clear()


class AugmentWidget(StepWidget):
    """Compose A and B, weigh them, and see what training will show the encoder."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        layout = self.layout()
        layout.addWidget(
            note_label(
                "Each cell is shown to the network as two random views; it learns what the views share. "
                "Transforms you switch on become things the clusters ignore."
            )
        )
        self.panel_a = CompositionPanel("Composition A", self.controller.drafts["a"])
        self.panel_b = CompositionPanel("Composition B", self.controller.drafts["b"])
        layout.addWidget(self.panel_a)

        weight_box = QGroupBox("Loss weight between A and B")
        weight_layout = QVBoxLayout(weight_box)
        self.weight = QSlider(Qt.Orientation.Horizontal)
        self.weight.setRange(0, 100)
        self.weight.setSingleStep(5)
        self.weight.setPageStep(10)
        self.weight.setValue(round(self.controller.weight_a * 100))
        self.weight.setToolTip("total loss = w · loss(A) + (1 − w) · loss(B)")
        self.weight_label = note_label()
        weight_layout.addWidget(row(QLabel("B"), self.weight, QLabel("A"), stretch_last=True))
        weight_layout.addWidget(self.weight_label)
        layout.addWidget(weight_box)
        layout.addWidget(self.panel_b)

        preview_box = QGroupBox("Preview: views of one cell")
        preview_layout = QVBoxLayout(preview_box)
        self.cell = QSpinBox()
        self.cell.setRange(0, 0)
        self.cell.setToolTip(
            "The cell to preview (its number in the tiles); clicking a cell in the gallery or "
            "selecting one point in the viewer picks it too."
        )
        self.redraw = button("New draw", "Draw other random views", self._new_draw)
        self.original = QLabel()
        self.original.setFixedSize(PREVIEW_PX, PREVIEW_PX)
        self.original.setStyleSheet("background: black;")
        preview_layout.addWidget(row(QLabel("Cell"), self.cell, self.redraw, QLabel("tile:"), self.original))
        self.strip_a = PreviewStrip("A", PREVIEW_VIEWS)
        self.strip_b = PreviewStrip("B", PREVIEW_VIEWS)
        preview_layout.addWidget(self.strip_a)
        preview_layout.addWidget(self.strip_b)
        self.preview_note = note_label("Make the tiles (step 1) to preview the views.")
        preview_layout.addWidget(self.preview_note)
        layout.addWidget(preview_box)
        layout.addStretch(1)

        self._seed = 0
        self._started_on: str | None = None  # the store whose start cell was chosen (a user's pick is kept)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._request_preview)
        self.panel_a.changed.connect(lambda: self._panel_changed("a", self.panel_a))
        self.panel_b.changed.connect(lambda: self._panel_changed("b", self.panel_b))
        self.weight.valueChanged.connect(self._weight_changed)
        self.cell.valueChanged.connect(self._cell_changed)
        self.follow(
            store_changed=self._store_changed, active_run_changed=self._store_changed,
            preview_ready=self._show_preview, current_cell_changed=self.cell.setValue,
            compositions_changed=self._sync_from_controller,
        )
        self._weight_changed(self.weight.value())
        self._store_changed()

    def _panel_changed(self, branch: str, panel: CompositionPanel) -> None:
        self.controller.set_draft(branch, panel.draft)
        self._debounce.start()

    def _sync_from_controller(self) -> None:
        for branch, panel in (("a", self.panel_a), ("b", self.panel_b)):
            if panel.draft is not self.controller.drafts[branch]:
                panel.set_draft(self.controller.drafts[branch])
        self._update_weight_text()

    def _weight_changed(self, value: int) -> None:
        if abs(self.controller.weight_a - value / 100) > 1e-9:
            self.controller.set_weight(value / 100)
        self._update_weight_text()

    def _update_weight_text(self) -> None:
        w = self.controller.weight_a
        self.weight_label.setText(weight_text(w, self.panel_a.draft.name, self.panel_b.draft.name))
        self.panel_a.setEnabled(w > 0)
        self.panel_b.setEnabled(w < 1)
        self.panel_a.setTitle("Composition A" + ("" if w > 0 else " (not used: weight 0)"))
        self.panel_b.setTitle("Composition B" + ("" if w < 1 else " (not used: weight of A is 1)"))

    def _cell_changed(self, value: int) -> None:
        self.controller.set_current_cell(value)
        self._debounce.start()

    def _new_draw(self) -> None:
        self._seed += 1
        self._debounce.start()

    def _store_changed(self) -> None:
        store = self.controller.session.store or (
            self.controller.active.tile_store() if self.controller.active else None
        )
        if store is None:
            self.cell.setRange(0, 0)
            return
        self.cell.setRange(0, store.n_cells - 1)
        if self._started_on != str(store.path):
            self._started_on = str(store.path)
            plate = self.controller.plate
            shapes = dict(zip(plate.keys, plate.shapes, strict=True)) if plate is not None else None
            self.cell.setValue(preview_start_cell(store.cells, store.tile_size, shapes))
        self.preview_note.setText(
            f"{PREVIEW_VIEWS} random views per composition of cell {self.cell.value()}, "
            "as training draws them."
        )
        self._debounce.start()

    def _request_preview(self) -> None:
        self.controller.request_preview(self.cell.value(), n=PREVIEW_VIEWS, seed=self._seed)

    def _show_preview(self, preview) -> None:
        self.original.setPixmap(rgb_pixmap(preview.original, PREVIEW_PX))
        for branch, strip in (("a", self.strip_a), ("b", self.strip_b)):
            views = preview.views.get(branch)
            if views:
                strip.show_images(views)
            else:
                strip.clear_images()
        self.preview_note.setText(
            f"{PREVIEW_VIEWS} random views per composition of cell {preview.cell_id}, as training draws them."
        )
