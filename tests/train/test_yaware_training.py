"""y-aware trains on the cells whose label is known, resumes exactly and embeds every cell; a bad label column is
a clear error before anything is built; ``phenossl run`` trains, embeds and clusters a synthetic plate by dose."""

import threading

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from phenossl.config import RunConfig, config_from_dict
from phenossl.errors import Cancelled, ConfigError
from phenossl.tiles import TileStoreWriter
from phenossl.train import EpochDone, iter_training, train
from phenossl.train.checkpoint import load_checkpoint
from phenossl.train.labels import LabelColumnError, numeric_columns, training_labels
from phenossl.train.loader import TileBatches

DOSES = np.array([0.0, 0.1, 1.0, 10.0, np.nan, np.nan] * 8)  # 48 cells, 32 with a known dose


@pytest.fixture
def dosed_store(tmp_path):
    rng = np.random.default_rng(0)
    writer = TileStoreWriter(tmp_path / "store", 48, ["DNA", "actin"], 40)
    writer.append(rng.random((48, 2, 40, 40)).astype(np.float32))
    cells = pd.DataFrame({"label": range(48), "dose": DOSES, "compound": ["DMSO", "A", "A", "A", "B", "B"] * 8,
                          "plate": "P1", "empty": np.nan})
    return writer.finish(cells, {})


def yaware(tiny_config, **overrides):
    return tiny_config(method="yaware", label_column="dose", **overrides)


def test_trains_on_the_labelled_cells_only_and_embeds_every_cell(dosed_store, tiny_config, tmp_path):
    from phenossl.embed import embed_store

    result = train(dosed_store, yaware(tiny_config, epochs=1), tmp_path / "run")
    assert len(result.history) == 32 // 16  # two full batches of the 32 labelled cells
    assert np.isfinite(result.history["loss"]).all()
    embeddings = embed_store(dosed_store, result.checkpoint, tmp_path / "embeddings.npy", device="cpu")
    assert embeddings.shape[0] == 48 and np.isfinite(embeddings).all()


def test_batches_carry_each_cells_label_in_the_tiles_order(dosed_store):
    labels = training_labels(dosed_store.cells, tiny_yaware_config())
    for cached in (False, True):  # streamed from the memmap (sorted reads), or gathered from a device copy
        batches = TileBatches(dosed_store.tiles, 8, "cpu", seed=3, targets=labels)
        if cached:  # on the CPU the store is never cached: force the device path
            batches._cache = batches._copy_to_device()
        seen = []
        for tiles, targets in batches.batches(0):
            for tile, target in zip(tiles, targets, strict=True):
                row = next(i for i in range(48) if np.array_equal(dosed_store.tiles[i], tile.numpy()))
                assert target == pytest.approx(labels[row])
                seen.append(row)
        assert len(seen) == 32 and not np.isnan(labels[seen]).any()
    unlabelled = TileBatches(dosed_store.tiles, 8, "cpu", seed=3)
    assert [t is None for _, t in unlabelled.batches(0)] == [True] * 6
    np.testing.assert_array_equal(unlabelled.order(1), np.random.default_rng([3, 1]).permutation(48))


def tiny_yaware_config(**overrides):
    from phenossl.config import TrainConfig

    settings = {"method": "yaware", "label_column": "dose", "encoder": "resnet18", "epochs": 2, "batch_size": 16,
                "resolution": 32, "device": "cpu"}
    return TrainConfig(**{**settings, **overrides})


def test_log10_labels_and_unknown_cells():
    cells = pd.DataFrame({"dose": DOSES})
    labels = training_labels(cells, tiny_yaware_config(method_params={"yaware": {"label_transform": "log10"}}))
    np.testing.assert_allclose(labels[:6], [-2.0, -1.0, 0.0, 1.0, np.nan, np.nan])  # 0: a decade below 0.1
    assert training_labels(cells, tiny_yaware_config(method="simclr")) is None  # other methods read no label


