"""Helpers for the napari plugin's tests: a small piece of the bundled plate, and functions that drive the
widgets as a user would and wait on the controller's signals (never on raw event-loop sleeps)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

TRAIN_FAST = {"epochs": 1, "batch": 32, "resolution": 32}


def small_plate_layers(n_fields: int = 2) -> list:
    """The sample plate's layer data cut to its first ``n_fields`` fields (metadata cut to match)."""
    from phenossl.napari.reader import sample_plate

    layers = []
    for data, kwargs, kind in sample_plate():
        kwargs = copy.deepcopy(kwargs)
        meta = kwargs["metadata"]["phenossl"]
        for key in ("keys", "shapes", "plates", "wells", "sites"):
            meta[key] = meta[key][:n_fields]
        meta["field_table"] = meta["field_table"][:n_fields]
        layers.append((np.ascontiguousarray(data[:n_fields]), kwargs, kind))
    return layers


def add_layers(viewer, layer_data: list) -> list:
    return [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layer_data]


def wait_task(qtbot, controller, task: str, action: Callable[[], object], timeout: int = 120_000):
    """Run ``action`` (a click) and wait until the controller says ``task`` has finished."""
    with qtbot.waitSignal(
        controller.task_state,
        timeout=timeout,
        check_params_cb=lambda name, running: name == task and not running,
    ):
        result = action()
    return result


def click(qtbot, button) -> None:
    from qtpy.QtCore import Qt

    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def segment_and_tile(qtbot, widget, tile_size: int = 48) -> None:
    """Step 1 through the widget: segment (classical), then tiles with padding at the border."""
    segment = widget.segment
    wait_task(qtbot, widget.controller, "segment", lambda: click(qtbot, segment.segment_button))
    segment.tile_size.setValue(tile_size)
    segment.border.setCurrentIndex(segment.border.findData("pad"))
    wait_task(qtbot, widget.controller, "tiles", lambda: click(qtbot, segment.tile_button))


def set_fast_training(widget, **overrides) -> None:
    settings = {**TRAIN_FAST, **overrides}
    widget.train.epochs.setValue(settings["epochs"])
    widget.train.batch.setValue(settings["batch"])
    widget.train.resolution.setValue(settings["resolution"])
    widget.train.device.setCurrentIndex(
        widget.train.device.count() - 1
    )  # the CPU (last): tests are CPU-sized
