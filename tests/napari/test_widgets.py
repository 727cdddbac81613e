"""The widgets in a real napari window (Xvfb), driven as a user would: set values, click, wait on signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import (
    changed_under_best_matching,
    click,
    drag_lasso,
    embedded_run,
    segment_and_tile,
    set_fast_training,
    wait_task,
)

from phenossl.errors import InputError

pytestmark = pytest.mark.gui


def test_segment_then_tile_from_the_labels_as_the_user_corrected_them(workflow, qtbot, progress_values):
    viewer, widget = workflow
    controller = widget.controller
    segment = widget.segment
    assert segment.nuclear.value.name == "DNA"  # the nuclear stain is preselected by name
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, segment.segment_button))
    assert progress_values["Segmenting 2 field(s)"] == [1, 2]  # napari's progress bar: one step per field

    labels_layer, points = controller.labels_layer, controller.points_layer
    assert labels_layer in viewer.layers and points in viewer.layers
    assert labels_layer.data.shape == (2, 576, 576)
    features = points.features  # one row per nucleus; the labels layer's row r is label r (napari's rule)
    assert features["label"].is_unique and len(features) == len(points.data) == labels_layer.data.max()
    assert len(labels_layer.features) == labels_layer.data.max() + 1
    assert set(np.unique(labels_layer.data[0])) & set(np.unique(labels_layer.data[1])) == {0}  # plate-unique
    assert points.data[-1][0] == 1  # centroid points live on their field

    removed = int(features["label"].iloc[3])
    labels_layer.data[labels_layer.data == removed] = 0  # the user erases a wrong nucleus
    labels_layer.refresh()
    segment.tile_size.setValue(48)
    wait_task(qtbot, controller, "tiles", lambda: click(qtbot, segment.tile_button))

    store = controller.session.store
    assert store is not None and store.tile_size == 48 and store.path.parent == controller.session.folder
    assert removed not in set(store.cells["label"]) and store.n_cells == len(features) - 1
    assert set(store.cells["label"]) == set(points.features["label"])
    assert (points.features["cell_id"] >= 0).all()  # padded border: every nucleus has a tile
    padded = int(store.cells["padded"].sum())
    assert padded > 0 and f"{padded} tiles reach past the image edge" in segment.status.text()
    key = store.cells["field"].iloc[0]
    assert np.array_equal(store.labels(key), labels_layer.data[0])  # the store keeps the layer's labels
    assert widget.tabs.currentIndex() == 1  # on to the next step


def test_refused_tiles_leave_every_layer_as_it_was(workflow, qtbot, notifications):
    """Two channels of one name are refused before anything changes: the user's own Labels layer (ids
    repeated between fields, which making tiles would renumber) is left untouched and not adopted."""
    import copy

    viewer, widget = workflow
    controller = widget.controller
    dna = viewer.layers["DNA"]
    viewer.add_image(dna.data.copy(), name="DNA again", metadata=copy.deepcopy(dna.metadata))
    drawn = np.zeros(dna.data.shape, dtype=np.int32)
    drawn[:, 100:120, 100:120] = 1  # nucleus 1 in both fields
    mine = viewer.add_labels(drawn.copy(), name="my nuclei")
    layers_before = list(viewer.layers)
    widget.segment.labels.value = mine
    assert {layer.name for layer in widget.segment.channels.checked_layers()} >= {"DNA", "DNA again"}

    click(qtbot, widget.segment.tile_button)
    assert [str(n.message) for n in notifications] == [
        "two channel layers have the same name (['DNA', 'tubulin', 'actin', 'DNA']); rename one"
    ]
    assert np.array_equal(mine.data, drawn) and "cell_id" not in mine.features
    assert controller.labels_layer is None and controller.plate is None and controller.session.store is None
    assert list(viewer.layers) == layers_before and not controller.busy  # no centroid layer, no worker


def test_composition_panels_weight_and_live_preview(workflow, qtbot):
    viewer, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    augment = widget.augment
    panel_a = augment.panel_a

    panel_a.preset.setCurrentText("context")
    assert controller.compositions()["a"].name == "context"
    assert "intensity" not in [t.kind for t in controller.compositions()["a"].transforms]
    panel_a.toggles["intensity"].setChecked(True)
    comp = controller.compositions()["a"]
    assert comp.name == "context-edited" and "intensity" in [t.kind for t in comp.transforms]
    panel_a.magnitudes["random_crop"].setValue(0.6)
    crop = next(t for t in controller.compositions()["a"].transforms if t.kind == "random_crop")
    assert crop.scale == (0.6, 1.0)

    assert not augment.panel_b.isEnabled()  # weight 1: B takes no part in the loss
    augment.weight.setValue(50)
    assert controller.weight_a == 0.5 and augment.panel_b.isEnabled()
    assert "0.50 × A (context-edited) + 0.50 × B (context)" in augment.weight_label.text()

    with qtbot.waitSignal(controller.preview_ready, timeout=60_000) as blocker:
        augment.cell.setValue(5)
    preview = blocker.args[0]
    assert preview.cell_id == 5 and len(preview.views["a"]) == len(preview.views["b"]) == 6
    assert not augment.strip_a.images[0].pixmap().isNull() and not augment.strip_b.images[5].pixmap().isNull()


def _fake_devices(monkeypatch, gpus: list[str], mps: bool) -> None:
    """Make torch report these CUDA GPUs (by name) and MPS, whatever this machine has."""
    from types import SimpleNamespace

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(gpus))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: gpus[index])
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(name=gpus[i], total_memory=80 * 2**30)
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("gpus", "mps", "expected"),
    [
        (["NVIDIA H100", "NVIDIA A40"], True, ["cuda:0", "cuda:1", "mps", "cpu"]),
        ([], True, ["mps", "cpu"]),
        ([], False, ["cpu"]),
    ],
)
def test_device_list_holds_only_real_devices_and_cpu_says_it_is_slower(
    workflow, qtbot, monkeypatch, gpus, mps, expected
):
    from phenossl.napari.widgets.train_widget import TrainWidget

    viewer, widget = workflow
    qtbot.waitUntil(lambda: not widget.controller.busy, timeout=60_000)  # the warm-up imports torch first
    _fake_devices(monkeypatch, gpus, mps)
    train = TrainWidget(viewer)
    qtbot.addWidget(train)
    combo = train.device
    items = [(combo.itemData(i).name, combo.itemText(i)) for i in range(combo.count())]
    assert [name for name, _ in items] == expected  # CUDA GPUs first, then MPS, then the CPU; nothing else
    for index, gpu in enumerate(gpus):
        assert gpu in items[index][1]  # each GPU by its name
    if mps:
        assert "MPS" in items[len(gpus)][1]
    assert "CPU" in items[-1][1]
    assert train.cpu_note.isVisibleTo(train) == (expected == ["cpu"])  # the first device is chosen
    combo.setCurrentIndex(combo.count() - 1)
    assert combo.currentData().kind == "cpu"
    assert train.cpu_note.isVisibleTo(train) and "slower" in train.cpu_note.text()


def test_cancel_stops_within_one_step_and_keeps_the_checkpoint(workflow, qtbot, notifications):
    from phenossl.train import EpochDone, StepProgress

    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget, epochs=4)
    steps_after_cancel = []

    def on_event(event):
        if isinstance(event, EpochDone) and not widget.train.cancel_button.property("pressed"):
            widget.train.cancel_button.setProperty("pressed", True)
            click(qtbot, widget.train.cancel_button)
        elif isinstance(event, StepProgress) and widget.train.cancel_button.property("pressed"):
            steps_after_cancel.append(event.global_step)

    controller.train_event.connect(on_event)
    with qtbot.waitSignal(controller.training_finished, timeout=120_000) as blocker:
        click(qtbot, widget.train.train_button)
    outcome = blocker.args[0]
    assert outcome.status == "cancelled" and "cancelled at epoch 2" in outcome.message
    assert len(steps_after_cancel) <= 1  # the step running when Cancel was pressed, no more
    record = controller.session.runs["run-001"]
    assert record.status == "cancelled" and record.has_checkpoint and not record.has_embeddings
    assert any("last good checkpoint (epoch 1)" in str(n.message) for n in notifications)
    qtbot.waitUntil(lambda: widget.train.train_button.isEnabled(), timeout=10_000)
    assert not widget.train.cancel_button.isEnabled()


def test_cancel_after_the_training_also_stops_the_embedding(workflow, qtbot, notifications):
    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget)
    cancel_enabled_while_embedding = []

    def on_finished(outcome):  # the last step is done; the cells are embedded next
        if outcome.status == "trained":
            click(qtbot, widget.train.cancel_button)

    def on_task(task, running):
        if task == "embed" and running:
            cancel_enabled_while_embedding.append(widget.train.cancel_button.isEnabled())

    controller.training_finished.connect(on_finished)
    controller.task_state.connect(on_task)
    wait_task(qtbot, controller, "embed", lambda: click(qtbot, widget.train.train_button), timeout=180_000)
    record = controller.session.runs["run-001"]
    assert cancel_enabled_while_embedding == [True]  # Cancel stays available after the training
    assert record.has_checkpoint and not record.has_embeddings and controller.active is None
    assert [str(n.message) for n in notifications if "Embedding cancelled" in str(n.message)]
    assert "Embedding cancelled" in widget.train.status.text()
    qtbot.waitUntil(lambda: not controller.busy, timeout=10_000)
    assert not widget.train.cancel_button.isEnabled() and widget.train.train_button.isEnabled()


def test_errors_in_clicks_and_result_handlers_are_clean_notifications(
    workflow, qtbot, notifications, monkeypatch
):
    import dataclasses

    from phenossl.napari import controller as controller_module

    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    record = embedded_run(controller, k=3)
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy, timeout=10_000)  # its worker has reported finished
    gallery = widget.clusters.gallery
    cell = int(record.clustering.nearest[0][0])
    field = record.tile_store().cells["field"].iloc[cell]
    # the cell's field is no longer among the layers' (here: renamed): the click cannot go there
    renamed = [f"{key}-renamed" for key in controller.plate.keys]
    controller.plate = dataclasses.replace(controller.plate, keys=renamed)
    notifications.clear()
    click(qtbot, gallery.buttons[0][0])
    assert [str(n.message) for n in notifications] == [
        f"cell {cell} is in field {field}, which is not among the layers' fields"
    ]

    def broken(*args, **kwargs):  # a failure on the main thread, in the recluster's result handler
        raise InputError("the nuclei layer has no 'label' column")

    monkeypatch.setattr(controller_module, "cluster_sizes_text", broken)
    notifications.clear()
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, widget.clusters.recluster_button))
    assert [str(n.message) for n in notifications] == ["the nuclei layer has no 'label' column"]
    assert "Clustering failed: the nuclei layer has no 'label' column" in widget.clusters.status.text()


def test_core_and_unexpected_errors_reach_the_user_once(workflow, qtbot, notifications, monkeypatch):
    viewer, widget = workflow
    controller = widget.controller
    segment = widget.segment

    segment.tile_button.click()  # nothing segmented yet: refused on the spot, with the reason
    assert any("segment the nuclei first" in str(n.message) for n in notifications)

    blank = viewer.add_image(np.zeros((2, 64, 64), dtype=np.uint16), name="blank")
    segment.nuclear.value = blank
    notifications.clear()
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, segment.segment_button))
    errors = [n for n in notifications if "No nuclei were found" in str(n.message)]
    assert len(errors) == 1  # one notification, the core's own message
    assert "failed" in segment.status.text() and segment.segment_button.isEnabled()

    segment.nuclear.value = viewer.layers["DNA"]  # cellpose with a weights file that is not there
    segment.backend.setCurrentText("cellpose")
    assert segment.weights.isVisibleTo(segment)
    segment.weights.setText(str(viewer.layers["DNA"].name + "_missing_weights.pt"))
    notifications.clear()
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, segment.segment_button))
    assert [str(n.message) for n in notifications if "weights file" in str(n.message)]
    assert "does not exist" in str(notifications[0].message) and len(notifications) == 1
    segment.backend.setCurrentText("classical")

    import phenossl.tiles.build

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(phenossl.tiles.build, "segment_field", broken)
    notifications.clear()
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, segment.segment_button))
    messages = [str(n.message) for n in notifications]
    assert messages == ["Segmentation failed unexpectedly (ValueError: boom)."]


def test_viewer_stays_responsive_while_training(workflow, qtbot):
    """A 20 ms QTimer keeps ticking while a training worker runs: the UI thread is never blocked long.
    napari's progress bar (the activity dialog's) moves with every training event."""
    from qtpy.QtCore import QElapsedTimer, QTimer

    from phenossl.napari import tasks

    viewer, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget, tile_size=64)
    set_fast_training(widget, epochs=2, resolution=64)
    controller.explore_after_training = False  # measure training alone
    widget.tabs.setCurrentIndex(2)  # the loss curve is on screen and redrawn
    clock, gaps, last = QElapsedTimer(), [], [0]

    def tick():
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    events, bar_values, bar_ranges = [], [], []

    def read_progress_bar(_event):
        """napari's progress bar for this training, as the activity dialog shows it."""
        from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

        dialog = viewer.window._qt_window._activity_dialog
        bars = [
            bar
            for bar in dialog.findChildren(QtLabeledProgressBar)
            if bar.progress is not None and str(bar.progress.desc) == "Training run-001"
        ]
        assert len(bars) == 1
        bar_values.append(bars[0].qt_progress_bar.value())
        bar_ranges.append((bars[0].qt_progress_bar.minimum(), bars[0].qt_progress_bar.maximum()))

    controller.train_event.connect(events.append)
    controller.train_event.connect(read_progress_bar)
    with qtbot.waitSignal(controller.training_finished, timeout=180_000) as blocker:
        click(qtbot, widget.train.train_button)
        clock.start()
        timer.start()
    timer.stop()
    duration_ms = clock.elapsed()
    assert blocker.args[0].status == "trained" and len(events) > 4
    total = tasks.expected_events(controller.session.store.n_cells, controller.session.runs["run-001"].config)
    # the bar moves one step per event (read as each arrives, before the bar takes it) up to the end; the set-up's
    # first events come within milliseconds of the start, before napari has drawn the bar (its value still -1; napari
    # then starts its range at the count it has reached)
    from phenossl.train import SETUP_PHASES

    drawn = next(i for i, value in enumerate(bar_values) if value >= 0)
    assert drawn < len(SETUP_PHASES) and bar_values[drawn:] == list(range(drawn, len(events))) and len(events) == total
    assert set(bar_ranges[drawn:]) == {(drawn, total)}
    gaps = np.array(gaps[1:])
    expected_ticks = duration_ms / 20
    print(
        f"\nevent loop while training {duration_ms / 1000:.1f} s: {len(gaps)} ticks of {expected_ticks:.0f} "
        f"ideal; gap mean {gaps.mean():.1f} ms, p95 {np.percentile(gaps, 95):.0f} ms, "
        f"p99 {np.percentile(gaps, 99):.0f} ms, max {gaps.max():.0f} ms"
    )
    assert gaps.max() < 500
    assert len(gaps) > 0.5 * expected_ticks


