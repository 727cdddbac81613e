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
from phenossl.errors import RunFolderBusyError
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
        with pytest.raises(RunFolderBusyError), run_folder_lock(paths.root):
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
    from phenossl.train import checkpoint

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
    from phenossl import export

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
    from phenossl import atomic

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

    from phenossl.cluster import kmeans
    from phenossl.cluster.stage import metrics_json

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


def test_unicode_folder_names_for_the_images_and_the_run_work_end_to_end(tmp_path, capsys):
    """Non-ASCII folder names (accents, CJK) for the plate, the configuration and the run: the whole chain
    (tile, train 1 epoch, embed, cluster, overview) writes its results there, and the run reopens from there."""
    import json

    from pipeline_helpers import plate_folder, run_config

    from phenossl.config import load_config

    plate = plate_folder(tmp_path / "plaque_été_細胞")
    config = run_config(tmp_path, plate)
    config.output.dir = tmp_path / "résultats_細胞" / "essai_ü"
    config_path = tmp_path / "réglages_設定" / "config_ñ.yaml"
    config_path.parent.mkdir()
    config_path.write_text(config.to_yaml(), encoding="utf-8")
    assert main(["run", str(config_path)]) == 0
    out = capsys.readouterr().out
    root = (tmp_path / "résultats_細胞" / "essai_ü").resolve()
    assert f"Results in {root}" in out
    for name in ("config.yaml", "checkpoint.pt", "embeddings.npy", "clusters.csv", "metrics.json", "overview.png"):
        assert (root / name).is_file(), name
    assert len(pd.read_csv(root / "clusters.csv")) == json.loads((root / "metrics.json").read_text())["n_cells"] == 10
    saved = load_config(root / "config.yaml")  # the run's own configuration names the Unicode folders
    assert saved.run_dir() == root and [p.resolve() for p in saved.input.paths] == [plate.resolve()]
    assert main(["cluster", str(root), "--k", "3", "--out", str(tmp_path / "export_é" / "c_細胞.csv")]) == 0
    assert pd.read_csv(tmp_path / "export_é" / "c_細胞.csv")["cluster"].nunique() == 3


