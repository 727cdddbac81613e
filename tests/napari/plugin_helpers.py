"""Helpers for the napari plugin's tests: a small piece of the bundled plate, and functions that drive the
widgets as a user would and wait on the controller's signals (never on raw event-loop sleeps)."""

from __future__ import annotations

import copy
import itertools
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


def changed_under_best_matching(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Cells whose cluster changed, by brute force: try every one-to-one matching of B's clusters to A's
    (B must not have more clusters) and keep the one that keeps the most cells together."""
    ids_a, ids_b = np.unique(labels_a), np.unique(labels_b)
    best = None
    for partners in itertools.permutations(ids_a.tolist(), len(ids_b)):
        as_a = np.asarray(partners)[np.searchsorted(ids_b, labels_b)]  # each cell's B cluster as an A id
        if best is None or (as_a == labels_a).sum() > (best == labels_a).sum():
            best = as_a
    return np.flatnonzero(best != labels_a)


def embedded_run(controller, *, seed: int = 0, k: int = 3, embeddings: np.ndarray | None = None):
    """A run of the viewer's session with made-up embeddings (random, or ``embeddings``) and UMAP layout, as if
    trained and embedded: for tests of what comes after training, without the training."""
    from phenossl.napari.session import run_config

    config = run_config(
        train={"device": "cpu"},
        segmentation={},
        tiles={"size": 48, "border": "pad"},
        input_section={"kind": "plate"},
        cluster={"k": k},
        seed=seed,
    )
    record = controller.session.new_run(config)
    record.status = "trained"
    rng = np.random.default_rng(seed)
    n_cells = controller.session.store.n_cells
    if embeddings is None:
        embeddings = rng.normal(size=(n_cells, 8))
    np.save(record.paths.embeddings, np.asarray(embeddings, dtype=np.float32))
    np.save(record.paths.umap, rng.normal(size=(n_cells, 2)))  # a layout already made: no UMAP compile
    controller.runs_changed.emit()
    return record


def embeddings_following(values, *, seed: int = 0, dims: int = 8, signal: int = 6) -> np.ndarray:
    """Made-up embeddings whose first ``signal`` dimensions are ``values`` (standardised, a little noise added)
    and the rest noise: a run whose clusters follow that variable."""
    values = np.asarray(values, dtype=np.float64)
    values = (values - values.mean()) / (values.std() or 1.0)
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(values.size, dims))
    noise[:, :signal] = values[:, None] + 0.2 * noise[:, :signal]
    return noise.astype(np.float32)


def drag_lasso(canvas, axes, corners) -> None:
    """Draw a lasso on a matplotlib canvas as the mouse does (press, moves, release: the canvas events a
    LassoSelector listens to); ``corners`` are in data coordinates."""
    from matplotlib.backend_bases import MouseButton, MouseEvent

    canvas.draw()
    path = axes.transData.transform(np.asarray(corners, dtype=float))
    steps = [("button_press_event", path[0])]
    steps += [("motion_notify_event", point) for point in [*path[1:], path[0]]]
    steps += [("button_release_event", path[0])]
    for name, (x, y) in steps:
        canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, button=MouseButton.LEFT))