def test_runs_are_kept_switched_compared_and_reopened(workflow, qtbot, make_napari_viewer):
    from sklearn.metrics import adjusted_mutual_info_score

    from phenossl.napari.widgets.runs_widget import runs_dock

    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget)
    with qtbot.waitSignal(controller.umap_changed, timeout=180_000):
        click(qtbot, widget.train.train_button)
    first = controller.active
    assert first.name == "run-001" and first.clustering is not None and first.umap is not None

    widget.augment.panel_a.preset.setCurrentText("context")  # retrain with other views, from run-001
    widget.train.init_from.setCurrentIndex(widget.train.init_from.findData("run-001"))
    with qtbot.waitSignal(controller.umap_changed, timeout=180_000):
        click(qtbot, widget.train.train_button)
    second = controller.active
    assert second.name == "run-002" and second.config.train.composition_a.name == "context"
    assert second.config.train.init_from == first.paths.checkpoint
    assert first.paths.root != second.paths.root and first.has_embeddings and second.has_embeddings

    widget.clusters.k.setValue(2)  # run-002 with 2 clusters, run-001 with 4: some cells certainly move
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        click(qtbot, widget.clusters.recluster_button)
    assert first.clustering.k == 4 and second.clustering.k == 2
    assert second.config.cluster.k == 4  # exploring; saving k=2 as run-002's clustering is explicit
    wait_task(qtbot, controller, "save-clustering", controller.save_clustering)
    assert second.config.cluster.k == 2

    runs = widget.runs
    assert runs.table.rowCount() == 2 and "(shown)" in runs.table.item(1, 2).text()
    panel = runs.compare
    panel.pick("run-001", "run-002")
    with qtbot.waitSignal(controller.comparison_ready, timeout=120_000):
        click(qtbot, panel.compare_button)
    comparison = panel.comparison.difference.comparison
    expected_ami = adjusted_mutual_info_score(first.clustering.labels, second.clustering.labels)
    assert comparison.ami == pytest.approx(expected_ami) and comparison.n_cells == first.tile_store().n_cells
    assert f"AMI {expected_ami:.2f}" in panel.reading.text()
    changed = changed_under_best_matching(first.clustering.labels, second.clustering.labels)
    assert changed.size > 0 and np.array_equal(panel.comparison.changed_cells, changed)
    assert f"{changed.size} of {comparison.n_cells} cells" in panel.reading.text()
    made_differently = panel.comparison.difference.differences  # run-002's other composition, its start...
    assert made_differently and all(f"• {line}" in panel.made.text() for line in made_differently)

    runs.table.selectRow(0)
    with qtbot.waitSignal(controller.clustering_changed, timeout=30_000):
        click(qtbot, runs.show_button)
    assert controller.active is first
    qtbot.waitUntil(lambda: not controller.busy, timeout=30_000)  # the layers are painted in a worker
    colors = controller.cluster_colors()
    features = controller.points_layer.features
    row = features.index[features["cell_id"] >= 0][0]
    expected = colors[first.clustering.labels[features.loc[row, "cell_id"]]]
    assert np.allclose(controller.labels_layer.colormap.map(features.loc[row, "label"]), expected)
    click(qtbot, panel.changed_button)
    assert np.array_equal(controller.selected, changed)

    # a new viewer reopens the session folder: runs, nuclei (from the stored labels), clusters
    other = make_napari_viewer(show=True)
    dock = runs_dock(other)  # the "5. Runs" dock: scrollable, its pictures never squeeze the canvas
    other.window.add_dock_widget(dock, area="right")
    reopened = dock.widget()
    with qtbot.waitSignal(reopened.controller.clustering_changed, timeout=60_000):
        reopened.open_session(str(controller.session.folder))
    assert list(reopened.controller.session.runs) == ["run-001", "run-002"]
    assert reopened.controller.labels_layer is not None and reopened.controller.active.name == "run-002"
    qtbot.waitUntil(lambda: not reopened.controller.busy, timeout=60_000)
    assert isinstance(reopened.controller.labels_layer.features["cluster"].dtype, pd.CategoricalDtype)
    # only run-002 is shown; run-001's clusters come from its folder, no need to show it first
    assert reopened.controller.session.runs["run-001"].clustering is None
    reopened.compare.pick("run-001", "run-002")
    with qtbot.waitSignal(reopened.controller.comparison_ready, timeout=120_000):
        click(qtbot, reopened.compare.compare_button)
    assert reopened.compare.comparison.difference.comparison.ami == pytest.approx(comparison.ami)
    assert np.array_equal(reopened.compare.comparison.changed_cells, changed)


