"""The whole chain through the CLI, and what happens with bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from pipeline_helpers import plate_folder, run_config

from phenossl.cli import main
from phenossl.errors import MetadataJoinError, NoNucleiError, OutputExistsError, TooFewCellsError
from phenossl.pipeline import run_pipeline


def test_run_writes_every_result_and_refuses_to_reuse_the_folder(tmp_path):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate"))
    result = run_pipeline(config)
    root = tmp_path / "run"
    for name in ("config.yaml", "checkpoint.pt", "history.csv", "embeddings.npy", "umap.npy", "clusters.csv",
                 "metrics.json", "overview.png"):
        assert (root / name).is_file(), name
    table = pd.read_csv(root / "clusters.csv")
    assert len(table) == result.n_cells == 10
    assert {"cell_id", "field", "plate", "well", "site", "label", "centroid_y", "centroid_x", "area", "cluster",
            "distance_to_centroid", "centroid_rank", "umap_x", "umap_y"} <= set(table.columns)
    assert set(table["well"]) == {"B02", "B03"}
    assert json.loads((root / "metrics.json").read_text())["n_cells"] == 10
    with pytest.raises(OutputExistsError, match="--resume"):
        run_pipeline(config)


def test_cli_recluster_and_export_never_overwrite_silently(tmp_path, capsys):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate"))
    run_pipeline(config)
    run = tmp_path / "run"
    out = tmp_path / "export" / "clusters.csv"
    assert main(["cluster", str(run), "--k", "3", "--out", str(out)]) == 0
    exported = pd.read_csv(out)
    assert exported["cluster"].nunique() == 3
    assert (tmp_path / "export" / "clusters.config.yaml").is_file()
    beside = np.load(tmp_path / "export" / "clusters.embeddings.npy")
    np.testing.assert_array_equal(beside, np.load(run / "embeddings.npy"))  # row i = CSV row i
    assert pd.read_csv(run / "clusters.csv")["cluster"].nunique() == 2  # the run's own clustering untouched
    export_files = {p: p.read_bytes() for p in (tmp_path / "export").iterdir()}
    assert main(["cluster", str(run), "--k", "2", "--out", str(out)]) == 2
    assert "would replace" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "export").iterdir()} == export_files

    run_files = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["cluster", str(run), "--k", "3"]) == 2  # reclustering in the run folder replaces its results
    err = capsys.readouterr().err
    assert "already holds a clustering" in err and "--out" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == run_files
    assert main(["cluster", str(run), "--k", "3", "--overwrite"]) == 0
    assert pd.read_csv(run / "clusters.csv")["cluster"].nunique() == 3
    assert json.loads((run / "metrics.json").read_text())["k"] == 3


def test_cli_export_writes_the_runs_own_clustering_elsewhere(tmp_path):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate"))
    run_pipeline(config)
    out = tmp_path / "mine.csv"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    ours, runs = pd.read_csv(out), pd.read_csv(tmp_path / "run" / "clusters.csv")
    pd.testing.assert_series_equal(ours["cluster"], runs["cluster"])  # same k and seed: the same clustering
    assert (tmp_path / "mine.embeddings.npy").is_file() and (tmp_path / "mine.config.yaml").is_file()


def test_images_without_nuclei_give_a_clear_error_and_write_no_store(tmp_path):
    plate = tmp_path / "plate"
    plate.mkdir()
    for w in (1, 2):
        tifffile.imwrite(plate / f"P1_B02_s1_w{w}.tif", np.full((64, 64), 200, dtype=np.uint16))
    with pytest.raises(NoNucleiError, match="[Nn]o nucle"):
        run_pipeline(run_config(tmp_path, plate))
    assert not (tmp_path / "run" / "store").exists()


def test_more_clusters_than_cells_is_a_clear_error(tmp_path):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate", n_fields=1, centres=((80, 80),)))
    with pytest.raises(TooFewCellsError, match="1 cells were found but 2 clusters"):
        run_pipeline(config)


def test_metadata_that_joins_nothing_is_a_clear_error_before_any_segmentation(tmp_path, monkeypatch):
    plate = plate_folder(tmp_path / "plate")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"plate": ["X"], "well": ["Z99"], "compound": ["DMSO"]}).to_csv(meta, index=False)
    config = run_config(tmp_path, plate)
    config.input.metadata = meta

    def segmentation_must_not_run(*_args, **_kwargs):
        raise AssertionError("segmentation ran before the metadata was checked")

    monkeypatch.setattr("phenossl.tiles.build.segment_field", segmentation_must_not_run)
    with pytest.raises(MetadataJoinError, match=r"joins none of the 2 row\(s\).*'Z99'"):
        run_pipeline(config)
    assert not (tmp_path / "run" / "store").exists()


def test_cli_reports_user_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("train:\n  methd: simclr\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.methd: unknown key (did you mean 'method'?)" in err and "Traceback" not in err


def test_unreadable_image_is_named_in_the_error(tmp_path, capsys):
    plate = plate_folder(tmp_path / "plate", n_fields=1)
    (plate / "P1_B02_s1_w2.tif").write_bytes(b"not a tiff at all")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(run_config(tmp_path, plate).to_yaml())
    assert main(["run", str(config_path)]) == 2
    assert "P1_B02_s1_w2.tif" in capsys.readouterr().err


def test_config_command_prints_a_complete_valid_configuration(tmp_path, capsys):
    from phenossl.config import load_config

    assert main(["config", "--set", "train.weight_a=0.5", "--set", "cluster.k=7"]) == 0
    path = tmp_path / "full.yaml"
    path.write_text(capsys.readouterr().out)
    config = load_config(path)
    assert config.train.weight_a == 0.5 and config.cluster.k == 7
    assert config.train.composition_a.name == "morphology"


def test_cli_dose_response_scores_control_and_reference_and_never_overwrites(tmp_path, capsys):
    plate = plate_folder(tmp_path / "plate")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"plate": ["P1", "P1"], "well": ["B02", "B03"], "compound": ["DMSO", "drug"],
                  "dose": [0, 10]}).to_csv(meta, index=False)
    config = run_config(tmp_path, plate)
    config.input.metadata = meta
    run_pipeline(config)
    out = tmp_path / "dose.csv"
    args = ["dose-response", str(tmp_path / "run"), "--control", "compound=DMSO", "--reference", "dose=10",
            "--by", "compound,dose", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out)
    assert list(table["compound"]) == ["DMSO", "drug"] and list(table["n_cells"]) == [5, 5]
    assert np.allclose(table["mean"], [0.0, 1.0])  # the axis runs from the control mean to the reference mean
    assert "5 control cells (score 0) -> 5 reference cells" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["dose-response", str(tmp_path / "run"), "--control", "compound=PBS", "--reference", "dose=10"]) == 2
    assert "No cell matches the control selection" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_command_writes_the_csv_and_the_overview_and_keeps_them(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "demo"
    args = ["demo", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out / "clusters.csv")
    assert {"compound", "density_condition", "cluster", "umap_x", "well"} <= set(table.columns)
    assert table["cluster"].nunique() == 3 and table["compound"].nunique() == 3
    with Image.open(out / "overview.png") as overview:
        assert min(overview.size) > 400
    printed = capsys.readouterr().out
    assert f"{len(table)} cells in 3 clusters" in printed and str(out / "clusters.csv") in printed
    before = (out / "clusters.csv").read_bytes()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "clusters.csv").read_bytes() == before
