"""A run trained and embedded by torchrun (2 CPU processes, gloo) is an ordinary run: one checkpoint written by
rank 0, resumed by one process and by torchrun again, embeddings equal to one process's, the run folder locked."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import plate_folder, run_config

from phenossl.cli import main
from phenossl.train.checkpoint import load_checkpoint


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "phenossl", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _one_process(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "phenossl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture
def tiled_run(tmp_path):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate"), epochs=2, batch_size=4)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(config.to_yaml())
    assert main(["tile", str(config_path)]) == 0
    return config_path, tmp_path / "run"


@pytest.mark.slow
def test_torchrun_trains_checkpoints_resumes_and_embeds(tiled_run, tmp_path):
    config_path, run = tiled_run
    trained = _torchrun("train", str(config_path), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list(pd.read_csv(run / "history.csv")["epoch"].unique()) == [1, 2]
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and not any("module." in key for key in state["model"])  # DDP's wrapper not saved

    resumed = _one_process("train", str(config_path), "--resume", "--set", "train.epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _torchrun("train", str(config_path), "--resume", "--set", "train.epochs=4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert list(pd.read_csv(run / "history.csv")["epoch"].unique()) == [1, 2, 3, 4]

    embedded = _torchrun("embed", str(run), cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    together = np.load(run / "embeddings.npy")
    from phenossl.embed import embed_store
    from phenossl.tiles.store import TileStore

    alone = embed_store(TileStore(run / "store"), run / "checkpoint.pt", tmp_path / "alone.npy", device="cpu")
    assert together.shape == alone.shape and np.allclose(together, alone, atol=1e-5)
    assert not list(run.glob(".*.tmp"))  # rank 0 put the shared file in place; nothing half-written is left
    assert not (run / ".phenossl.lock.json").exists()  # the lock was released


def test_a_global_batch_that_does_not_split_is_refused_with_a_message(tiled_run, tmp_path):
    config_path, run = tiled_run
    result = _torchrun("train", str(config_path), "--overwrite", "--set", "train.batch_size=5", cwd=tmp_path)
    assert result.returncode != 0
    assert "cannot be split over 2 processes" in result.stderr  # each rank's one-line message (torchrun adds its own)
    assert not (run / "checkpoint.pt").exists()