def test_measured_and_untrained_baselines_sit_beside_trained_runs_in_the_evaluation(workflow, qtbot):
    """Measure cells (real cp_measure) and the untrained encoder, from the Train step's baseline buttons; the
    Runs step's evaluation table then sets them side by side on the plate's own labels (the two fields are
    DMSO wells, sparse and dense: density is what there is to separate)."""
    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget)
    with qtbot.waitSignal(controller.clustering_changed, timeout=300_000):
        click(qtbot, widget.train.measure_button)
    measured = controller.active
    assert measured.config.representation == "cellprofiler" and measured.has_embeddings
    assert not measured.has_checkpoint and measured.disk_status() == "measured"
    assert measured.paths.feature_names.is_file() and measured.clustering is not None
    with qtbot.waitSignal(controller.clustering_changed, timeout=180_000):
        click(qtbot, widget.train.untrained_button)
    untrained = controller.active
    assert untrained.config.representation == "random-init" and untrained.has_checkpoint

    runs = widget.runs
    assert runs.eval_label.currentText() == "density_condition"  # compound has one value in these wells
    assert runs.eval_controls.text() == "compound=DMSO"
    with qtbot.waitSignal(controller.evaluation_ready, timeout=120_000):
        click(qtbot, runs.evaluate_button)
    table = runs.evaluation
    assert table.rowCount() == 4  # two runs, as clustered and standardised to the controls
    assert [table.item(r, 0).text() for r in range(4)] == [measured.name] * 2 + [untrained.name] * 2
    assert table.item(1, 1).text() == "to controls"
    assert "Best at separating density_condition" in runs.evaluation_note.text()
    assert "baseline, no training" in runs.table.item(0, 1).text()


