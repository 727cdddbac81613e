"""``phenossl cluster --algorithm / --k auto`` on a run folder: the choice, its curve, the saved configuration, the
exports of an HDBSCAN clustering, and clear messages for requests that cannot work."""

from __future__ import annotations

import json
import time

import anndata
import numpy as np
import pandas as pd
import pytest
import yaml

from phenossl.cli import main
from phenossl.config import config_from_dict
from phenossl.pipeline import RunPaths, prepare_run_dir
from phenossl.tiles import TileStoreWriter


def blob_run(tmp_path, n_per_blob: int = 40, n_noise: int = 0) -> RunPaths:
    """A run folder whose embeddings are four well-separated blobs (and ``n_noise`` scattered cells): no training."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5.0, size=(4, 8))
    truth = np.repeat(np.arange(4), n_per_blob)
    embeddings = centres[truth] + rng.normal(scale=0.2, size=(truth.size, 8))
    embeddings = np.vstack([embeddings, rng.uniform(-15, 15, size=(n_noise, 8))]).astype(np.float32)
    truth = np.concatenate([truth, np.full(n_noise, -1)])
    n_cells = truth.size
    config = config_from_dict({"name": "r", "input": {"kind": "crops"}, "cluster": {"k": 2, "preprocessing": "none"},
                               "train": {"device": "cpu", "epochs": 2, "batch_size": 8, "resolution": 16},
                               "output": {"dir": str(tmp_path / "run")}})
    paths = prepare_run_dir(config)
    writer = TileStoreWriter(paths.store, n_cells, ["DNA"], 16)
    writer.append(rng.random((n_cells, 1, 16, 16)).astype(np.float32))
    writer.finish(pd.DataFrame({"label": range(n_cells), "plate": "P1",
                                "well": [f"B{2 + i % 4:02d}" for i in range(n_cells)],
                                "compound": [f"c{t}" if t >= 0 else "none" for t in truth]}), {})
    time.sleep(0.01)
    np.save(paths.embeddings, embeddings)
    return paths


def test_k_auto_picks_four_records_the_curve_and_the_configuration(tmp_path, capsys):
    paths = blob_run(tmp_path)
    assert main(["cluster", str(paths.root), "--k", "auto", "--label", "compound", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "k auto: k=4: the best silhouette" in out
    curve = pd.read_csv(paths.root / "k_curve.csv")
    assert curve["k"].tolist() == list(range(2, 16))
    assert curve.loc[curve["chosen"], "k"].tolist() == [4]
    assert curve.set_index("k").loc[4, "ami_compound"] == pytest.approx(1.0)
    assert json.loads(paths.metrics.read_text())["k"] == 4
    saved = yaml.safe_load(paths.config.read_text())["cluster"]
    assert (saved["k"], saved["algorithm"]) == (4, "kmeans")
    assert pd.read_csv(paths.clusters)["cluster"].nunique() == 4


def test_hdbscan_from_the_command_line_names_the_noise_and_exports(tmp_path, capsys):
    paths = blob_run(tmp_path, n_noise=20)
    assert main(["cluster", str(paths.root), "--algorithm", "hdbscan", "--min-cluster-size", "15",
                 "--overwrite"]) == 0
    table = pd.read_csv(paths.clusters)
    noise = table["cluster"] == -1
    assert noise.sum() >= 15 and (table.loc[noise, "cluster_name"] == "noise").all()
    assert set(table.loc[~noise, "cluster"]) == {0, 1, 2, 3}
    metrics = json.loads(paths.metrics.read_text())
    assert (metrics["algorithm"], metrics["k"], metrics["n_noise"]) == ("hdbscan", 4, int(noise.sum()))
    saved = yaml.safe_load(paths.config.read_text())["cluster"]
    assert (saved["algorithm"], saved["hdbscan"]["min_cluster_size"]) == ("hdbscan", 15)
    # every export format takes it, the run's clusters.csv as it is
    assert main(["export", str(paths.root), "--out", str(tmp_path / "e.csv")]) == 0
    assert (pd.read_csv(tmp_path / "e.csv")["cluster_name"] == table["cluster_name"].astype(str)).all()
    assert main(["export", str(paths.root), "--format", "h5ad", "--out", str(tmp_path / "e.h5ad")]) == 0
    adata = anndata.read_h5ad(tmp_path / "e.h5ad")
    assert "noise" in adata.obs["cluster"].cat.categories and (adata.obs["cluster"] == "noise").sum() == noise.sum()
    assert main(["export", str(paths.root), "--format", "profiles", "--out", str(tmp_path / "profiles")]) == 0
    cells = pd.read_csv(tmp_path / "profiles" / "cells.csv")
    assert (cells["Metadata_Cluster"] == -1).sum() == noise.sum()
    # an HDBSCAN export to a CSV elsewhere, the run's own left as it was
    assert main(["cluster", str(paths.root), "--algorithm", "hdbscan", "--out", str(tmp_path / "x.csv")]) == 0
    exported = yaml.safe_load((tmp_path / "x.config.yaml").read_text())["cluster"]
    assert exported["algorithm"] == "hdbscan" and "noise" in set(pd.read_csv(tmp_path / "x.csv")["cluster_name"])


def test_gmm_from_the_command_line_is_seeded(tmp_path):
    paths = blob_run(tmp_path)
    for name in ("a.csv", "b.csv"):
        assert main(["cluster", str(paths.root), "--algorithm", "gmm", "--k", "4", "--out", str(tmp_path / name)]) == 0
    first, second = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert first["cluster"].nunique() == 4
    np.testing.assert_array_equal(first["cluster"], second["cluster"])


@pytest.mark.parametrize(("arguments", "message"), [
    (["--algorithm", "kmedoids"], ("cluster.algorithm: Value error, Unknown clustering algorithm 'kmedoids': "
                                   "choose one of kmeans, gmm, hdbscan.")),
    (["--algorithm", "hdbscan", "--min-cluster-size", "0"],
     "cluster.hdbscan.min_cluster_size: Input should be greater than or equal to 2"),
    (["--algorithm", "hdbscan", "--k", "auto"], "hdbscan finds the number of clusters itself: leave out --k"),
    (["--k", "auto", "--label", "dose"], "Label column(s) 'dose' not in the cell table"),
    (["--k", "many"], "cluster.k: Input should be a valid integer"),
])
def test_bad_requests_are_one_clear_message(tmp_path, capsys, arguments, message):
    paths = blob_run(tmp_path, n_per_blob=5)
    assert main(["cluster", str(paths.root), *arguments, "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()


def test_k_auto_with_one_cell_is_a_clear_message(tmp_path, capsys):
    paths = blob_run(tmp_path, n_per_blob=0, n_noise=1)
    assert main(["cluster", str(paths.root), "--k", "auto", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "Choosing k needs at least 3 cells" in err and "there is 1" in err and "Traceback" not in err


def test_k_auto_beside_an_export_refuses_to_replace_its_curve_before_clustering(tmp_path, capsys):
    paths = blob_run(tmp_path)
    out = tmp_path / "auto.csv"
    assert main(["cluster", str(paths.root), "--k", "auto", "--out", str(out)]) == 0
    curve = tmp_path / "auto.k_curve.csv"
    assert curve.is_file() and not (paths.root / "k_curve.csv").exists()  # the run folder is left as it was
    out.unlink()
    assert main(["cluster", str(paths.root), "--k", "auto", "--out", str(out)]) == 2
    assert "auto.k_curve.csv" in capsys.readouterr().err and not out.exists()  # nothing written
    assert main(["cluster", str(paths.root), "--k", "auto", "--out", str(out), "--overwrite"]) == 0
