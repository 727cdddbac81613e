"""The whole chain through the CLI, and what happens with bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenossl.cli import main
from phenossl.config import config_from_dict
from phenossl.errors import MetadataJoinError, NoNucleiError, OutputExistsError, TooFewCellsError
from phenossl.pipeline import run_pipeline


def _disc_field(shape=(160, 160), centres=((80, 80),), radius=9, value=3000):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 200, dtype=np.uint16)
    for y, x in centres:
        image[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value
    return image


def _plate(folder, n_fields=2, centres=((40, 40), (40, 120), (120, 40), (120, 120), (80, 80))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_fields):
        dna = _disc_field(centres=centres)
        actin = (rng.random(dna.shape) * 1000).astype(np.uint16)
        tifffile.imwrite(folder / f"P1_B0{i + 2}_s1_w1.tif", dna)
        tifffile.imwrite(folder / f"P1_B0{i + 2}_s1_w2.tif", actin)
    return folder


def _config(tmp_path, plate, **train):
    settings = dict(epochs=1, batch_size=4, resolution=32, device="cpu")
    settings.update(train)
    return config_from_dict({
        "name": "t",
        "input": {"paths": [str(plate)], "channel_names": {"w1": "DNA", "w2": "actin"}, "nuclear_channel": "DNA"},
        "segmentation": {"diameter": 18},
        "tiles": {"size": 48, "border": "pad"},
        "train": {"encoder": "resnet18", **settings},
        "cluster": {"k": 2, "n_nearest": 2},
        "output": {"dir": str(tmp_path / "run")},
    })


def test_run_writes_every_result_and_refuses_to_reuse_the_folder(tmp_path):
    config = _config(tmp_path, _plate(tmp_path / "plate"))
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
    config = _config(tmp_path, _plate(tmp_path / "plate"))
    run_pipeline(config)
    out = tmp_path / "export" / "clusters.csv"
    assert main(["cluster", str(tmp_path / "run"), "--k", "3", "--out", str(out)]) == 0
    assert pd.read_csv(out)["cluster"].nunique() == 3
    assert (tmp_path / "export" / "clusters.config.yaml").is_file()
    before = out.read_bytes()
    assert main(["cluster", str(tmp_path / "run"), "--k", "2", "--out", str(out)]) == 2
    assert "would replace 2 existing file(s)" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_images_without_nuclei_give_a_clear_error_and_write_no_store(tmp_path):
    plate = tmp_path / "plate"
    plate.mkdir()
    for w in (1, 2):
        tifffile.imwrite(plate / f"P1_B02_s1_w{w}.tif", np.full((64, 64), 200, dtype=np.uint16))
    with pytest.raises(NoNucleiError, match="[Nn]o nucle"):
        run_pipeline(_config(tmp_path, plate))
    assert not (tmp_path / "run" / "store").exists()


def test_more_clusters_than_cells_is_a_clear_error(tmp_path):
    config = _config(tmp_path, _plate(tmp_path / "plate", n_fields=1, centres=((80, 80),)))
    with pytest.raises(TooFewCellsError, match="1 cells were found but 2 clusters"):
        run_pipeline(config)


def test_metadata_that_joins_nothing_is_a_clear_error(tmp_path):
    plate = _plate(tmp_path / "plate")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"plate": ["X"], "well": ["Z99"], "compound": ["DMSO"]}).to_csv(meta, index=False)
    config = _config(tmp_path, plate)
    config.input.metadata = meta
    with pytest.raises(MetadataJoinError):
        run_pipeline(config)


def test_cli_reports_user_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("train:\n  methd: simclr\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.methd: unknown key (did you mean 'method'?)" in err and "Traceback" not in err


def test_unreadable_image_is_named_in_the_error(tmp_path, capsys):
    plate = _plate(tmp_path / "plate", n_fields=1)
    (plate / "P1_B02_s1_w2.tif").write_bytes(b"not a tiff at all")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(_config(tmp_path, plate).to_yaml())
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
    plate = _plate(tmp_path / "plate")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"plate": ["P1", "P1"], "well": ["B02", "B03"], "compound": ["DMSO", "drug"],
                  "dose": [0, 10]}).to_csv(meta, index=False)
    config = _config(tmp_path, plate)
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