LOCK_HOLDER = """
import sys
from phenossl.runlock import run_folder_lock
with run_folder_lock(sys.argv[1], "training (another process)"):
    print("locked", flush=True)
    sys.stdin.read()  # held until the test closes stdin
"""


def _held_by_another_process(folder):
    """A context manager: another process holds ``folder``'s run lock (phenossl.runlock) inside it; yields its pid."""
    import contextlib
    import subprocess
    import sys

    @contextlib.contextmanager
    def held():
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield holder.pid
        finally:
            holder.stdin.close()
            if holder.wait(timeout=30) != 0:
                raise AssertionError(f"the lock holder exited with {holder.returncode}")

    return held()


def test_a_run_folder_busy_in_another_process_is_a_notification_and_the_viewer_stays_usable(
    workflow, qtbot, notifications, monkeypatch
):
    import contextlib

    _, widget = workflow
    controller = widget.controller
    session = controller.session
    segment_and_tile(qtbot, widget)

    # Train: another process (a CLI 'phenossl train') takes the new run's folder as napari creates it
    new_run, holders, others = session.new_run, contextlib.ExitStack(), []

    def taken_by_another_process(config):
        record = new_run(config)
        others.append(holders.enter_context(_held_by_another_process(record.paths.root)))
        return record

    monkeypatch.setattr(session, "new_run", taken_by_another_process)
    set_fast_training(widget)
    notifications.clear()
    with holders:
        with qtbot.waitSignal(controller.training_finished, timeout=60_000) as blocker:
            click(qtbot, widget.train.train_button)
        assert blocker.args[0].status == "failed"
        qtbot.waitUntil(lambda: not controller.busy, timeout=10_000)
    record = session.runs["run-001"]
    messages = [str(n.message) for n in notifications]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"The run folder {record.paths.root.resolve()} is in use by process {others[0]} ")
    assert "training (another process)" in messages[0] and "Nothing was changed" in messages[0]
    assert "Training failed: The run folder" in widget.train.status.text()
    assert record.status == "failed" and not record.has_checkpoint
    assert widget.train.train_button.isEnabled() and not widget.train.cancel_button.isEnabled()
    monkeypatch.undo()

    # Keeping a clustering: the shown run's folder is held by another process
    from qtpy.QtWidgets import QMessageBox

    record = embedded_run(controller, k=3)
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy, timeout=10_000)
    before = record.paths.clusters.read_bytes()
    widget.clusters.k.setValue(4)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with _held_by_another_process(record.paths.root) as pid:
        # exploring only reads the run folder: it works while another process writes there
        wait_task(qtbot, controller, "cluster", lambda: click(qtbot, widget.clusters.recluster_button))
        assert record.clustering.k == 4
        notifications.clear()
        wait_task(qtbot, controller, "save-clustering", lambda: click(qtbot, widget.clusters.save_button))
        messages = [str(n.message) for n in notifications]
        assert len(messages) == 1, messages
        assert messages[0].startswith(f"The run folder {record.paths.root.resolve()} is in use by process {pid} ")
        assert "Saving the clustering failed: The run folder" in widget.clusters.status.text()
        assert record.paths.clusters.read_bytes() == before and record.config.cluster.k == 3  # nothing changed
        qtbot.waitUntil(lambda: not controller.busy, timeout=30_000)  # the recluster's paint may still run
        assert widget.clusters.save_button.isEnabled()
    # the other process is gone: the same click works, the viewer was never stuck
    notifications.clear()
    wait_task(qtbot, controller, "save-clustering", lambda: click(qtbot, widget.clusters.save_button))
    assert record.config.cluster.k == 4 and pd.read_csv(record.paths.clusters)["cluster"].nunique() == 4
    assert not [n for n in notifications if "in use" in str(n.message)]


