"""Fixtures for the napari plugin's tests (helpers live in plugin_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_helpers import add_layers, embedded_run, segment_and_tile, small_plate_layers


@pytest.fixture
def notifications():
    """Every napari notification shown during the test (message, severity)."""
    from napari.utils.notifications import notification_manager

    seen: list = []

    def record(notification):
        seen.append(notification)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def progress_values():
    """napari progress bars made during the test: description -> the values each went through."""
    from napari.utils.progress import progress

    seen: dict[str, list[int]] = {}

    def added(event):
        for prog in event.added:
            values = seen.setdefault(str(prog.desc), [])
            prog.events.value.connect(lambda e, values=values: values.append(int(e.value)))

    progress._all_instances.events.changed.connect(added)
    yield seen
    progress._all_instances.events.changed.disconnect(added)


@pytest.fixture
def workflow(make_napari_viewer, qtbot, tmp_path: Path, request):
    """A shown viewer with 2 fields of the sample plate (or ``request.param`` fields, with indirect
    parametrisation) and the workflow widget docked, its session folder in tmp_path."""
    from phenossl.napari.widgets.workflow_widget import WorkflowWidget

    viewer = make_napari_viewer(show=True)
    add_layers(viewer, small_plate_layers(getattr(request, "param", 2)))
    widget = WorkflowWidget(viewer)
    viewer.window.add_dock_widget(widget, name="phenossl", area="right")
    widget.controller.set_session_folder(tmp_path / "session")
    yield viewer, widget
    qtbot.waitUntil(lambda: not widget.controller.busy, timeout=180_000)  # no worker may outlive the test


@pytest.fixture
def phenossl_plugin(npe2pm):
    """The installed phenossl manifest, registered in napari's test plugin manager (it discovers none)."""
    with npe2pm.tmp_plugin(package="phenossl") as plugin:
        yield plugin


@pytest.fixture
def clustered(workflow, qtbot):
    """The workflow's 2-field plate segmented, tiled and shown as a clustered run (made-up embeddings)."""
    viewer, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    record = embedded_run(controller, k=3)
    controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy and record.clustering is not None, timeout=60_000)
    return viewer, widget, controller, record
