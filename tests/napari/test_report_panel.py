"""Step 5's "What do the clusters follow?" in a real napari window (Xvfb): the report is of the run and the
clustering shown when the button is clicked, and Save writes what ``phenossl report RUN`` writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import click, embedded_run, segment_and_tile, wait_task

from phenossl.errors import PhenosslError
from phenossl.napari.report_tasks import exploring_source, report_rows, save_report
from phenossl.report.run import SAVED_SOURCE, describe_clusters, run_report

pytestmark = pytest.mark.gui


def _panel_rows(panel) -> list[tuple[str, ...]]:
    table = panel.table
    return [tuple(table.item(r, c).text() for c in range(table.columnCount())) for r in range(table.rowCount())]


def _report_shown(qtbot, controller, panel):
    """Click the report button; the report the panel received."""
    with qtbot.waitSignal(controller.report_ready, timeout=120_000) as blocker:
        click(qtbot, panel.report_button)
    qtbot.waitUntil(lambda: not controller.running("report"), timeout=10_000)
    assert panel.result is blocker.args[0]
    return panel.result


def _expected(record, source: str):
    store = record.tile_store()
    return describe_clusters(record.config, store, record.space.features, record.clustering.labels, source=source)


def test_the_report_is_of_the_shown_run_and_clustering_and_saves_as_the_cli(workflow, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    other = embedded_run(controller, seed=1, k=3)
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(other.name)
    record = embedded_run(controller, seed=0, k=3)  # other embeddings: another report
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    panel = widget.runs.report
    assert not panel.save_button.isEnabled()  # nothing reported yet

    # the run's saved clustering (k=3, saved as it was first clustered)
    result = _report_shown(qtbot, controller, panel)
    expected = _expected(record, SAVED_SOURCE)
    assert result.run == record.name and result.saved
    assert panel.reading.text() == expected.reading
    pd.testing.assert_frame_equal(result.report.table, expected.table)
    assert _panel_rows(panel) == report_rows(expected.table) and panel.table.rowCount() > 3
    assert not panel.chart.pixmap().isNull() and panel.chart.height() > 50
    assert panel.save_button.isEnabled()
    first_rows = _panel_rows(panel)
    assert first_rows != report_rows(_expected(other, SAVED_SOURCE).table)  # the other run reads otherwise

    # another run shown: the report no longer applies
    with qtbot.waitSignal(controller.clustering_changed, timeout=30_000):
        controller.activate_run(other.name)
    assert not panel.save_button.isEnabled() and "report on it again" in panel.save_button.toolTip()
    with qtbot.waitSignal(controller.clustering_changed, timeout=30_000):
        controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)

    # an exploration with k=5, not kept: reported as shown, not savable
    widget.clusters.k.setValue(5)
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, widget.clusters.recluster_button))
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert record.clustering.k == 5 and record.config.cluster.k == 3
    assert not panel.save_button.isEnabled()  # the k=3 report is stale
    result = _report_shown(qtbot, controller, panel)
    expected = _expected(record, exploring_source(5, record.config.seed))
    assert not result.saved and np.array_equal(result.labels, record.clustering.labels) and result.report.k == 5
    assert panel.reading.text() == expected.reading
    pd.testing.assert_frame_equal(result.report.table, expected.table)
    assert _panel_rows(panel) == report_rows(expected.table) != first_rows
    assert not panel.save_button.isEnabled() and "Keep k=5" in panel.save_button.toolTip()
    with pytest.raises(PhenosslError, match="keep the shown clustering"):
        save_report(record, result, overwrite=True)  # the worker refuses it too
    assert not (record.paths.root / "report.csv").exists()

    # kept as the run's clustering, reported again: saved beside the run as 'phenossl report RUN' writes it
    wait_task(qtbot, controller, "save-clustering", controller.save_clustering)
    assert record.config.cluster.k == 5
    result = _report_shown(qtbot, controller, panel)
    assert result.saved and panel.save_button.isEnabled()
    wait_task(qtbot, controller, "save-report", lambda: click(qtbot, panel.save_button))
    names = ("report.csv", "report.md", "report.png")
    saved = {name: (record.paths.root / name).read_bytes() for name in names}
    assert saved["report.png"].startswith(b"\x89PNG") and "report.csv" in panel.status.text()
    cli = run_report(record.paths.root, overwrite=True)
    assert cli.k == 5
    for name in ("report.csv", "report.md"):
        assert (record.paths.root / name).read_bytes() == saved[name], name

    # saving again asks before replacing; "No" leaves the files as they are
    (record.paths.root / "report.md").write_text("earlier\n")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    wait_task(qtbot, controller, "save-report", lambda: click(qtbot, panel.save_button))
    assert len(asked) == 1 and "report.md" in asked[0][2]
    assert (record.paths.root / "report.md").read_text() == "earlier\n"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    wait_task(qtbot, controller, "save-report", lambda: click(qtbot, panel.save_button))
    assert (record.paths.root / "report.md").read_bytes() == saved["report.md"]