def _shown_clusters(qtbot, widget, k: int, tile_size: int = 48):
    """Tiles of the two fields and a run with made-up embeddings and layout, clustered and shown in step 4."""
    controller = widget.controller
    segment_and_tile(qtbot, widget, tile_size=tile_size)
    record = embedded_run(controller, k=k)
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy, timeout=20_000)
    widget.tabs.setCurrentIndex(3)
    return record


def _icon_pixels(button, px: int) -> np.ndarray:
    """The (px, px, 3) RGB pixels a button's icon shows."""
    from qtpy.QtCore import QSize
    from qtpy.QtGui import QImage

    image = button.icon().pixmap(QSize(px, px)).toImage().convertToFormat(QImage.Format.Format_RGB888)
    stride, height, width = image.bytesPerLine(), image.height(), image.width()
    bits = image.constBits()
    bits.setsize(stride * height)  # PyQt's pointer to the pixels
    return np.frombuffer(bits, dtype=np.uint8).reshape(height, stride)[:, : width * 3].reshape(height, width, 3).copy()


def _near(where: np.ndarray, of: np.ndarray, px: float) -> np.ndarray:
    """For each True pixel of ``where``: is one of ``of``'s True pixels within ``px``?"""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~of)[where] <= px


def test_gallery_shows_the_embedded_crop_with_the_nucleus_outlined_at_the_chosen_size(workflow, qtbot, monkeypatch):
    """Each thumbnail is the centre crop the run's model embedded (the morphology preset's 'auto' crop: about
    three nucleus diameters of these 128 px tiles), 112 px by default, resized with the spin box, with the
    central nucleus outlined in white; a legend row of every cluster sits above the gallery, in view; the export
    dialog starts in the session folder."""
    from pathlib import Path

    from PIL import Image
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QFileDialog
    from skimage.segmentation import find_boundaries

    from phenossl.augment.specs import kept_fraction, resolve_composition
    from phenossl.napari.tasks import to_rgb8
    from phenossl.napari.thumbnails import OUTLINE_RGB

    viewer, widget = workflow
    viewer.window.resize(1400, 900)
    controller = widget.controller
    record = _shown_clusters(qtbot, widget, k=3, tile_size=128)
    clusters, gallery = widget.clusters, widget.clusters.gallery
    store = record.tile_store()
    composition = resolve_composition(record.config.train.composition_a, store.nucleus_diameter, store.tile_size)
    crop = kept_fraction(composition.transforms) * store.tile_size
    assert crop < 0.65 * store.tile_size  # about three nuclei, not the whole tile
    view = gallery.view
    assert abs(view.crop_px - crop) <= 1 and f"central {view.crop_px} px of the 128 px tile" in clusters.view_note.text()

    def check_thumbnail(cluster: int, place: int, px: int) -> None:
        cell = int(record.clustering.nearest[cluster][place])
        button = gallery.buttons[cluster][place]
        shown = _icon_pixels(button, px)
        assert button.iconSize().width() == px and shown.shape == (px, px, 3)
        # what is shown is what was rendered (up to the display's colour depth: Xvfb may hold 16-bit pixmaps)
        assert np.abs(shown.astype(int) - gallery.images[cluster][place]).max() <= 8
        box = slice(view.start, view.start + view.crop_px)
        mask = np.asarray(store.masks[cell])[box, box]
        big_mask = np.asarray(Image.fromarray(mask * 255).resize((px, px), Image.Resampling.NEAREST)) > 0
        edge = find_boundaries(big_mask, mode="inner")
        white = np.all(shown == OUTLINE_RGB, axis=2)
        assert edge.sum() > 20 and _near(edge, white, 1.5).mean() > 0.9  # the nucleus' edge is drawn
        assert _near(white, edge, 2.5).mean() > 0.95  # and little else is white
        # the picture is the tile's centre crop (PIL resizes it here), not the whole tile
        def resized(rgb):
            return np.asarray(Image.fromarray(rgb).resize((px, px), Image.Resampling.BILINEAR), dtype=float)

        from scipy.ndimage import distance_transform_edt

        away = distance_transform_edt(~white) > 2  # the picture itself, off the outline
        tile = np.asarray(store.tiles[cell], dtype=np.float32)
        crop_error = np.abs(resized(to_rgb8(tile[:, box, box])) - shown)[away].mean()
        whole_error = np.abs(resized(to_rgb8(tile)) - shown)[away].mean()
        assert crop_error < 6 and whole_error > 3 * crop_error, (crop_error, whole_error)

    assert clusters.thumb_size.value() == 112
    check_thumbnail(1, 0, 112)
    clusters.thumb_size.setValue(160)
    assert gallery.view.crop_px == view.crop_px and len(gallery.buttons[2]) == len(record.clustering.nearest[2])
    check_thumbnail(2, 1, 160)

    # the legend: every cluster with its size, above the gallery and on screen without scrolling
    legend = clusters.legend
    sizes = np.bincount(record.clustering.labels, minlength=3)
    assert [entry.text() for entry in legend.entries] == [f"{c} · {sizes[c]:,}" for c in range(3)]
    assert all(entry.isVisible() and not entry.visibleRegion().isEmpty() for entry in legend.entries)
    assert legend.mapTo(clusters, QPoint(0, 0)).y() < clusters.gallery_scroll.mapTo(clusters, QPoint(0, 0)).y()
    click(qtbot, legend.entries[2])
    assert np.array_equal(controller.selected, np.flatnonzero(record.clustering.labels == 2))

    # the export dialog opens in the session folder
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: asked.append(a) or ("", ""))
    click(qtbot, clusters.export_button)
    assert asked and Path(asked[0][2]) == controller.session.folder / f"{record.name}_clusters.csv"

    # k=10 with 8 typical cells: the gallery is rebuilt on the UI thread, so it must stay quick
    clusters.k.setValue(10)
    clusters.n_nearest.setValue(8)
    clusters.thumb_size.setValue(112)
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, clusters.recluster_button))
    assert sum(len(images) for images in gallery.images.values()) == 80 and len(legend.entries) == 10
    print(f"\ngallery of 10 x 8 cells ({store.tile_size} px tiles, 112 px thumbnails) built in {gallery.build_ms:.0f} ms")
    assert gallery.build_ms < 2000


