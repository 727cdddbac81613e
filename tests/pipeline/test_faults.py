"""Faults a user meets, each reproduced: two processes on one run folder, a full disk during a checkpoint or an
export, read-only and folder targets, a bad --k, damaged results, inputs too small to mean anything, a moved
run folder. Every one ends in a clear message (exit status 2 from the command line) and loses nothing saved."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from phenossl.cli import main
from phenossl.cluster import EmbeddingSpace
from phenossl.config import config_from_dict
from phenossl.errors import DiskFullError, RunFolderBusyError
from phenossl.export import export_clusters
from phenossl.pipeline import RunPaths, prepare_run_dir
from phenossl.runlock import run_folder_lock
from phenossl.tiles import TileStoreWriter


def small_run(tmp_path, n_cells: int = 40, clustered: bool = True) -> RunPaths:
    """A run folder with a store of random tiles, embeddings and (optionally) its clustering: no training."""
    rng = np.random.default_rng(0)
    config = config_from_dict({"name": "r", "input": {"kind": "crops"}, "cluster": {"k": 2},
                               "train": {"device": "cpu", "epochs": 2, "batch_size": 8, "resolution": 16},
                               "output": {"dir": str(tmp_path / "run")}})
    paths = prepare_run_dir(config)
    writer = TileStoreWriter(paths.store, n_cells, ["DNA", "actin"], 32)
    writer.append(rng.random((n_cells, 2, 32, 32)).astype(np.float32))
    writer.finish(pd.DataFrame({"label": range(n_cells), "compound": ["DMSO", "drug"] * (n_cells // 2)}), {})
    embeddings = rng.normal(size=(n_cells, 8)).astype(np.float32)
    np.save(paths.embeddings, embeddings)
    if clustered:
        time.sleep(0.01)  # the clustering is newer than the embeddings it belongs to
        clustering = EmbeddingSpace(embeddings).cluster(2, seed=0)
        export_clusters(paths.clusters, pd.read_csv(paths.store / "cells.csv"), clustering, overwrite=True)
    return paths


HOLDER = textwrap.dedent("""
    import sys, time
    from phenossl.runlock import run_folder_lock
    with run_folder_lock(sys.argv[1], "training (a test)"):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_a_second_process_on_a_run_folder_fails_at_once_naming_the_holder(tmp_path, capsys):
    paths = small_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(paths.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = paths.clusters.read_bytes()
        start = time.monotonic()
        assert main(["cluster", str(paths.root), "--k", "3", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert time.monotonic() - start < 30
        assert f"The run folder {paths.root.resolve()} is in use by process {holder.pid}" in err
        assert "training (a test)" in err and "Nothing was changed" in err
        assert paths.clusters.read_bytes() == before
        with pytest.raises(RunFolderBusyError):
            with run_folder_lock(paths.root):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock with the process
        holder.wait()
    with run_folder_lock(paths.root, "after the crash") as root:
        assert root == paths.root.resolve()


def test_taking_the_lock_removes_what_a_killed_writer_left_and_is_reentrant(tmp_path):
    paths = small_run(tmp_path)
    left = paths.root / ".checkpoint.pt.abc123.tmp"
    left.write_bytes(b"half a checkpoint")
    with run_folder_lock(paths.root):
        assert not left.exists()
        with run_folder_lock(paths.root):  # a stage inside a whole run takes it again
            pass
        code = f"from phenossl.runlock import run_folder_lock as l\nwith l({str(paths.root)!r}): pass"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and "is in use by process" in other.stderr  # still held after the inner one


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    import phenossl.train.checkpoint as checkpoint

    paths = small_run(tmp_path, clustered=False)
    config_path = paths.config
    saves = []
    real_save = torch.save

    def fill_the_disk(payload, target):
        saves.append(target)
        if len(saves) == 2:  # epoch 2: torch says only this, from C++
            open(target, "wb").write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                               "file data/12: file write failed; basic_ios::clear: iostream error")
        real_save(payload, target)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda folder: type("usage", (), {"free": 3 * 2**20})())
    code = main(["train", str(config_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "is full: the checkpoint needs about" in err and "3 MiB are free" in err
    assert "Epoch 2 could not be saved" in err and "(epoch 1) is kept" in err and "--resume" in err
    state = checkpoint.load_checkpoint(paths.checkpoint)
    assert state["epoch"] == 0  # the last good checkpoint, intact
    assert not list(paths.root.glob(".*.tmp"))


def test_an_export_is_one_unit_on_a_full_disk(tmp_path, monkeypatch, capsys):
    import phenossl.export as export

    paths = small_run(tmp_path)
    out = tmp_path / "exports" / "a.csv"

    def no_space(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_npy", no_space)
    monkeypatch.setattr("phenossl.pipeline.save_npy", no_space, raising=False)
    assert main(["export", str(paths.root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is full" in err and "Nothing was replaced" in err
    assert list(out.parent.iterdir()) == []  # no CSV without its sidecars, no temporaries


def test_a_read_only_folder_and_a_folder_target_get_clear_messages(tmp_path, monkeypatch, capsys):
    import phenossl.atomic as atomic

    paths = small_run(tmp_path)
    folder = tmp_path / "a.csv"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["export", str(paths.root), "--out", str(folder), *extra]) == 2
        assert f"{folder} is a folder, not a file" in capsys.readouterr().err
    assert list(folder.iterdir()) == []

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    target = tmp_path / "ro" / "b.csv"
    assert main(["export", str(paths.root), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"the folder {target.parent} is on a read-only file system" in err and "Traceback" not in err
    assert not target.exists()


@pytest.mark.parametrize("k", ["-3", "1"])
def test_a_bad_k_is_the_configurations_one_line_message(tmp_path, capsys, k):
    paths = small_run(tmp_path)
    assert main(["cluster", str(paths.root), "--k", k, "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["phenossl: error: invalid configuration:", "  cluster.k: Input should be greater than or equal to 2"]


def test_damaged_embeddings_and_checkpoints_are_named_with_how_to_rebuild_them(tmp_path, capsys):
    paths = small_run(tmp_path)
    data = paths.embeddings.read_bytes()
    paths.embeddings.write_bytes(data[: len(data) // 2])  # cut short by a crash
    assert main(["cluster", str(paths.root), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{paths.embeddings} is damaged" in err and f"'phenossl embed {paths.root} --overwrite'" in err
    paths.checkpoint.write_bytes(b"not a checkpoint")
    assert main(["embed", str(paths.root), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {paths.checkpoint} cannot be read: it is damaged" in err and "--overwrite" in err


def test_crops_too_small_to_hold_a_cell_are_refused(tmp_path, capsys):
    from phenossl.config import InputConfig, TileConfig
    from phenossl.errors import InputError
    from phenossl.tiles.build import build_store_from_crops

    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((20, 2, 1, 1)).astype(np.float32))
    with pytest.raises(InputError, match=r"are 1x1 px: too small to hold a cell.*at least 16 px"):
        build_store_from_crops(InputConfig(kind="crops", paths=[tmp_path / "tiny.npy"], channel_axis=0),
                               tmp_path / "s", tiles=TileConfig())
    assert not (tmp_path / "s").exists()


def test_a_resolution_above_what_the_tiles_show_is_a_warning(tmp_path, caplog):
    from phenossl.config import TrainConfig
    from phenossl.tiles.store import TileStore
    from phenossl.train import train

    paths = small_run(tmp_path, clustered=False)
    config = TrainConfig(device="cpu", epochs=1, batch_size=8, resolution=64, composition_a="context")
    with caplog.at_level("WARNING"):
        train(TileStore(paths.store), config, tmp_path / "t")
    assert "train.resolution 64 px upsamples the 32 px the views show" in caplog.text


def test_export_reuses_the_runs_clustering_and_nan_scores_are_null(tmp_path, monkeypatch):
    import json

    import phenossl.cluster.kmeans as kmeans
    from phenossl.pipeline import metrics_json

    paths = small_run(tmp_path)

    def no_kmeans(*args, **kwargs):
        raise AssertionError("export clustered again")

    monkeypatch.setattr(kmeans, "cluster_features", no_kmeans)
    out = tmp_path / "e.csv"
    assert main(["export", str(paths.root), "--out", str(out)]) == 0
    assert out.read_text() == paths.clusters.read_text()
    assert np.array_equal(np.load(tmp_path / "e.embeddings.npy"), np.load(paths.embeddings))
    assert "name: r" in (tmp_path / "e.config.yaml").read_text()
    assert json.loads(metrics_json({"silhouette": float("nan"), "k": np.int64(2)})) == {"silhouette": None, "k": 2}


def test_a_moved_run_folder_is_resumed_where_it_is(tmp_path):
    import shutil

    from phenossl.config import load_config

    paths = small_run(tmp_path)
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(paths.root, moved)
    config = load_config(moved / "config.yaml")
    assert config.output.dir == moved.resolve() and config.run_dir() == moved.resolve()
