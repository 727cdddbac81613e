"""phenossl's layers read right by napari itself and by other plugins: the status bar under the mouse,
napari's Features table widget, napari-clusters-plotter; selections go both ways and never move the
user's active layer; a recluster leaves the plate in phenossl's colours."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gui


def _status_fields(layer, world_point) -> dict[str, str]:
    """napari's status-bar text for ``layer`` at a world position, as {column: value}."""
    status = layer.get_status(world_point, world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    return dict(re.findall(r"(\w+): ([^,;]+)", text))


def _pixel_inside(labels: np.ndarray, field: int, label: int) -> tuple[int, int]:
    y, x = np.argwhere(labels[field] == label)[len(np.argwhere(labels[field] == label)) // 2]
    return int(y), int(x)


def test_hovering_shows_the_cell_that_is_there_on_every_layer(clustered):
    viewer, _, controller, record = clustered
    labels_layer, points = controller.labels_layer, controller.points_layer
    store = record.tile_store()
    cells = points.features
    stack = np.asarray(labels_layer.data)
    assert labels_layer.data.ndim == 3 and stack.shape[0] == 2
    checked = 0
    for field_index in (0, 1):  # across fields: ids are plate-unique, rows must follow them
        viewer.dims.set_current_step(0, field_index)
        in_field = cells[(cells["field_index"] == field_index) & cells["cell_id"].notna()]
        for _, cell in in_field.sample(6, random_state=field_index).iterrows():
            y, x = _pixel_inside(stack, field_index, int(cell["label"]))
            world = labels_layer.data_to_world([field_index, y, x])
            shown = _status_fields(labels_layer, world)
            assert int(shown["label"]) == cell["label"]
            assert int(shown["cell_id"]) == cell["cell_id"]
            assert int(shown["cluster"]) == record.clustering.labels[cell["cell_id"]]
            assert shown["well"] == str(store.cells["well"].iloc[cell["cell_id"]])
            point = points.data_to_world([field_index, cell["centroid_y"], cell["centroid_x"]])
            assert int(_status_fields(points, point)["label"]) == cell["label"]
            checked += 1
    assert checked == 12
    # the background shows no cell (before, napari showed label 1's row there)
    y, x = np.argwhere(stack[0] == 0)[0]
    background = _status_fields(labels_layer, labels_layer.data_to_world([0, y, x]))
    assert "cell_id" not in background and background.get("label", "0") == "0"
    assert "nan" not in background.values() and set(background) <= {"label"}  # nothing else shown there
    # the typical cells' rings show their own cell
    typical = controller.typical_layer
    for row in range(0, len(typical.data), 3):
        cell = int(typical.features["cell_id"].iloc[row])
        viewer.dims.set_current_step(0, int(typical.data[row][0]))
        shown = _status_fields(typical, typical.data_to_world(typical.data[row]))
        assert int(shown["cell_id"]) == cell and int(shown["label"]) == store.cells["label"].iloc[cell]


def test_the_layers_carry_what_other_tools_need(clustered):
    _, _, controller, record = clustered
    cells = controller.points_layer.features
    labels = controller.labels_layer.features
    # napari's Labels convention: row r is label r (row 0 the background), with the index column
    assert np.array_equal(labels["index"].to_numpy(), np.arange(len(labels)))
    assert labels["label"].iloc[0] == 0 and labels["cell_id"].iloc[0] is None
    assert len(labels) == int(np.max(controller.labels_layer.data)) + 1
    for column in ("plate", "well", "field", "cluster", "cluster_color"):
        assert isinstance(cells[column].dtype, pd.CategoricalDtype), column  # not offered as numbers
    assert {"compound", "distance_to_centroid", "centroid_rank", "umap_x", "umap_y"} <= set(cells.columns)
    pcs = [c for c in cells.columns if c.startswith("emb_pc")]
    assert 1 <= len(pcs) <= 8 and cells[pcs].notna().all().all()  # the embedding, bounded in size
    tiled = cells["cell_id"].to_numpy(dtype=np.int64)
    assert np.allclose(cells["umap_x"], record.umap[tiled, 0])
    colors = controller.cluster_colors()
    for _, cell in cells.sample(10, random_state=1).iterrows():  # the colour column is the painted colour
        hex_color = cell["cluster_color"].lstrip("#")
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (0, 2, 4)]) / 255
        assert np.allclose(rgb, colors[int(cell["cluster"])][:3], atol=1 / 255)
        assert np.allclose(controller.labels_layer.colormap.map(cell["label"])[:3], rgb, atol=1 / 255)
    assert isinstance(controller.typical_layer.features["cluster"].dtype, pd.CategoricalDtype)