def _mouse(canvas, name: str, x: float, y: float, **kwargs) -> None:
    """A matplotlib mouse event at display point (x, y), as the Qt canvas sends it."""
    from matplotlib.backend_bases import MouseEvent

    canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, **kwargs))


def test_umap_legend_colour_by_column_hover_and_zoom_keep_the_lasso(workflow, qtbot):
    from matplotlib import colormaps
    from matplotlib.backend_bases import MouseButton
    from scipy.spatial import cKDTree

    viewer, widget = workflow
    viewer.window.resize(1400, 900)
    controller = widget.controller
    record = _shown_clusters(qtbot, widget, k=4)
    umap = widget.umap
    qtbot.waitUntil(lambda: bool(umap._groups), timeout=10_000)
    labels, xy, cells = record.clustering.labels, np.asarray(record.umap), record.tile_store().cells
    canvas, axes = umap.canvas, umap.axes
    assert canvas.height() >= 240 and umap.colour_by.currentText() == "cluster"

    # by cluster: the viewer's palette, and a legend naming every cluster with its size
    assert np.allclose(umap.drawn_colours(), controller.cluster_colors()[labels])
    sizes = np.bincount(labels, minlength=4)
    assert [t.get_text() for t in umap._legend.get_texts()] == [f"{c} ({sizes[c]})" for c in range(4)]

    # by a treatment column: one colour per value, and the legend says which
    umap.colour_by.setCurrentText("density_condition")
    faces = umap.drawn_colours()
    groups = cells.groupby("density_condition").indices
    assert len(groups) == 2
    firsts = {value: tuple(faces[rows[0]]) for value, rows in groups.items()}
    assert len(set(firsts.values())) == 2
    assert all(np.allclose(faces[rows], firsts[value]) for value, rows in groups.items())
    counts = cells["density_condition"].value_counts()
    assert {t.get_text() for t in umap._legend.get_texts()} == {f"{v} ({n})" for v, n in counts.items()}
    # by a number: a colour scale and its bar, no legend
    umap.colour_by.setCurrentText("area")
    faces = umap.drawn_colours()
    area = cells["area"].to_numpy()
    assert umap._legend is None and umap._colorbar_axes is not None
    assert np.allclose(faces[area.argmax()], colormaps["viridis"](1.0))
    assert np.allclose(faces[area.argmin()], colormaps["viridis"](0.0))
    umap.colour_by.setCurrentText("cluster")
    assert np.allclose(umap.drawn_colours(), controller.cluster_colors()[labels])

    # hover: the cell under the mouse is named (the one farthest from its neighbours, so it is unambiguous)
    canvas.draw()
    on_screen = axes.transData.transform(xy)
    gaps, _ = cKDTree(on_screen).query(on_screen, k=2)
    cell = int(np.argmax(gaps[:, 1]))
    assert gaps[cell, 1] > 10
    x, y = on_screen[cell]
    _mouse(canvas, "motion_notify_event", x + 2, y - 1)
    assert umap.hovered == cell
    text = umap.hover_label.text()
    assert text.startswith(f"cell {cell}, cluster {labels[cell]}\nfield {cells['field'].iloc[cell]}")
    assert f"density_condition {cells['density_condition'].iloc[cell]}" in text
    # two cells close together on screen: the nearer one is named
    tree = cKDTree(on_screen)
    pairs = np.array(sorted(tree.query_pairs(12.0), key=lambda p: np.linalg.norm(on_screen[p[0]] - on_screen[p[1]])))
    a, b = next((a, b) for a, b in pairs if np.linalg.norm(on_screen[a] - on_screen[b]) > 3)
    for near, far in ((a, b), (b, a)):
        _mouse(canvas, "motion_notify_event", *(on_screen[near] + 0.3 * (on_screen[far] - on_screen[near])))
        assert umap.hovered == near
    # an empty spot of the plot names nothing; nor does a point outside it
    box = axes.bbox
    grid = np.stack(np.meshgrid(np.linspace(box.x0 + 5, box.x1 - 5, 60), np.linspace(box.y0 + 5, box.y1 - 5, 60)),
                    axis=-1).reshape(-1, 2)
    empty = grid[np.argmax(tree.query(grid)[0])]
    assert tree.query(empty)[0] > 3 * 6
    _mouse(canvas, "motion_notify_event", *empty)
    assert umap.hovered is None and umap.hover_label.text().startswith("Point at a cell")
    _mouse(canvas, "motion_notify_event", x + 2, y - 1)
    _mouse(canvas, "motion_notify_event", 1, 1)  # outside the axes
    assert umap.hovered is None and str(cell) not in umap.hover_label.text()

    # zoom with the wheel about that cell: it stays under the mouse, and the lasso selects what it encloses
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()
    _mouse(canvas, "scroll_event", x, y, step=2)
    (zx0, zx1), (zy0, zy1) = axes.get_xlim(), axes.get_ylim()
    assert (zx1 - zx0) == pytest.approx((x1 - x0) / 1.25**2) and (zy1 - zy0) == pytest.approx((y1 - y0) / 1.25**2)
    canvas.draw()
    assert np.allclose(axes.transData.transform(xy[cell]), (x, y), atol=0.5)
    cx, cy = xy[cell]
    hx = 0.9 * min((zx1 - zx0) / 4, cx - zx0, zx1 - cx)  # a box around the cell, inside the zoomed view
    hy = 0.9 * min((zy1 - zy0) / 4, cy - zy0, zy1 - cy)
    box = [(cx - hx, cy - hy), (cx + hx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy)]
    drag_lasso(canvas, axes, box)
    inside = np.flatnonzero((np.abs(xy[:, 0] - cx) < hx) & (np.abs(xy[:, 1] - cy) < hy))
    assert cell in inside and np.array_equal(controller.selected, inside)

    # Pan: a drag moves the view and selects nothing; back to Lasso, a lasso selects again
    umap.pan_button.click()
    before = controller.selected.copy()
    start = axes.transData.transform((cx, cy))
    _mouse(canvas, "button_press_event", *start, button=MouseButton.LEFT)
    _mouse(canvas, "motion_notify_event", start[0] + 40, start[1], button=MouseButton.LEFT)
    _mouse(canvas, "button_release_event", start[0] + 40, start[1], button=MouseButton.LEFT)
    (px0, px1) = axes.get_xlim()
    assert px0 < zx0 and (px1 - px0) == pytest.approx(zx1 - zx0) and np.array_equal(controller.selected, before)
    umap.lasso_button.click()
    (px0, px1), (py0, py1) = axes.get_xlim(), axes.get_ylim()
    dx, dy = (px1 - px0) * 0.01, (py1 - py0) * 0.01  # just inside the frame
    px0, px1, py0, py1 = px0 + dx, px1 - dx, py0 + dy, py1 - dy
    left = [(px0, py0), ((px0 + px1) / 2, py0), ((px0 + px1) / 2, py1), (px0, py1)]
    drag_lasso(canvas, axes, left)
    expected = np.flatnonzero((xy[:, 0] > px0) & (xy[:, 0] < (px0 + px1) / 2) & (xy[:, 1] > py0) & (xy[:, 1] < py1))
    assert expected.size and np.array_equal(controller.selected, expected)
    click(qtbot, umap.reset_button)
    assert axes.get_xlim() == pytest.approx((x0, x1)) and axes.get_ylim() == pytest.approx((y0, y1))


