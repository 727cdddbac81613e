"""Small Qt pieces shared by the widgets: error reporting for button handlers, images as pixmaps, layer
pickers that follow the viewer's layer list, and form rows. No phenossl logic here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QSizePolicy,
    QWidget,
)

from phenossl.errors import PhenosslError

logger = logging.getLogger(__name__)


def notify_exception(exc: BaseException, what: str) -> None:
    """Show a problem as a napari notification: the core's own message for a PhenosslError, a short
    line naming the step for anything else (the traceback goes to the log)."""
    from napari.utils.notifications import show_error

    if isinstance(exc, PhenosslError):
        show_error(str(exc))
    else:
        logger.error("%s failed", what, exc_info=exc)
        show_error(f"{what} failed: {type(exc).__name__}: {exc}")


def reports_errors(what: str) -> Callable:
    """Decorate a button handler so that any exception becomes a notification instead of a silent failure."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                notify_exception(exc, what)
                return None

        return wrapper

    return decorate


@reports_errors("Opening the session folder")
def open_session_folder(controller: Any, folder: str) -> None:
    """Switch the viewer's session to ``folder`` (its tiles and runs are reopened); errors become notifications."""
    controller.set_session_folder(folder)


def choose_session_folder(parent: QWidget, controller: Any, title: str = "Open a phenossl session folder") -> None:
    """Ask for a session folder and switch to it: the Segment and Runs steps both offer this."""
    folder = QFileDialog.getExistingDirectory(parent, title, str(controller.session.folder.parent))
    if folder:
        open_session_folder(controller, folder)


def connect_while_alive(widget: QWidget, emitter: Any, callback: Callable) -> None:
    """Connect a napari/psygnal event to a widget's method, and disconnect it when the widget is destroyed
    (a closed dock widget must not be called by the viewer's layer list afterwards)."""
    emitter.connect(callback)
    widget.destroyed.connect(functools.partial(_disconnect_quietly, emitter, callback))


def _disconnect_quietly(emitter: Any, callback: Callable, *_: Any) -> None:
    try:
        emitter.disconnect(callback)
    except (RuntimeError, TypeError, ValueError):
        pass


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def rgb_pixmap(rgb: np.ndarray, size: int | None = None) -> QPixmap:
    """An (H, W, 3) uint8 image as a QPixmap, scaled (smoothly) to ``size`` px if given."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    pixmap = QPixmap.fromImage(image)
    if size is not None:
        pixmap = pixmap.scaled(
            size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    return pixmap


def color_swatch(rgba: np.ndarray | tuple, size: int = 12) -> QPixmap:
    rgb = (np.asarray(rgba[:3], dtype=float) * 255).astype(np.uint8)
    return rgb_pixmap(np.broadcast_to(rgb, (size, size, 3)).copy())


def row(*widgets: QWidget, stretch_last: bool = False) -> QWidget:
    """Widgets side by side in one row without margins."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    if not stretch_last:
        layout.addStretch(1)
    return holder


def note_label(text: str = "", *, warning: bool = False) -> QLabel:
    """A wrapped, selectable explanatory line (warnings in amber)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    if warning:
        label.setStyleSheet("color: #f0b400;")
    return label


class LayerCombo(QComboBox):
    """Pick one layer of a type; follows the viewer's layer list (added, removed, renamed layers).

    Layers are held by identity, never found by name."""

    layer_changed = Signal(object)

    def __init__(self, viewer, layer_type: type, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._watched_names: set[int] = set()
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        for emitter in (
            viewer.layers.events.inserted,
            viewer.layers.events.removed,
            viewer.layers.events.changed,
        ):
            connect_while_alive(self, emitter, self.refresh)
        self.currentIndexChanged.connect(lambda _: self.layer_changed.emit(self.layer()))
        self.refresh()

    def layers(self) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, self._type)]

    def refresh(self, *_: Any) -> None:
        current = self.layer()
        self.blockSignals(True)
        self.clear()
        for layer in self.layers():
            self.addItem(layer.name, layer)
            if id(layer) not in self._watched_names:  # follow renames, connecting once per layer
                connect_while_alive(self, layer.events.name, self.refresh)
                self._watched_names.add(id(layer))
        self.blockSignals(False)
        self.set_layer(current)

    def layer(self):
        return self.currentData() if self.count() else None

    def set_layer(self, layer) -> None:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                if i != self.currentIndex():
                    self.setCurrentIndex(i)
                return
        if self.count():
            self.layer_changed.emit(self.layer())


class LayerChecklist(QListWidget):
    """Tick several layers of a type (e.g. the channels to tile); follows the viewer's layer list."""

    selection_changed = Signal()

    def __init__(self, viewer, layer_type: type, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._unticked: set[int] = set()  # ids of layers the user unticked (new layers start ticked)
        connect_while_alive(self, viewer.layers.events.inserted, self.refresh)
        connect_while_alive(self, viewer.layers.events.removed, self.refresh)
        self.itemChanged.connect(self._remember)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        self.blockSignals(True)
        self.clear()
        for layer in self._viewer.layers:
            if isinstance(layer, self._type):
                item = QListWidgetItem(layer.name)
                item.setData(Qt.ItemDataRole.UserRole, layer)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                ticked = id(layer) not in self._unticked
                item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
                self.addItem(item)
        self.blockSignals(False)
        rows = max(1, min(self.count(), 5))
        row_height = max(self.sizeHintForRow(0) if self.count() else 0, self.fontMetrics().height() + 6)
        self.setFixedHeight(rows * row_height + 2 * self.frameWidth() + 4)
        self.selection_changed.emit()

    def _remember(self, item: QListWidgetItem) -> None:
        layer = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self._unticked.discard(id(layer))
        else:
            self._unticked.add(id(layer))
        self.selection_changed.emit()

    def checked_layers(self) -> list:
        return [
            self.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.count())
            if self.item(i).checkState() == Qt.CheckState.Checked
        ]

    def set_checked(self, layers: list) -> None:
        wanted = {id(layer) for layer in layers}
        for i in range(self.count()):
            item = self.item(i)
            item.setCheckState(
                Qt.CheckState.Checked
                if id(item.data(Qt.ItemDataRole.UserRole)) in wanted
                else Qt.CheckState.Unchecked
            )
