"""Layer pickers that follow the viewer's layer list (added, removed, renamed layers); layers are held by
identity, never found by name."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget

from phenossl.napari.qt_helpers import connect_while_alive


def follow_layers(owner: QWidget, viewer: Any, refresh: Callable) -> None:
    """Call ``refresh`` whenever the viewer's layers change or one is renamed, while ``owner`` lives."""
    watched: set[int] = set()

    def on_change(*_: Any) -> None:
        for layer in viewer.layers:
            if id(layer) not in watched:  # follow renames, connecting once per layer
                connect_while_alive(owner, layer.events.name, refresh)
                watched.add(id(layer))
        refresh()

    events = viewer.layers.events
    for emitter in (events.inserted, events.removed, events.changed):
        connect_while_alive(owner, emitter, on_change)
    on_change()


def layers_of(viewer: Any, layer_type: type, *_: Any) -> list[tuple[str, Any]]:
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, layer_type)]


def layer_picker(viewer: Any, layer_type: type, tooltip: str = ""):
    """A magicgui combo box of the viewer's layers of one type (``.value`` is the layer or None).

    Its choices are bound to ``viewer`` rather than left to napari's ``get_layers``, which finds the viewer
    from the Qt parent: a widget being built (or not docked, as in tests) has none yet."""
    from magicgui.widgets import create_widget

    picker = create_widget(
        annotation=layer_type,
        options={
            "widget_type": "ComboBox",
            "choices": functools.partial(layers_of, viewer, layer_type),
            "tooltip": tooltip or None,
        },
    )
    picker.native.setSizeAdjustPolicy(picker.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    picker.native.setMinimumContentsLength(10)
    follow_layers(picker.native, viewer, picker.reset_choices)
    return picker


class LayerChecklist(QListWidget):
    """Tick several layers of a type (e.g. the channels to tile).

    Kept as Qt: magicgui's ``Select`` has no tick boxes and starts new choices unselected, while here a new
    channel layer starts ticked and a layer the user unticked stays unticked."""

    selection_changed = Signal()

    def __init__(self, viewer, layer_type: type, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._unticked: set[int] = set()  # ids of layers the user unticked (new layers start ticked)
        self.itemChanged.connect(self._remember)
        follow_layers(self, viewer, self.refresh)

    def refresh(self, *_: Any) -> None:
        self.blockSignals(True)
        self.clear()
        for name, layer in layers_of(self._viewer, self._type):
            item = QListWidgetItem(name)
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
            checked = id(item.data(Qt.ItemDataRole.UserRole)) in wanted
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
