"""A run folder is never changed behind the user's back: each stage refuses to replace what is there
unless asked, and a resumed run must be the run that is in the folder."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pipeline_helpers import plate_folder, run_config

from phenossl.cli import main
from phenossl.config import resolve_paths, save_config
from phenossl.errors import ConfigError
from phenossl.pipeline import run_pipeline
from phenossl.tiles.store import TileStore


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    """One complete small run, made once; each test gets its own copy."""
    base = tmp_path_factory.mktemp("template")
    run_pipeline(run_config(base, plate_folder(base / "plate")))
    return base


@pytest.fixture
def finished_run(template_run, tmp_path):
    """A copy of the complete run (its saved configuration pointing at the copy) and a configuration file."""
    shutil.copytree(template_run / "plate", tmp_path / "plate")
    shutil.copytree(template_run / "run", tmp_path / "run")
    config = run_config(tmp_path, tmp_path / "plate")
    save_config(prepare_run_dir_config(config), tmp_path / "run" / "config.yaml")
    config_path = tmp_path / "run.yaml"
    config_path.write_text(config.to_yaml())
    return config, config_path, tmp_path / "run"


def prepare_run_dir_config(config):
    """The configuration as the run folder saves it (absolute paths)."""
    resolved = resolve_paths(config, Path.cwd())
    resolved.output.dir = resolved.run_dir().resolve()
    return resolved


def test_train_refuses_to_replace_a_trained_model_unless_asked(finished_run, capsys):
    _, config_path, run = finished_run
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["train", str(config_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds a trained model" in err and "--resume" in err and "--overwrite" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert main(["train", str(config_path), "--overwrite", "--set", "train.epochs=2"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2  # the run's configuration says what was trained
    assert list(pd.read_csv(run / "history.csv")["epoch"].unique()) == [1, 2]


def test_embed_refuses_to_replace_embeddings_unless_asked(finished_run, capsys):
    _, _, run = finished_run
    before = np.load(run / "embeddings.npy")
    assert main(["embed", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["embed", str(run), "--overwrite"]) == 0
    np.testing.assert_allclose(np.load(run / "embeddings.npy"), before, rtol=1e-5, atol=1e-6)


def test_resume_with_other_settings_is_refused_and_changes_nothing(finished_run):
    config, _, run = finished_run
    saved = (run / "config.yaml").read_text()
    other = config.model_copy(deep=True)
    other.train.method = "simclr"
    other.tiles.size = 40
    changed = r"tiles\.size: 48 in the run, 40 now; train\.method: 'mocov2' in the run, 'simclr' now"
    with pytest.raises(ConfigError, match=changed):
        run_pipeline(other, resume=True)
    assert (run / "config.yaml").read_text() == saved


def test_resume_may_train_longer_and_recluster(finished_run):
    config, _, run = finished_run
    longer = config.model_copy(deep=True)
    longer.train.epochs, longer.cluster.k = 2, 3
    result = run_pipeline(longer, resume=True)
    assert len(result.cluster_sizes) == 3
    assert list(pd.read_csv(run / "history.csv")["epoch"].unique()) == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["cluster"]["k"] == 3


def test_two_plates_with_the_same_file_names_are_kept_apart(tmp_path):
    plates = [plate_folder(tmp_path / "plate_a"), plate_folder(tmp_path / "plate_b")]  # identical names
    run_pipeline(run_config(tmp_path, plates))
    store = TileStore(tmp_path / "run" / "store")
    assert store.field_keys() == ["plate_a/P1_B02_s1", "plate_a/P1_B03_s1", "plate_b/P1_B02_s1",
                                  "plate_b/P1_B03_s1"]
    assert store.labels("plate_b/P1_B03_s1").max() == 5
    table = pd.read_csv(tmp_path / "run" / "clusters.csv")
    assert table.groupby("plate").size().to_dict() == {"plate_a": 10, "plate_b": 10}


def test_pre_cropped_cells_run_end_to_end_with_their_metadata(tmp_path):
    rng = np.random.default_rng(0)
    crops = rng.random((16, 32, 32, 2)).astype(np.float32)  # N, H, W, C: channels last, as often exported
    crops[8:, 8:24, 8:24, 0] += 2.0  # a bright nucleus in the treated wells
    np.save(tmp_path / "crops.npy", crops)
    pd.DataFrame({"plate": ["P1"] * 16, "well": ["B02"] * 8 + ["B03"] * 8,
                  "site": [1] * 16}).to_csv(tmp_path / "cells.csv", index=False)
    pd.DataFrame({"plate": ["P1", "P1"], "well": ["B02", "B03"],
                  "compound": ["DMSO", "drug"]}).to_csv(tmp_path / "meta.csv", index=False)
    config = run_config(tmp_path, tmp_path / "crops.npy")
    config.input.kind = "crops"
    config.input.crops_csv = tmp_path / "cells.csv"
    config.input.channel_names = ["DNA", "actin"]
    config.input.metadata = tmp_path / "meta.csv"
    run_pipeline(config)
    table = pd.read_csv(tmp_path / "run" / "clusters.csv")
    assert list(table["compound"]) == ["DMSO"] * 8 + ["drug"] * 8
    store = TileStore(tmp_path / "run" / "store")
    assert store.channel_names == ["DNA", "actin"] and store.tiles.shape == (16, 2, 32, 32)
    assert store.info["report"]["metadata_rows_joined"] == 16