def test_resumes_exactly(dosed_store, tiny_config, tmp_path):
    config = yaware(tiny_config, epochs=2)
    straight = train(dosed_store, config, tmp_path / "straight")
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        for event in iter_training(dosed_store, config, tmp_path / "resumed", cancel=cancel):
            if isinstance(event, EpochDone):
                cancel.set()
    resumed = train(dosed_store, config, tmp_path / "resumed", resume=True)
    a, b = (load_checkpoint(r.checkpoint)["model"] for r in (straight, resumed))
    assert a.keys() == b.keys() and any(key.startswith("branches.a.projector.") for key in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=f"{key} differs after resume")


@pytest.mark.parametrize(("column", "message"), [
    (None, "train.method yaware trains on a label: set train.label_column .*numeric columns: label, dose"),
    ("dosage", "'dosage' is not a column of the cell table: choose one of its numeric columns \\(label, dose\\)"),
    ("compound", "'compound' is not numeric \\(e.g. 'DMSO'\\).*numeric columns: label, dose"),
    ("plate", "'plate' is not numeric \\(e.g. 'P1'\\)"),
    ("empty", "'empty' has no value for any cell"),
])
def test_bad_label_columns_are_clear_errors_before_any_model_is_built(column, message, dosed_store, tiny_config,
                                                                      tmp_path, monkeypatch):
    from phenossl.train import trainer

    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(LabelColumnError, match=message):
        train(dosed_store, tiny_config(method="yaware", label_column=column), tmp_path / "run")


def test_a_constant_label_is_a_clear_error():
    cells = pd.DataFrame({"dose": [1.0, 1.0, np.nan, 1.0], "other": [1, 2, 3, 4]})
    with pytest.raises(LabelColumnError, match="'dose' is constant \\(1 for every labelled cell\\).*other"):
        training_labels(cells, tiny_yaware_config())
    assert numeric_columns(cells) == ["other"]
    with pytest.raises(LabelColumnError, match="'dose' has negative values .*label_transform: none"):
        training_labels(pd.DataFrame({"dose": [-1.0, 1.0]}),
                        tiny_yaware_config(method_params={"yaware": {"label_transform": "log10"}}))


def test_a_run_configuration_of_yaware_needs_its_label_column():
    with pytest.raises(ConfigError, match="train.method yaware trains on a label: set train.label_column"):
        config_from_dict({"train": {"method": "yaware"}})
    assert config_from_dict({"train": {"method": "yaware", "label_column": "dose"}}).train.label_column == "dose"
    assert config_from_dict({"representation": "random-init", "train": {"method": "yaware"}})  # no training
    assert RunConfig().train.label_column is None


def test_cli_run_trains_embeds_and_clusters_by_dose(tmp_path):
    from phenossl.cli import main
    from phenossl.synthetic import make_synthetic_plate, write_plate

    keys = [f"SYNTH01_{row}03_s1" for row in "BCDE"]  # DMSO 0, compound_A 0.6 and 3.0 uM, compound_B 1 uM
    plate = write_plate(make_synthetic_plate(0, field_size=192, field_keys=keys), tmp_path / "plate")
    config = {
        "name": "dose", "input": {"paths": [str(plate)], "channel_names": {"w1": "DNA", "w2": "tubulin", "w3": "actin"},
                                  "nuclear_channel": "DNA", "metadata": str(plate / "metadata.csv")},
        "tiles": {"size": 48, "border": "pad"},
        "train": {"method": "yaware", "label_column": "concentration", "epochs": 1, "batch_size": 8,
                  "resolution": 32, "device": "cpu",
                  "method_params": {"yaware": {"label_transform": "log10", "sigma": 0.5}}},
        "cluster": {"k": 2, "n_nearest": 2},
        "output": {"dir": str(tmp_path / "run")},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "config.yaml")]) == 0
    run = tmp_path / "run"
    clusters = pd.read_csv(run / "clusters.csv")
    assert len(clusters) == len(np.load(run / "embeddings.npy")) > 8
    assert set(clusters["concentration"]) == {0.0, 0.6, 1.0, 3.0}
    assert load_checkpoint(run / "checkpoint.pt")["train_config"]["method"] == "yaware"