def test_recluster_explores_and_keeping_it_asks_first(workflow, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    _, widget = workflow
    controller = widget.controller
    clusters = widget.clusters
    segment_and_tile(qtbot, widget)
    record = embedded_run(controller, k=3)
    controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy and record.clustering is not None, timeout=60_000)
    assert record.paths.clusters.is_file() and not clusters.save_button.isEnabled()  # the first is saved
    saved = record.paths.clusters.read_bytes()

    clusters.k.setValue(5)
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, clusters.recluster_button))
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert record.clustering.k == 5 and record.config.cluster.k == 3
    assert record.paths.clusters.read_bytes() == saved  # exploring writes nothing
    assert clusters.save_button.isEnabled() and "k=5" in clusters.save_button.text()
    assert "exploring" in clusters.status.text()

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    click(qtbot, clusters.save_button)
    assert "k=3" in asked[0] and "k=5" in asked[0] and "--" not in asked[0]  # no command-line flags
    assert record.paths.clusters.read_bytes() == saved and record.config.cluster.k == 3

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    wait_task(qtbot, controller, "save-clustering", lambda: click(qtbot, clusters.save_button))
    assert record.config.cluster.k == 5 and record.paths.clusters.read_bytes() != saved
    assert not clusters.save_button.isEnabled()
    table = pd.read_csv(record.paths.clusters)
    assert table["cluster"].tolist() == record.clustering.labels.tolist()
