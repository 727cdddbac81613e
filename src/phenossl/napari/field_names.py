"""Name the field a plate stack shows: the slider's axis reads "field" and a text overlay says which one.

A plate opens as (F, Y, X) layers, so napari's slider shows a bare number (its axis label "-3"). A
biologist thinks in plate, well and site; those are in each layer's ``PlateInfo``. ``field_caption`` is
the pure text; ``install_field_names`` keeps the viewer's axis label and its text overlay in step
with the slider (``viewer.dims.events.current_step``) and with the layers added or removed.
"""

from __future__ import annotations

import weakref
from typing import Any

from phenossl.napari.plate import PlateInfo

FIELD_AXIS_LABEL = "field"
SEPARATOR = " · "

_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def field_caption(info: PlateInfo, index: int) -> str:
    """``"Week1_22123 · B02 · site 1"`` for field ``index``: its known plate, well and site, else its key."""
    if not 0 <= index < info.n_fields:
        raise IndexError(f"field {index} is outside this plate's {info.n_fields} field(s)")
    plate, well, site = info.plates[index], info.wells[index], info.sites[index]
    parts = [str(part) for part in (plate, well) if part not in (None, "")]
    if site is not None:
        parts.append(f"site {site}")
    return SEPARATOR.join(parts) if parts else str(info.keys[index])


def plate_layer(layers: Any) -> Any | None:
    """The topmost layer that is a stack of several plate fields (F, Y, X), else None."""
    for layer in reversed(list(layers)):
        info = PlateInfo.from_metadata(getattr(layer, "metadata", None))
        if info is not None and info.n_fields > 1 and getattr(layer, "ndim", 0) == 3:
            return layer
    return None


class FieldNames:
    """Keeps one viewer's field axis label and caption up to date (made by ``install_field_names``)."""

    def __init__(self, viewer: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self.shown: str | None = None  # the caption this object put in the overlay (others' text is left alone)
        viewer.dims.events.current_step.connect(self.update)
        viewer.layers.events.inserted.connect(self.update)
        viewer.layers.events.removed.connect(self.update)
        viewer.layers.events.moved.connect(self.update)
        self.update()

    def update(self, *_: Any) -> None:
        viewer = self._viewer_ref()
        if viewer is None:
            return
        layer = plate_layer(viewer.layers)
        index = None if layer is None else current_field(viewer, layer)
        if layer is None or index is None:
            self._hide(viewer)
            return
        axis = viewer.dims.ndim - 3  # (F, Y, X) layers sit on the last three world axes
        labels = list(viewer.dims.axis_labels)
        if labels[axis] != FIELD_AXIS_LABEL:
            labels[axis] = FIELD_AXIS_LABEL
            viewer.dims.axis_labels = tuple(labels)
        info = PlateInfo.from_metadata(layer.metadata)
        caption = f"{FIELD_AXIS_LABEL} {index + 1}/{info.n_fields}: {field_caption(info, index)}"
        overlay = text_overlay(viewer)
        if self.shown is None:
            overlay.position = "top_left"
        overlay.text = caption
        overlay.visible = True
        self.shown = caption

    def _hide(self, viewer: Any) -> None:
        overlay = text_overlay(viewer)
        if self.shown is not None and overlay.text == self.shown:
            overlay.text = ""
            overlay.visible = False
        self.shown = None


def text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay: ``viewer.canvas.overlays.text`` since napari 0.9, ``viewer.text_overlay`` before."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays["text"] if overlays is not None and "text" in overlays else viewer.text_overlay


def current_field(viewer: Any, layer: Any) -> int | None:
    """The index of the field the slider shows in ``layer`` (None when the slider is past its fields)."""
    axis = viewer.dims.ndim - 3
    world = float(viewer.dims.point[axis])
    index = round((world - float(layer.translate[0])) / float(layer.scale[0]))
    info = PlateInfo.from_metadata(layer.metadata)
    return index if info is not None and 0 <= index < info.n_fields else None


def install_field_names(viewer: Any) -> FieldNames:
    """Name the fields of the plates shown in ``viewer`` from now on (once per viewer; calling again is free)."""
    names = _INSTALLED.get(viewer)
    if names is None:
        names = _INSTALLED[viewer] = FieldNames(viewer)
    return names