def test_k_equal_to_the_number_of_cells_works_and_k_above_it_is_a_clear_error(tmp_path, capsys):
    import json

    paths = small_run(tmp_path, n_cells=10)
    assert main(["cluster", str(paths.root), "--k", "10", "--overwrite"]) == 0  # k = N: one cell per cluster
    capsys.readouterr()
    table = pd.read_csv(paths.clusters)
    assert sorted(table["cluster"]) == list(range(10))
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["k"] == 10 and metrics["cluster_sizes"] == [1] * 10 and metrics["silhouette"] is None
    before = {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()}
    for target in (["--overwrite"], ["--out", str(tmp_path / "x.csv")]):
        assert main(["cluster", str(paths.root), "--k", "11", *target]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "phenossl: error: Cannot make 11 clusters from 10 cells: choose k <= 10, or add more cells."
    assert {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()} == before
    assert not (tmp_path / "x.csv").exists()


def _train_in_a_subprocess(paths: RunPaths, epochs: int, **popen) -> subprocess.Popen:
    """``phenossl train`` on the run of ``paths`` as a real process (``--set train.epochs=epochs``)."""
    command = [sys.executable, "-m", "phenossl.cli", "train", str(paths.config), "--set", f"train.epochs={epochs}"]
    return subprocess.Popen(command, text=True, **popen)


def _phenossl(*args: str) -> subprocess.CompletedProcess:
    """The ``phenossl`` command in a new process, as a user reruns it (and immune to the OpenMP thread count an
    earlier UMAP in this test process leaves behind, which slows torch down many times on 2 cores)."""
    return subprocess.run([sys.executable, "-m", "phenossl.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def _wait_for_file(path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll until ``path`` exists; fail at once if ``process`` ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process ended (exit {process.returncode}) before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} did not appear within {timeout:.0f} s")
        time.sleep(0.01)


def _epoch_lines(text: str) -> list[str]:
    import re

    return re.findall(r"epoch (\d+)/\d+: mean loss", text)


def test_kill_9_during_training_leaves_no_lock_and_resume_completes_the_run(tmp_path):
    from phenossl.train.checkpoint import load_checkpoint

    paths = small_run(tmp_path, n_cells=16, clustered=False)
    epochs = 5
    trainer = _train_in_a_subprocess(paths, epochs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_file(paths.checkpoint, trainer)  # renamed into place only when complete: epoch 1 is saved
        trainer.send_signal(signal.SIGKILL)
        assert trainer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.communicate()
    killed_at = load_checkpoint(paths.checkpoint)["epoch"]  # the last finished epoch, intact
    assert 0 <= killed_at < epochs - 1, "the training ended before it could be killed: lower the epoch time"
    with run_folder_lock(paths.root, "after kill -9"):  # the kernel dropped the dead process's lock
        pass
    resumed = _phenossl("train", str(paths.config), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _epoch_lines(resumed.stdout)[0] == str(killed_at + 2)  # continued after the saved epoch, not from scratch
    assert f"trained {epochs} epochs" in resumed.stdout
    state = load_checkpoint(paths.checkpoint)
    assert state["epoch"] == epochs - 1
    assert sorted(pd.read_csv(paths.root / "history.csv")["epoch"].unique()) == list(range(1, epochs + 1))
    assert not list(paths.root.glob(".*.tmp"))


CUT_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from phenossl.cli import main

    real_save, saves = torch.save, []

    def save(payload, target):  # the 2nd checkpoint stops half-written, as when the process is killed
        saves.append(target)
        real_save(payload, target)
        if len(saves) == 2:
            data = Path(target).read_bytes()
            Path(target).write_bytes(data[: len(data) // 2])
            print("writing", target, flush=True)
            time.sleep(600)  # held mid-write until the test kills it

    torch.save = save
    sys.exit(main(["train", sys.argv[1], "--set", "train.epochs=3"]))
""")


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one_and_resume_cleans_up(tmp_path):
    from pathlib import Path

    from phenossl.train.checkpoint import load_checkpoint

    paths = small_run(tmp_path, n_cells=16, clustered=False)
    writer = subprocess.Popen([sys.executable, "-c", CUT_WRITER, str(paths.config)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    text = ""
    try:
        for text in writer.stdout:  # progress lines, then the writer's own once it is stopped mid-write
            if text.startswith("writing "):
                break
        line = text.split()
        writer.send_signal(signal.SIGKILL)  # kill -9 in the middle of writing epoch 2's checkpoint
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
        _, err = writer.communicate()
    assert line[:1] == ["writing"], err
    temporary = Path(line[1])
    assert temporary.parent == paths.root and temporary.name.startswith(".checkpoint.pt.") and temporary.exists()
    assert load_checkpoint(paths.checkpoint)["epoch"] == 0  # the previous checkpoint is untouched
    resumed = _phenossl("train", str(paths.config), "--resume")  # takes the lock: the half-written file goes
    assert resumed.returncode == 0, resumed.stderr
    assert not temporary.exists() and not list(paths.root.glob(".*.tmp"))
    assert _epoch_lines(resumed.stdout) == ["2", "3"] and load_checkpoint(paths.checkpoint)["epoch"] == 2


def test_ctrl_c_during_training_exits_130_says_how_to_resume_and_keeps_the_checkpoint(tmp_path):
    from phenossl.train.checkpoint import load_checkpoint

    paths = small_run(tmp_path, n_cells=16, clustered=False)
    epochs = 5
    trainer = _train_in_a_subprocess(paths, epochs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_file(paths.checkpoint, trainer)
        trainer.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = trainer.communicate(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.communicate()
    assert trainer.returncode == 130, err
    assert "phenossl: interrupted. Checkpoints written so far are kept; continue with --resume." in err
    assert "Traceback" not in err
    saved = load_checkpoint(paths.checkpoint)["epoch"]
    assert 0 <= saved < epochs - 1
    assert not list(paths.root.glob(".*.tmp"))  # an interrupted write removes its temporary
    resumed = _phenossl("train", str(paths.config), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _epoch_lines(resumed.stdout)[0] == str(saved + 2)
    assert load_checkpoint(paths.checkpoint)["epoch"] == epochs - 1
