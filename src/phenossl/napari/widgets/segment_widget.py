"""Step 1: segment nuclei and cut one tile per cell, from the labels as the user left them."""

from __future__ import annotations

import logging
import re

from qtpy.QtWidgets import QFormLayout, QGroupBox, QVBoxLayout, QWidget

from phenossl.config import SegmentConfig, TileConfig
from phenossl.errors import InputError
from phenossl.napari.config_form import ConfigForm, Row
from phenossl.napari.controller import stack_shape_text
from phenossl.napari.layer_pickers import LayerChecklist, layer_picker
from phenossl.napari.plate import NUCLEAR_NAMES, PlateInfo, channel_name, guess_nuclear_index
from phenossl.napari.qt_helpers import (
    button,
    choose_session_folder,
    connect_while_alive,
    note_label,
    reports_errors,
    row,
    show_busy,
)
from phenossl.napari.widgets.step import StepWidget

logger = logging.getLogger(__name__)

STATUS_CHARS = 200  # a few lines of the dock at most: the status stays a status, however long the error
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'])")
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs")

SEGMENT_ROWS = [
    Row("backend", "Backend", tooltip="classical: thresholds and watershed, no model needed. "
        "cellpose: a deep model, needs its weights on this computer."),
    Row("model", "Cellpose model"),
    Row("weights", "Weights file"),
    Row("diameter", "Nucleus diameter", high=500, suffix=" px", none_text="estimate",
        tooltip="Typical nucleus diameter in pixels; 'estimate' lets the backend measure it."),
]
TILE_ROWS = [
    Row("size", "Tile size", step=4, suffix=" px",
        tooltip="Side of each single-cell tile, centred on the nucleus (the paper: 196 px)."),
    Row("border", "At the border", value="pad",
        choices=(("pad (keep every cell)", "pad"), ("skip cells at the border", "skip")),
        tooltip="Tiles of cells near the image border leave the image: pad them with background, "
        "or leave those cells out."),
]


def one_line(text: str, limit: int = STATUS_CHARS) -> str:
    """The first line of ``text`` cut at its first sentence, elided to ``limit`` characters: a cellpose
    error of 18 lines must not fill the Segment tab (the whole text goes to the tooltip and the log)."""
    stripped = text.strip()
    if "\n" not in stripped and len(stripped) <= limit:
        return stripped  # phenossl's own one-line messages (several sentences) stay whole
    first = stripped.splitlines()[0].strip() if stripped else ""
    short = first
    for end in _SENTENCE_END.finditer(first):
        head = first[: end.start()]
        if len(head) >= 20 and not head.lower().endswith(_ABBREVIATIONS):
            short = first[: end.end()]
            break
    if len(short) > limit:
        short = short[: limit - 1].rstrip() + "…"
    elif short != stripped:
        short = short.rstrip(":;,") + " …"
    return short


