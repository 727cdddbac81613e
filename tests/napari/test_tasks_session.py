"""The workers' bodies and the session folder, run without any viewer: what they compute, what they write,
and that a run made for napari is a normal run folder the CLI can reopen."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from plugin_helpers import changed_under_best_matching, small_plate_layers

from phenossl.config import SegmentConfig, TileConfig
from phenossl.errors import NoNucleiError, PhenosslError
from phenossl.napari import run_tasks, tasks
from phenossl.napari.plate import PlateInfo
from phenossl.napari.session import Session, default_session_folder, run_config


def _consume(generator):
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as done:
            return events, done.value


@pytest.fixture(scope="module")
def session_with_tiles(tmp_path_factory) -> tuple[Session, PlateInfo]:
    """Two sample fields segmented and tiled (48 px) into a fresh session folder, as the widgets do."""
    from phenossl.napari import cells

    layers = small_plate_layers(2)
    info = PlateInfo.from_metadata(layers[0][1]["metadata"])
    _, result = _consume(tasks.segment_fields(layers[0][0], info, SegmentConfig()))
    session = Session(tmp_path_factory.mktemp("napari") / "session")
    fields = cells.field_inputs([d for d, _, _ in layers], ["DNA", "tubulin", "actin"], result.nuclei.labels, info)
    from phenossl.config import InputConfig

    session.store = tasks.build_tiles(
        fields,
        session.next_store_path(),
        input_config=InputConfig(nuclear_channel="DNA"),
        segmentation=SegmentConfig(),
        tiles=TileConfig(size=48, border="pad"),
        metadata=info.field_metadata(),
    )
    return session, info


def _config(info: PlateInfo, **train):
    from phenossl.synthetic import sample_data_path

    return run_config(
        train={"epochs": 1, "batch_size": 32, "resolution": 32, "device": "cpu", **train},
        segmentation={"backend": "classical"},
        tiles={"size": 48, "border": "pad"},
        input_section={
            "kind": "plate",
            "paths": [str(sample_data_path())],
            "channel_names": {"w1": "DNA", "w2": "tubulin", "w3": "actin"},
            "nuclear_channel": "DNA",
        },
        cluster={"k": 3, "label_columns": ["compound"]},
    )


def test_segmentation_keeps_ids_unique_across_fields_and_lists_empty_ones():
    layers = small_plate_layers(2)
    info = PlateInfo.from_metadata(layers[0][1]["metadata"])
    nuclear = np.array(layers[0][0])
    nuclear[1] = nuclear[1].min()  # field 2 blank
    progress, result = _consume(tasks.segment_fields(nuclear, info, SegmentConfig()))
    assert progress == [1, 2]
    nuclei = result.nuclei
    assert result.empty_fields == [info.keys[1]] and nuclei.labels[1].max() == 0
    assert nuclei.table["label"].is_unique and len(nuclei.table) == nuclei.labels.max()
    with pytest.raises(NoNucleiError, match="No nuclei"):
        _consume(tasks.segment_fields(np.zeros_like(nuclear), info, SegmentConfig()))


def test_store_rows_carry_the_layer_label_ids_and_the_treatments(session_with_tiles):
    session, _ = session_with_tiles
    table = session.store.cells
    assert table["label"].is_unique  # the plate-unique ids of the Labels layer
    assert {"compound", "density_condition"} <= set(table.columns)
    assert session.store.path.name == "tiles-1"


def test_progress_total_matches_the_events_and_threads_are_restored(session_with_tiles):
    import torch

    session, info = session_with_tiles
    record = session.new_run(_config(info))
    before = torch.get_num_threads()
    events, outcome = _consume(tasks.train_run(record, threading.Event(), threads=1))
    assert len(events) == tasks.expected_events(session.store.n_cells, record.config)
    assert outcome.status == "trained" and outcome.checkpoint == record.paths.checkpoint
    assert torch.get_num_threads() == before
    assert (
        tasks.ui_thread_budget(2) == 1 and tasks.ui_thread_budget(16) == 15 and tasks.ui_thread_budget(1) == 1
    )


def test_a_cancelled_training_returns_instead_of_raising(session_with_tiles):
    session, info = session_with_tiles
    record = session.new_run(_config(info))
    cancel = threading.Event()
    cancel.set()
    events, outcome = _consume(tasks.train_run(record, cancel, threads=1))
    from phenossl.train import SETUP_PHASES

    assert [event.phase for event in events] == list(SETUP_PHASES)  # what the set-up did; not one step
    assert outcome.status == "cancelled" and "cancelled" in outcome.message
    assert outcome.checkpoint is None  # no epoch had finished


def test_unexpected_errors_get_a_short_message_naming_the_step():
    with pytest.raises(tasks.TaskError, match=r"UMAP failed unexpectedly \(ValueError: boom\)") as info:
        with tasks.reported_as("UMAP"):
            raise ValueError("boom")
    assert isinstance(info.value.__cause__, ValueError)


def test_run_folder_layout_is_the_cli_layout_and_reopens(session_with_tiles, capsys):
    from phenossl.cli import main

    session, info = session_with_tiles
    record = session.new_run(_config(info))
    _consume(tasks.train_run(record, threading.Event(), threads=1))
    cancel = threading.Event()
    cancel.set()
    cancelled = tasks.embed_run(record, cancel, threads=1)  # Cancel, as pressed right after training
    assert cancelled.status == "cancelled" and "Embedding cancelled" in cancelled.message
    assert record.has_checkpoint and not record.has_embeddings  # nothing half-written
    assert tasks.embed_run(record, threading.Event(), threads=1).status == "embedded"
    outcome = tasks.cluster_run(record, k=3, n_nearest=4)
    assert outcome.clustering.k == 3 and "ami_compound" in outcome.metrics
    for path in (
        record.paths.config,
        record.paths.checkpoint,
        record.paths.embeddings,
        record.paths.clusters,
        record.paths.metrics,
        Path(record.paths.root, "history.csv"),
    ):
        assert path.is_file(), path
    assert record.paths.store.is_symlink() and record.paths.store.resolve() == session.store.path.resolve()

    reopened = Session.open(session.folder)
    assert record.name in reopened.runs and reopened.store.path == session.store.path
    assert reopened.runs[record.name].config.train.composition_a == record.config.train.composition_a

    assert main(["cluster", str(record.paths.root), "--k", "2", "--overwrite"]) == 0  # the CLI reclusters it
    assert "2 clusters" in capsys.readouterr().out


def test_preview_and_comparison(session_with_tiles):
    from phenossl.augment.specs import load_composition

    session, info = session_with_tiles
    tile = np.array(session.store.tiles[0], dtype=np.float32)
    preview = tasks.preview_compositions(
        tile, {"a": load_composition("morphology")}, cell_id=0, n=3, out_size=24
    )
    assert preview.original.shape == (48, 48, 3) and preview.original.dtype == np.uint8
    assert len(preview.views["a"]) == 3 and preview.views["a"][0].shape == (24, 24, 3)
    again = tasks.preview_compositions(
        tile, {"a": load_composition("morphology")}, cell_id=0, n=3, out_size=24
    )
    assert np.array_equal(preview.views["a"][1], again.views["a"][1])  # seeded: the same views again


def _embedded_run(session: Session, info: PlateInfo, k: int, seed: int):
    """A run with made-up embeddings, clustered with ``k`` and saved as its clustering (clusters.csv)."""
    record = session.new_run(_config(info))
    embeddings = np.random.default_rng(seed).normal(size=(session.store.n_cells, 8)).astype(np.float32)
    np.save(record.paths.embeddings, embeddings)
    outcome = tasks.cluster_run(record, k=k, n_nearest=2, save=True)
    record.space, record.clustering = outcome.space, outcome.clustering
    return record


def test_reclustering_explores_and_saving_is_explicit(session_with_tiles):
    session, info = session_with_tiles
    record = session.new_run(_config(info))
    np.save(record.paths.embeddings, np.random.default_rng(0).normal(size=(session.store.n_cells, 8)))
    k = record.config.cluster.k
    first = tasks.cluster_run(record, k=k, n_nearest=2)  # the run's first clustering, with its own k: saved
    saved = {path: path.read_bytes() for path in (record.paths.clusters, record.paths.metrics, record.paths.config)}
    assert np.array_equal(tasks.saved_cluster_labels(record), first.clustering.labels)

    explored = tasks.cluster_run(record, k=k + 3, n_nearest=2)  # a throw-away k: nothing on disk changes
    assert all(path.read_bytes() == content for path, content in saved.items())
    assert Session.open(session.folder).runs[record.name].config.cluster.k == k

    tasks.save_clustering(record, explored)  # the user's explicit choice replaces the saved clustering
    assert np.array_equal(tasks.saved_cluster_labels(record), explored.clustering.labels)
    assert Session.open(session.folder).runs[record.name].config.cluster.k == k + 3
    assert f'"k": {k + 3}' in record.paths.metrics.read_text()


def test_a_clustering_saved_in_napari_is_the_one_the_cli_saves(session_with_tiles):
    """The run's first clustering, saved by napari, holds the clustering stage's files (overview.png too), with
    the UMAP columns in clusters.csv written once (the UMAP worker leaves it alone), byte for byte what
    'phenossl cluster RUN --overwrite' writes; an exploration changes none of them."""
    import pandas as pd
    from PIL import Image

    from phenossl.pipeline import stage_cluster

    session, info = session_with_tiles
    record = session.new_run(_config(info))
    np.save(record.paths.embeddings, np.random.default_rng(3).normal(size=(session.store.n_cells, 8)).astype(np.float32))
    config = record.config
    outcome = tasks.cluster_run(record, k=config.cluster.k, n_nearest=config.cluster.n_nearest)
    assert outcome.umap is not None and outcome.umap.shape == (session.store.n_cells, 2)
    files = (record.paths.clusters, record.paths.umap, record.paths.metrics, record.paths.overview)
    saved = {path: path.read_bytes() for path in files}
    assert pd.read_csv(record.paths.clusters)[["umap_x", "umap_y"]].notna().all().all()
    with Image.open(record.paths.overview) as overview:
        assert min(overview.size) > 400

    written = record.paths.clusters.stat().st_mtime_ns
    assert np.array_equal(tasks.umap_run(record, outcome.space), outcome.umap)
    tasks.cluster_run(record, k=config.cluster.k + 1, n_nearest=2, space=outcome.space)  # exploring
    assert record.paths.clusters.stat().st_mtime_ns == written
    assert all(path.read_bytes() == content for path, content in saved.items())

    stage_cluster(config, record.paths, record.tile_store(), overwrite=True)  # the CLI's stage, same settings
    assert all(path.read_bytes() == content for path, content in saved.items())


def test_napari_shows_the_first_clustering_at_once_and_saves_it_with_its_layout(session_with_tiles):
    """The controller's call (``defer_save``): the clusters come back before any UMAP is computed, nothing is
    written yet; saved once the layout is known, clusters.csv is written once, with its UMAP columns."""
    import pandas as pd

    session, info = session_with_tiles
    record = session.new_run(_config(info))
    np.save(record.paths.embeddings, np.random.default_rng(4).normal(size=(session.store.n_cells, 8)).astype(np.float32))
    k = record.config.cluster.k
    first = tasks.cluster_run(record, k=k, n_nearest=2, defer_save=True)
    assert first.save_pending and first.umap is None and not record.paths.clusters.exists()
    assert not tasks.cluster_run(record, k=k + 1, n_nearest=2, space=first.space, defer_save=True).save_pending

    layout = tasks.umap_run(record, first.space)
    saved = tasks.save_clustering(record, tasks.ClusterOutcome(first.space, first.clustering, first.metrics, layout))
    assert not saved.save_pending and np.array_equal(saved.umap, layout)
    assert pd.read_csv(record.paths.clusters)[["umap_x", "umap_y"]].notna().all().all()
    assert np.array_equal(tasks.saved_cluster_labels(record), first.clustering.labels)
    assert record.paths.overview.is_file()


def test_runs_are_compared_from_their_folders_when_not_shown(session_with_tiles):
    from sklearn.metrics import adjusted_mutual_info_score

    session, info = session_with_tiles
    a, b = _embedded_run(session, info, k=4, seed=1), _embedded_run(session, info, k=2, seed=2)
    shown = run_tasks.compare_runs(a, b)
    labels_a, labels_b = a.clustering.labels, b.clustering.labels
    assert shown.difference.comparison.ami == pytest.approx(adjusted_mutual_info_score(labels_a, labels_b))
    assert shown.difference.comparison.n_cells == session.store.n_cells
    changed = changed_under_best_matching(labels_a, labels_b)
    assert changed.size > 0 and np.array_equal(shown.changed_cells, changed)  # k 4 vs 2: cells moved

    reopened = Session.open(session.folder)  # nothing in memory: only the run folders
    ra, rb = reopened.runs[a.name], reopened.runs[b.name]
    assert ra.clustering is None and rb.clustering is None
    assert np.array_equal(tasks.saved_cluster_labels(ra), labels_a)  # read from clusters.csv
    again = run_tasks.compare_runs(ra, rb)
    assert again.difference.reading == shown.difference.reading
    assert np.array_equal(again.changed_cells, shown.changed_cells)

    rb.paths.clusters.unlink()  # no clusters.csv: K-Means again with the run's saved k and seed
    assert tasks.saved_cluster_labels(rb) is None
    assert np.array_equal(run_tasks.cluster_labels(rb), labels_b)
    newer = rb.paths.embeddings.stat().st_mtime + 10
    os.utime(ra.paths.embeddings, (newer, newer))  # embeddings newer than clusters.csv: the csv is stale
    assert tasks.saved_cluster_labels(ra) is None and np.array_equal(run_tasks.cluster_labels(ra), labels_a)

    untrained = session.new_run(_config(info))
    with pytest.raises(PhenosslError, match=f"run {untrained.name} has no embeddings yet"):
        run_tasks.compare_runs(a, untrained)


def test_default_session_folder_is_dated_under_home(tmp_path):
    import datetime as dt

    folder = default_session_folder(dt.datetime(2026, 3, 4, 5, 6, 7), home=tmp_path)
    assert folder == tmp_path / "2026-03-04_050607"


def test_the_automatic_first_save_never_replaces_a_clustering_kept_meanwhile(session_with_tiles):
    """The user keeps another k while the first clustering waits for its UMAP: the automatic save, arriving
    later, finds a clustering saved for these embeddings (under the run lock) and writes nothing."""
    session, info = session_with_tiles
    record = session.new_run(_config(info))
    np.save(record.paths.embeddings, np.random.default_rng(5).normal(size=(session.store.n_cells, 8)).astype(np.float32))
    k = record.config.cluster.k
    first = tasks.cluster_run(record, k=k, n_nearest=2, defer_save=True)
    kept = tasks.cluster_run(record, k=k + 2, n_nearest=2, space=first.space, defer_save=True)
    tasks.save_clustering(record, kept)  # the user's Keep
    files = (record.paths.clusters, record.paths.metrics, record.paths.config)
    before = {path: path.read_bytes() for path in files}

    layout = tasks.umap_run(record, first.space)
    tasks.save_clustering(record, tasks.ClusterOutcome(first.space, first.clustering, first.metrics, layout), first=True)
    assert all(path.read_bytes() == content for path, content in before.items())
    assert np.array_equal(tasks.saved_cluster_labels(record), kept.clustering.labels)
    assert Session.open(session.folder).runs[record.name].config.cluster.k == k + 2


def test_the_progress_total_counts_only_the_cells_a_labelled_method_trains_on():
    import pandas as pd

    from phenossl.config import RunConfig

    cells = pd.DataFrame({"dose": [0.0, 1.0, np.nan, 3.0] * 8})  # 24 of the 32 cells have a dose
    config = RunConfig(train={"method": "yaware", "label_column": "dose", "batch_size": 8, "epochs": 2,
                              "device": "cpu", "log_every": 1})
    assert tasks.expected_events(32, config, cells) == 5 + 2 * (24 // 8 + 1)  # 5 set-up phases
    assert tasks.expected_events(32, config) == 5 + 2 * (32 // 8 + 1)
    unlabelled = RunConfig(train={"batch_size": 8, "epochs": 2, "device": "cpu", "log_every": 1})
    assert tasks.expected_events(32, unlabelled, cells) == 5 + 2 * (32 // 8 + 1)
