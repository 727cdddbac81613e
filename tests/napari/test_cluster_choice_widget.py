"""The Clusters step's algorithm choice and Suggest k, in a real viewer (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from plugin_helpers import click, embedded_run, segment_and_tile, wait_task


def blob_embeddings(n_cells: int, n_blobs: int = 3, n_scattered: int = 0, seed: int = 0) -> np.ndarray:
    """Cell i in blob i % n_blobs (tight, far apart); the last ``n_scattered`` cells spread far around them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(n_blobs, 8))
    embeddings = centres[np.arange(n_cells) % n_blobs] + rng.normal(scale=0.2, size=(n_cells, 8))
    if n_scattered:
        embeddings[-n_scattered:] = rng.uniform(-25, 25, size=(n_scattered, 8))
    return embeddings.astype(np.float32)


@pytest.fixture
def blob_run(workflow, qtbot, request):
    """The plate tiled and shown as a run of three blobs (k=2 clustered), with ``request.param`` (True) a twelfth
    of its cells scattered far around them."""
    viewer, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    n_cells = controller.session.store.n_cells
    scattered = max(3, n_cells // 12) if getattr(request, "param", False) else 0
    record = embedded_run(controller, k=2, embeddings=blob_embeddings(n_cells, n_scattered=scattered))
    controller.activate_run(record.name)
    qtbot.waitUntil(lambda: not controller.busy and record.clustering is not None, timeout=60_000)
    return viewer, widget, controller, record


def test_suggest_k_runs_in_a_worker_shows_the_curve_and_sets_k(blob_run, qtbot):
    _, widget, controller, record = blob_run
    clusters = widget.clusters
    assert clusters.curve_canvas.isHidden()  # (the step may be folded away: isHidden, not isVisible)
    clusters.ami_column.setCurrentIndex(0)  # (none): the silhouette alone
    wait_task(qtbot, controller, "suggest-k", lambda: click(qtbot, clusters.suggest_button))
    qtbot.waitUntil(lambda: clusters.curve is not None, timeout=30_000)
    curve = clusters.curve
    assert curve.best_k == 3 and int(clusters.k.value()) == 3
    assert not clusters.curve_canvas.isHidden() and "Suggested k=3" in clusters.curve_note.text()
    assert len(clusters.curve_axes.lines) >= 2  # the silhouette and the chosen k's line
    assert record.clustering.k == 2  # suggesting reclusters nothing
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, clusters.recluster_button))
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert record.clustering.k == 3 and record.clustering.algorithm == "kmeans"


@pytest.mark.parametrize("blob_run", [True], indirect=True)
def test_hdbscan_noise_is_grey_named_in_the_legend_layers_and_gallery_and_kept(blob_run, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    _, widget, controller, record = blob_run
    clusters = widget.clusters
    clusters.cluster_form["algorithm"].value = "hdbscan"
    assert clusters.k.isHidden() and not clusters.min_cluster_size.isHidden()
    assert not clusters.suggest_button.isEnabled()  # HDBSCAN has no k to suggest
    clusters.min_cluster_size.setValue(5)
    wait_task(qtbot, controller, "cluster", lambda: click(qtbot, clusters.recluster_button))
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    clustering = record.clustering
    assert clustering.algorithm == "hdbscan" and clustering.k == 3 and clustering.n_noise > 0
    assert any(entry.text().startswith("noise · ") for entry in clusters.legend.entries)
    assert -1 in clusters.gallery.headers and "Noise" in clusters.gallery.headers[-1].text()
    assert sorted(clusters.gallery.buttons) == [0, 1, 2]  # no typical cells for the noise: it has no centroid
    points = controller.points_layer.features
    assert "noise" in list(points["cluster"].cat.categories)
    noise_rows = points["cluster"] == "noise"
    assert noise_rows.sum() == clustering.n_noise
    assert set(points.loc[noise_rows, "cluster_color"]) == {"#8c8c8c"}
    assert "noise" in clusters.metrics_label.text()

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert "HDBSCAN" in clusters.save_button.text()
    wait_task(qtbot, controller, "save-clustering", lambda: click(qtbot, clusters.save_button))
    saved = yaml.safe_load(record.paths.config.read_text())["cluster"]
    assert (saved["algorithm"], saved["hdbscan"]["min_cluster_size"]) == ("hdbscan", 5)
    table = pd.read_csv(record.paths.clusters)
    assert (table.loc[table["cluster"] == -1, "cluster_name"] == "noise").all()
    assert not clusters.save_button.isEnabled()