class SegmentWidget(StepWidget):
    """Pick the channels and the nuclear stain, segment, check the nuclei, make the tiles."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        from napari.layers import Image, Labels

        layout = self.layout()

        session_box = QGroupBox("Session folder (tiles and runs are saved here)")
        session_layout = QVBoxLayout(session_box)
        self.session_label = note_label()
        self.change_session = button(
            "Change…",
            "Choose another folder; choosing an existing session folder reopens it.",
            self._choose_session,
        )
        session_layout.addWidget(self.session_label)
        session_layout.addWidget(row(self.change_session))
        layout.addWidget(session_box)

        images_box = QGroupBox("Images")
        images_form = QFormLayout(images_box)
        self.channels = LayerChecklist(napari_viewer, Image)
        self.channels.setToolTip("The channel layers that go into the tiles (one layer per stain).")
        self.nuclear = layer_picker(
            napari_viewer, Image, "The nuclear stain (DNA, DAPI, Hoechst): nuclei are segmented in it."
        )
        self.shape_label = note_label()
        images_form.addRow("Channels", self.channels)
        images_form.addRow("Nuclear stain", self.nuclear.native)
        images_form.addRow("", self.shape_label)
        layout.addWidget(images_box)

        segment_box = QGroupBox("Segment nuclei")
        segment_form = QFormLayout(segment_box)
        self.segment_form = ConfigForm(SegmentConfig, SEGMENT_ROWS)
        self.segment_form.add_rows(segment_form)
        self.backend, self.model, self.weights, self.diameter = (
            self.segment_form.native(name) for name in ("backend", "model", "weights", "diameter")
        )
        self.segment_button = button("Segment nuclei", on_click=self._segment)
        segment_form.addRow(self.segment_button)
        segment_form.addRow(
            note_label(
                "Then check the nuclei layer; fix mistakes with the Labels tools "
                "(paint, erase, fill) before making tiles."
            )
        )
        layout.addWidget(segment_box)

        tiles_box = QGroupBox("Make tiles (one per nucleus)")
        tiles_form = QFormLayout(tiles_box)
        self.labels = layer_picker(
            napari_viewer,
            Labels,
            "The nuclei to tile, as they are now in this Labels layer (your corrections count).",
        )
        tiles_form.addRow("Nuclei", self.labels.native)
        self.tile_form = ConfigForm(TileConfig, TILE_ROWS)
        self.tile_form.add_rows(tiles_form)
        self.tile_size, self.border = self.tile_form.native("size"), self.tile_form.native("border")
        self.tile_button = button("Make tiles", on_click=self._make_tiles)
        tiles_form.addRow(self.tile_button)
        layout.addWidget(tiles_box)

        self.status = note_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.segment_form["backend"].changed.connect(self._backend_changed)
        self.nuclear.changed.connect(self._nuclear_changed)
        self.follow(
            session_changed=self._show_session, nuclei_changed=self._nuclei_changed,
            task_state=self._task_state, status=self.show_status,
        )
        self._backend_changed(self.segment_form["backend"].value)
        self._show_session()
        self._pick_nuclear_default()
        self._nuclear_changed(self.nuclear.value)
        connect_while_alive(self, napari_viewer.layers.events.inserted, self._pick_nuclear_default)

    # ------------------------------------------------------------------------------------------

    def show_status(self, text: str) -> None:
        """One short line in the status label; the full text in its tooltip and, when cut, in the log."""
        short = one_line(text)
        self.status.setText(short)
        self.status.setToolTip(text if short != text.strip() else "")
        if short != text.strip():
            logger.info("Segment step status (in full): %s", text)

    def segmentation_config(self) -> SegmentConfig:
        return SegmentConfig(**self.segment_form.values())

    def tile_config(self) -> TileConfig:
        return TileConfig(**self.tile_form.values())

    @reports_errors("Segmentation")
    def _segment(self, *_):
        layer = self.nuclear.value
        if layer is None:
            raise InputError("open the images first (File > Open, or File > Open Sample > phenossl)")
        return self.controller.segment(layer, self.segmentation_config())

    @reports_errors("Making tiles")
    def _make_tiles(self, *_):
        return self.controller.make_tiles(
            self.channels.checked_layers(), self.nuclear.value, self.labels.value, self.tile_config()
        )

    def _choose_session(self, *_):
        choose_session_folder(self, self.controller, "Session folder")

    def _backend_changed(self, backend: str) -> None:
        for name in ("model", "weights"):
            self.segment_form.set_visible(name, backend == "cellpose")

    def _show_session(self) -> None:
        folder = self.controller.session.folder
        exists = "" if folder.exists() else " (made when the tiles are)"
        self.session_label.setText(f"{folder}{exists}")

    def _pick_nuclear_default(self, *_) -> None:
        """Preselect the nuclear stain (DNA, DAPI, Hoechst...) unless the user already picked one."""
        layers = list(self.nuclear.choices)
        current = self.nuclear.value
        names = [channel_name(layer) for layer in layers]
        if layers and (current is None or channel_name(current).lower() not in NUCLEAR_NAMES):
            self.nuclear.value = layers[guess_nuclear_index(names)]

    def _nuclear_changed(self, layer) -> None:
        if layer is None:
            self.shape_label.setText("Open a plate: File > Open (a folder of TIFFs) or File > Open Sample.")
            return
        try:
            text = stack_shape_text(layer)
        except Exception as exc:  # a layer phenossl cannot use: say why right here
            self.shape_label.setText(str(exc))
            return
        info = PlateInfo.from_metadata(layer.metadata)
        if info is not None and info.padded:
            text += " (fields of different sizes, padded)"
        self.shape_label.setText(text)

    def _nuclei_changed(self) -> None:
        if self.controller.labels_layer is not None:
            self.labels.value = self.controller.labels_layer

    def _task_state(self, task: str, running: bool) -> None:
        if task == "segment":
            show_busy(self.segment_button, running, "Segment nuclei", "Segmenting…")
        elif task == "tiles":
            show_busy(self.tile_button, running, "Make tiles", "Making tiles…")
