"""Small Qt pieces shared by the widgets: error reporting for button handlers, images as pixmaps, and form
rows. No phenossl logic here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
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


def button(text: str, tooltip: str = "", on_click: Callable | None = None) -> QPushButton:
    """A push button with its tooltip and, if given, its click handler."""
    push = QPushButton(text)
    push.setToolTip(tooltip)
    if on_click is not None:
        push.clicked.connect(on_click)
    return push


def show_busy(push: QPushButton, running: bool, idle_text: str, busy_text: str) -> None:
    """A task's button while it runs: disabled, saying what is going on."""
    push.setEnabled(not running)
    push.setText(busy_text if running else idle_text)


def note_label(text: str = "", *, warning: bool = False) -> QLabel:
    """A wrapped, selectable explanatory line (warnings in amber)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    if warning:
        label.setStyleSheet("color: #f0b400;")
    return label


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area: a tall step scrolls instead of squeezing napari's canvas."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area