def test_before_tiling_no_cell_id_is_shown(workflow, qtbot):
    from plugin_helpers import click, wait_task

    _, widget = workflow
    controller = widget.controller
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, widget.segment.segment_button))
    assert "cell_id" not in controller.points_layer.features
    assert "cell_id" not in controller.labels_layer.features  # no "cell_id: -1" in the status bar


def test_selections_never_move_the_users_active_layer(clustered, qtbot):
    viewer, _, controller, record = clustered
    said: list[str] = []
    controller.status.connect(said.append)
    image = viewer.layers["DNA"] if "DNA" in viewer.layers else viewer.layers[0]
    viewer.layers.selection.active = image
    controller.select_cluster(1)
    members = int((record.clustering.labels == 1).sum())
    assert said[-1] == f"cluster 1: {members} cells selected"
    controller.points_layer.selected_data = {0, 1}  # a later pick elsewhere: the status line follows it
    assert said[-1] == "2 cells selected"
    controller.go_to_cell(int(record.clustering.nearest[0][0]))
    controller.recluster(4)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert viewer.layers.selection.active is image
    assert [layer.name for layer in viewer.layers].count("selected cells") == 1


def test_napari_features_table_and_phenossl_select_the_same_cell(clustered, qtbot):
    from napari_builtins._qt.features_table import FeaturesTable

    viewer, _, controller, record = clustered
    table = FeaturesTable(viewer)
    viewer.window.add_dock_widget(table)
    labels_layer = controller.labels_layer
    viewer.layers.selection.active = labels_layer
    view = table.table
    model = view.model()
    source = model.sourceModel()
    assert source.rowCount() == len(labels_layer.features)

    cell = int(record.clustering.nearest[2][0])
    label = int(record.tile_store().cells["label"].iloc[cell])
    view.selectRow(model.mapFromSource(source.index(label, 0)).row())  # the user clicks label's row
    assert labels_layer.selected_label == label
    assert controller.selected.tolist() == [cell]

    other = int(record.clustering.nearest[0][0])
    controller.go_to_cell(other)  # and a cell picked in phenossl is the table's selected row
    other_label = int(record.tile_store().cells["label"].iloc[other])
    assert labels_layer.selected_label == other_label
    rows = {model.mapToSource(index).row() for index in view.selectionModel().selectedIndexes()}
    assert rows == {other_label}


def test_clusters_plotter_plots_the_centroids_and_shares_selection_and_colours(clustered, qtbot):
    from napari_clusters_plotter import PlotterWidget

    viewer, widget, controller, record = clustered
    plotter = PlotterWidget(viewer)
    viewer.window.add_dock_widget(plotter, area="right")
    points = controller.points_layer
    viewer.layers.selection.active = points
    features = plotter._get_features()
    assert len(features) == len(points.data)
    plotter.x_axis, plotter.y_axis = "umap_x", "umap_y"
    assert {"plate", "well", "field"} <= set(plotter.categorical_columns)

    # cells drawn around in the plugin's plot become phenossl's selection (and nothing crashes after)
    drawn = np.zeros(len(points.data), dtype=int)
    drawn[: len(drawn) // 3] = 1
    plotter._on_finish_draw(drawn)
    expected = np.unique(points.features["cell_id"].to_numpy(dtype=np.int64, na_value=-1)[drawn > 0])
    assert controller.selected.tolist() == expected[expected >= 0].tolist()
    assert viewer.layers.selection.active is points  # the plot keeps its layer
    plotter._on_finish_draw(drawn[::-1].copy())  # a second draw on the same layer works
    assert viewer.layers.selection.active is points

    # phenossl selects a cluster: the plugin sees the selection on the layer
    controller.select_cluster(0)
    members = set(np.flatnonzero(record.clustering.labels == 0).tolist())
    cell_ids = points.features["cell_id"].to_numpy(dtype=np.int64, na_value=-1)
    assert {int(cell_ids[i]) for i in points.selected_data} == members

    # a phenossl recluster with the plugin open leaves the plate in phenossl's colours
    controller.recluster(2)
    qtbot.waitUntil(lambda: not controller.busy and record.clustering.k == 2, timeout=60_000)
    qtbot.wait(50)
    colors = controller.cluster_colors()
    codes = record.clustering.labels[cell_ids[cell_ids >= 0]]
    assert np.allclose(points.face_color[cell_ids >= 0][:, :3], colors[codes][:, :3], atol=1e-3)
    cells = points.features
    for _, cell in cells[cells["cell_id"].notna()].sample(10, random_state=0).iterrows():
        color = controller.labels_layer.colormap.map(cell["label"])
        assert np.allclose(color[:3], colors[record.clustering.labels[int(cell["cell_id"])]][:3])
