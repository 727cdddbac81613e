"""What every step's dock widget starts with, written once."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QVBoxLayout, QWidget

from phenossl.napari.controller import controller_for


class StepWidget(QWidget):
    """A step of the workflow: its viewer, the viewer's one controller, and a vertical layout
    (``self.layout()``) for the step's boxes."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controller = controller_for(napari_viewer)
        QVBoxLayout(self)

    def follow(self, **slots: Callable | tuple[Callable, ...]) -> None:
        """Connect the controller's signals, by name, to this step's slots (several in the given order)."""
        for signal, slot in slots.items():
            for callback in slot if isinstance(slot, tuple) else (slot,):
                getattr(self.controller, signal).connect(callback)
