"""The biologist's whole path through the plugin, as contributed by the manifest: open the sample plate,
segment, make tiles, train a few steps, look at the clusters, recluster, explore, export the CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import click, drag_lasso, set_fast_training, wait_task
from qtpy.QtWidgets import QFileDialog, QMessageBox

pytestmark = pytest.mark.gui


def test_manifest_reader_and_widgets(make_napari_viewer, phenossl_plugin):
    from phenossl.synthetic import sample_data_path

    manifest = phenossl_plugin.manifest
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {
        "Phenotype discovery (all steps)",
        "1. Segment and tile",
        "3. Train",
        "4. UMAP",
        "5. Runs",
    } <= widgets
    viewer = make_napari_viewer()
    layers = viewer.open(str(sample_data_path()), plugin="phenossl")
    assert [layer.name for layer in layers] == ["w1", "w2", "w3"]  # channel tokens when no names are given
    assert layers[0].data.shape == (8, 576, 576) and layers[0].blending == "additive"
    assert layers[0].metadata["phenossl"]["keys"][0] == "SYNTH01_B02_s1"


def test_open_sample_segment_tile_train_cluster_explore_export(
    make_napari_viewer, phenossl_plugin, qtbot, tmp_path, monkeypatch, notifications
):
    from phenossl.render import cluster_colors

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("phenossl", "synthetic_plate")
    assert [layer.name for layer in viewer.layers] == ["DNA", "tubulin", "actin"]
    _, widget = viewer.window.add_plugin_dock_widget("phenossl", "Phenotype discovery (all steps)")
    controller = widget.controller
    controller.set_session_folder(tmp_path / "session")

    # 1. segment and tile
    wait_task(qtbot, controller, "segment", lambda: click(qtbot, widget.segment.segment_button))
    assert len(controller.labels_layer.features) > 400  # ~546 nuclei on the 8 fields
    widget.segment.tile_size.setValue(64)
    wait_task(qtbot, controller, "tiles", lambda: click(qtbot, widget.segment.tile_button))
    store = controller.session.store
    assert {"compound", "density_condition"} <= set(store.cells.columns)  # treatments reached every cell

    # 3. train a few steps (morphology composition, the default), then embed, cluster, lay out
    set_fast_training(widget, batch=64)
    with qtbot.waitSignal(controller.umap_changed, timeout=240_000):
        click(qtbot, widget.train.train_button)
    record = controller.active
    assert record.name == "run-001" and record.umap.shape == (store.n_cells, 2)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)  # the first clustering saved with its layout
    assert len(widget.train.loss_plot.losses) == store.n_cells // 64

    # 4. recluster with another k: instant, from the cached embeddings
    clusters = widget.clusters
    clusters.k.setValue(3)
    saved_csv = record.paths.clusters.read_bytes()
    with qtbot.waitSignal(controller.clustering_changed, timeout=60_000):
        click(qtbot, clusters.recluster_button)
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)  # the layers are painted in a worker
    clustering = record.clustering
    # exploring: the run's saved clustering (its config's k, clusters.csv) is left as it was
    assert clustering.k == 3 and record.config.cluster.k == 4
    assert record.paths.clusters.read_bytes() == saved_csv
    labels_layer = controller.labels_layer
    features = controller.points_layer.features  # one row per nucleus
    assert isinstance(features["cluster"].dtype, pd.CategoricalDtype) and "label" in features
    colors = cluster_colors(3)
    for _, cell in features.sample(20, random_state=0).iterrows():
        expected = colors[clustering.labels[cell["cell_id"]]]
        assert np.allclose(
            labels_layer.colormap.map(cell["label"]), expected
        )  # each cell in its cluster's colour
        assert cell["cluster"] == clustering.labels[cell["cell_id"]]
        assert labels_layer.features["cell_id"].iloc[cell["label"]] == cell["cell_id"]  # row r = label r
    assert "AMI with compound" in clusters.metrics_label.text()
    typical = controller.typical_layer
    assert len(typical.data) == sum(len(v) for v in clustering.nearest.values())
    assert np.allclose(typical.border_color, colors[typical.features["cluster"].to_numpy()])

    # the gallery: the typical cells of each cluster; a click goes to the cell on the plate
    gallery = clusters.gallery
    assert sorted(gallery.buttons) == [0, 1, 2]
    cell = int(clustering.nearest[2][0])
    click(qtbot, gallery.buttons[2][0])
    field_index = list(controller.plate.keys).index(store.cells["field"].iloc[cell])
    assert viewer.dims.current_step[0] == field_index
    assert np.allclose(
        viewer.scene.camera.center[-2:], store.cells[["centroid_y", "centroid_x"]].iloc[cell], atol=1
    )
    assert controller.selected.tolist() == [cell] and widget.augment.cell.value() == cell

    # UMAP, linked both ways: a lasso drawn on the plot selects cells in the layers; a cluster lights up
    axes = widget.umap.axes
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()  # the whole plot, just inside its frame
    dx, dy = (x1 - x0) * 0.01, (y1 - y0) * 0.01
    whole = [(x0 + dx, y0 + dy), (x1 - dx, y0 + dy), (x1 - dx, y1 - dy), (x0 + dx, y1 - dy)]
    drag_lasso(widget.umap.canvas, axes, whole)
    assert controller.selected.size == store.n_cells
    assert len(controller.points_layer.selected_data) == store.n_cells
    assert len(controller.selection_layer.data) == store.n_cells  # white rings show them on the plate
    click(qtbot, gallery.headers[1])
    members = np.flatnonzero(clustering.labels == 1)
    assert np.array_equal(controller.selected, members) and widget.umap._highlight is not None
    picked = set(controller.points_layer.selected_data)
    assert set(controller.points_layer.features["cell_id"].to_numpy()[sorted(picked)]) == set(members)

    controller.points_layer.selected_data = {0, 1}  # and points picked in the viewer light up in the UMAP
    picked = controller.points_layer.features["cell_id"].to_numpy()[[0, 1]]
    assert controller.selected.tolist() == sorted(picked.tolist())
    assert widget.umap.count_label.text() == "2 cells selected"

    left_half = [(x0 + dx, y0 + dy), ((x0 + x1) / 2, y0 + dy), ((x0 + x1) / 2, y1 - dy), (x0 + dx, y1 - dy)]
    drag_lasso(widget.umap.canvas, axes, left_half)  # a second lasso, after the plot was redrawn
    assert np.array_equal(controller.selected, np.flatnonzero(record.umap[:, 0] < (x0 + x1) / 2))

    # 6. export: a file dialog, then ask before replacing what is there
    target = tmp_path / "export" / "clusters.csv"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "CSV files (*.csv)"))
    wait_task(qtbot, controller, "export", lambda: click(qtbot, clusters.export_button))
    table = pd.read_csv(target)
    assert len(table) == store.n_cells and table["cluster"].tolist() == clustering.labels.tolist()
    assert {"compound", "umap_x", "centroid_rank"} <= set(table.columns)
    assert (target.parent / "clusters.config.yaml").is_file() and (
        target.parent / "clusters.embeddings.npy"
    ).is_file()

    asked = []
    monkeypatch.setattr(
        QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes
    )
    target.write_text("old")
    click(qtbot, clusters.export_button)  # finds the files, asks, the user says yes, exports again
    qtbot.waitUntil(lambda: bool(asked) and not controller.running("export"), timeout=60_000)
    assert len(asked) == 1 and "would replace 3 existing file(s)" in asked[0]
    assert pd.read_csv(target)["cluster"].tolist() == clustering.labels.tolist()
    assert any("Exported clusters.csv" in str(n.message) for n in notifications)
