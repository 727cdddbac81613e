"""Step 5's "Compare two runs" in a real napari window (Xvfb): two runs whose made-up embeddings follow different
variables (nucleus size; the field, so density and position), compared with the clusters each shows now, as
``phenossl compare`` compares run folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import click, embedded_run, embeddings_following, segment_and_tile, wait_task

from phenossl.report.compare_run import RunSide, difference_of_runs

pytestmark = pytest.mark.gui

PNG = b"\x89PNG\r\n\x1a\n"


def _expected(a, b):
    """``difference_of_runs`` of the two runs' shown clusterings, computed here from their folders."""
    sides = [RunSide(r.name, r.config, r.tile_store(), np.load(r.paths.embeddings), r.clustering.labels)
             for r in (a, b)]
    return difference_of_runs(*sides)


def _compare(qtbot, controller, panel, name_a: str, name_b: str):
    panel.pick(name_a, name_b)
    with qtbot.waitSignal(controller.comparison_ready, timeout=180_000) as blocker:
        click(qtbot, panel.compare_button)
    qtbot.waitUntil(lambda: not controller.running("compare"), timeout=10_000)
    assert panel.comparison is blocker.args[0]
    return panel.comparison


def _reading(panel) -> str:
    """The panel's reading put back together: what B was made with differently (listed), then the rest."""
    made = panel.made.text().splitlines()[1:] if not panel.made.isHidden() else []
    lines = [line.removeprefix("• ") for line in made]
    comparison = panel.comparison.difference
    prefix = f"{comparison.name_b} differs from {comparison.name_a} in: {'; '.join(lines)}. " if lines else ""
    return prefix + panel.reading.text()


def _change(diff, variable: str) -> float:
    return float(diff.variables.set_index("variable").loc[variable, "cluster_ami_change"])


def test_the_comparison_is_of_the_shown_clusterings_and_selects_the_cells_that_moved(workflow, qtbot):
    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    cells = controller.session.store.cells
    size = embedded_run(controller, seed=0, k=3, embeddings=embeddings_following(cells["area"], seed=0))
    field = embedded_run(controller, seed=1, k=3,
                         embeddings=embeddings_following(pd.factorize(cells["field"])[0], seed=1))
    for record in (size, field):
        with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
            controller.activate_run(record.name)
        qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    panel = widget.runs.compare
    assert not panel.changed_button.isEnabled()  # nothing compared yet

    # run B (the field) against run A (nucleus size): the reading, pictures and moves of phenossl compare
    result = _compare(qtbot, controller, panel, size.name, field.name)
    expected = _expected(size, field)
    assert _reading(panel) == expected.reading == result.difference.reading
    pd.testing.assert_frame_equal(result.difference.contingency, expected.contingency)
    assert np.array_equal(result.changed_cells, expected.changed_rows_a) and result.changed_cells.size > 0
    assert _change(expected, "nucleus_area") < -0.05 < 0.05 < _change(expected, "nuclei_per_field")
    assert "nucleus size" in panel.reading.text()  # named as what B's clusters follow less
    for png in (result.chart_png, result.gallery_png):
        assert png.startswith(PNG) and len(png) > 5_000
    for picture in (panel.chart, panel.gallery):
        assert not picture.pixmap().isNull() and picture.height() > 50
    widget.tabs.setCurrentIndex(4)  # the Runs step
    qtbot.waitUntil(lambda: 0 < panel.chart.pixmap().width() <= panel.width())  # fitted to the dock's width

    # the cells that changed cluster, selected on the plate with run A shown
    click(qtbot, panel.changed_button)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert controller.active is size
    assert np.array_equal(np.sort(controller.selected), np.sort(expected.changed_rows_a))
    assert f"{expected.changed_rows_a.size} cells selected" in panel.status.text()

    # run B explored with k=5 (not kept: its folder still holds k=3): compared as shown now
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        controller.activate_run(field.name)
    widget.clusters.k.setValue(5)
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, widget.clusters.recluster_button))
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert field.clustering.k == 5 and field.config.cluster.k == 3
    again = _compare(qtbot, controller, panel, size.name, field.name)
    expected = _expected(size, field)
    assert again.difference.contingency.shape == (3, 5)
    pd.testing.assert_frame_equal(again.difference.contingency, expected.contingency)
    assert _reading(panel) == expected.reading != result.difference.reading
    assert np.array_equal(again.changed_cells, expected.changed_rows_a)

    # a run against itself: the same grouping, nothing to select
    same = _compare(qtbot, controller, panel, size.name, size.name)
    assert same.difference.comparison.ami == pytest.approx(1.0) and same.changed_cells.size == 0
    assert not panel.changed_button.isEnabled()
    assert "0 of" in panel.reading.text() and same.gallery_png.startswith(PNG)
