"""The report's files and the CLI: clear messages for runs it cannot report on, nothing replaced without
--overwrite, pre-cropped cells reported without the variables they cannot give, and a real small run."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_helpers import density_embedding, kmeans_labels, make_run, plate_cells

from phenossl.cli import main
from phenossl.errors import InputError, OutputExistsError
from phenossl.report import run_report


@pytest.fixture(scope="module")
def cells():
    return plate_cells(seed=1, n_wells=4)[0]


def test_a_run_without_a_clustering_says_how_to_make_one_and_k_reports_a_new_one(tmp_path, cells):
    paths = make_run(tmp_path / "run", density_embedding(cells), None, cells)
    with pytest.raises(InputError, match="has no clustering.*phenossl cluster.*--k K"):
        run_report(paths.root)
    assert not list(paths.root.glob("report*"))
    report = run_report(paths.root, k=3)
    assert report.k == 3 and [p.name for p in report.written] == ["report-k3.csv", "report-k3.md", "report-k3.png"]
    assert all(p.stat().st_size > 0 for p in report.written)
    assert pd.read_csv(report.written[0])["variable"].tolist() == report.table["variable"].tolist()


def test_a_run_without_embeddings_or_with_a_stale_clustering_is_a_clear_error(tmp_path, cells, capsys):
    embeddings = density_embedding(cells)
    paths = make_run(tmp_path / "run", embeddings, kmeans_labels(embeddings), cells)
    stale = paths.embeddings.stat().st_mtime - 100
    os.utime(paths.clusters, (stale, stale))
    with pytest.raises(InputError, match="older than the run's embeddings"):
        run_report(paths.root)
    paths.embeddings.unlink()
    assert main(["report", str(paths.root)]) == 2
    assert "no embeddings in" in capsys.readouterr().err
    with pytest.raises(InputError, match="not a phenossl run folder"):
        run_report(tmp_path / "nothing")


def test_the_report_is_never_written_over_without_overwrite(tmp_path, cells, capsys):
    embeddings = density_embedding(cells)
    paths = make_run(tmp_path / "run", embeddings, kmeans_labels(embeddings), cells)
    assert main(["report", str(paths.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# What the clusters of 'synthetic' follow") and "report.png" in out
    files = [paths.root / f"report.{ext}" for ext in ("csv", "md", "png")]
    before = [f.read_bytes() for f in files]
    (paths.root / "report.md").write_text("the user's notes")
    assert main(["report", str(paths.root)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (paths.root / "report.md").read_text() == "the user's notes"
    assert [f.read_bytes() for f in (files[0], files[2])] == [before[0], before[2]]
    with pytest.raises(OutputExistsError):
        run_report(paths.root)
    assert main(["report", str(paths.root), "--overwrite"]) == 0
    assert (paths.root / "report.md").read_text().startswith("# What the clusters")
    assert not list(paths.root.glob(".*.tmp"))


def test_pre_cropped_cells_get_no_density_and_say_why(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    cells = pd.DataFrame({"crop_index": np.arange(n), "plate": np.repeat(["W1", "W2"], 30),
                          "well": np.repeat(["B02", "B03", "C02", "C03"], 15), "site": "s1",
                          "compound": np.tile(["DMSO", "cyc"], 30), "concentration_uM": np.tile([0.0, 5.0], 30)})
    embeddings = rng.normal(size=(n, 8))
    paths = make_run(tmp_path / "run", embeddings, kmeans_labels(embeddings), cells)
    report = run_report(paths.root)
    rows = report.table.set_index("variable")
    for name in ("nuclei_per_field", "neighbours", "border_distance"):
        assert np.isnan(rows.loc[name, "cluster_ami"])
        assert "pre-cropped cells without field positions" in rows.loc[name, "note"]
    assert rows.loc["nucleus_area", "note"] == "px, from the tile's nucleus mask"
    assert rows.loc["nucleus_area", "n_cells"] == n
    assert {"compound", "concentration_uM"} <= set(rows.index[rows["group"] == "treatment"])
    assert "crop_index" not in rows.index
    assert "- neighbours: the store holds pre-cropped cells" in report.markdown


def test_cli_report_on_a_small_trained_run(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
    from pipeline_helpers import plate_folder, run_config

    from phenossl.pipeline import run_pipeline

    config = run_config(tmp_path, plate_folder(tmp_path / "plate", n_fields=3))
    run_pipeline(config)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "| neighbours | nuisance | local density | continuous |" in out and "| well | nuisance | plate position | categorical |" in out
    for ext in ("csv", "md", "png"):
        assert (tmp_path / "run" / f"report.{ext}").stat().st_size > 0


def test_hdbscan_noise_is_not_counted_as_a_cluster(tmp_path, cells):
    from phenossl.pipeline import open_run
    from phenossl.report.run import describe_clusters

    embeddings = density_embedding(cells)
    labels = kmeans_labels(embeddings).copy()
    labels[:5] = -1  # HDBSCAN's noise cells
    paths = make_run(tmp_path / "run", embeddings, labels, cells)
    config, _, store = open_run(paths.root)
    report = describe_clusters(config, store, embeddings, labels, source="test")
    k = len(set(labels.tolist()) - {-1})
    assert report.k == k and f"k={k}, 5 noise cells" in report.title
