"""Export: per-cell CSV with embeddings and config beside it, never overwriting silently, atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from phenossl.cluster import EmbeddingSpace
from phenossl.errors import ConfigError, InputError, OutputExistsError
from phenossl.export import RESULT_COLUMNS, cluster_table, export_clusters, sidecar_paths

N_CELLS = 40


@pytest.fixture
def run():
    """A small clustered run: (cells, clustering, umap_xy, embeddings, config)."""
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([rng.normal(0, 1, (20, 6)), rng.normal(8, 1, (20, 6))]).astype(np.float32)
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(N_CELLS),
            "image": [f"img_{i // 10}.tif" for i in range(N_CELLS)],
            "plate": "P01",
            "well": ["B02"] * 20 + ["C05"] * 20,
            "site": np.arange(N_CELLS) % 4,
            "centroid_y": rng.uniform(0, 512, N_CELLS),
            "centroid_x": rng.uniform(0, 512, N_CELLS),
            "compound": ["DMSO"] * 20 + ["taxol"] * 20,
        }
    )
    clustering = EmbeddingSpace(embeddings).cluster(2, seed=0, n_nearest=3)
    umap_xy = rng.normal(size=(N_CELLS, 2)).astype(np.float32)
    config = {"name": "demo", "cluster": {"k": 2, "seed": 0}, "channels": ("DNA", "tubulin")}
    return cells, clustering, umap_xy, embeddings, config


def export(path, run, **kwargs):
    cells, clustering, umap_xy, embeddings, config = run
    return export_clusters(
        path, cells, clustering, umap_xy=umap_xy, embeddings=embeddings, config=config, **kwargs
    )


def test_csv_has_cell_columns_then_results_one_row_per_cell(tmp_path, run):
    cells, clustering, umap_xy, _, _ = run
    paths = export(tmp_path / "clusters.csv", run)
    table = pd.read_csv(paths.csv)
    assert list(table.columns) == [*cells.columns, *RESULT_COLUMNS]
    assert len(table) == N_CELLS
    np.testing.assert_array_equal(table["cluster"], clustering.labels)
    np.testing.assert_array_equal(table["centroid_rank"], clustering.nearest_rank)
    np.testing.assert_allclose(table["distance_to_centroid"], clustering.distance, rtol=1e-6)
    np.testing.assert_allclose(table[["umap_x", "umap_y"]], umap_xy, rtol=1e-6)
    assert table["well"].tolist() == cells["well"].tolist()
    assert sorted(table.loc[table["centroid_rank"] > 0, "centroid_rank"].tolist()) == [1, 1, 2, 2, 3, 3]


def test_embeddings_and_config_are_written_beside_the_csv(tmp_path, run):
    _, _, _, embeddings, config = run
    paths = export(tmp_path / "clusters.csv", run)
    assert paths.embeddings == tmp_path / "clusters.embeddings.npy"
    assert paths.config == tmp_path / "clusters.config.yaml"
    assert paths.written() == [paths.csv, paths.embeddings, paths.config]
    np.testing.assert_array_equal(np.load(paths.embeddings), embeddings)
    assert yaml.safe_load(paths.config.read_text()) == {**config, "channels": ["DNA", "tubulin"]}


def test_optional_outputs_are_skipped_and_umap_left_empty(tmp_path, run):
    cells, clustering, *_ = run
    paths = export_clusters(tmp_path / "c.csv", cells, clustering)
    assert (paths.embeddings, paths.config) == (None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]
    table = pd.read_csv(paths.csv)
    assert table["umap_x"].isna().all() and table["umap_y"].isna().all()


def test_config_as_yaml_text_is_written_as_given(tmp_path, run):
    cells, clustering, *_ = run
    text = "# my run\nname: demo\nk: 4\n"
    paths = export_clusters(tmp_path / "c.csv", cells, clustering, config=text)
    assert paths.config.read_text() == text
    with pytest.raises(ConfigError, match="mapping"):
        export_clusters(tmp_path / "d.csv", cells, clustering, config="just a string")


@pytest.mark.parametrize("existing", ["clusters.csv", "clusters.embeddings.npy", "clusters.config.yaml"])
def test_refuses_to_overwrite_and_writes_nothing(tmp_path, run, existing):
    (tmp_path / existing).write_text("old")
    with pytest.raises(OutputExistsError, match=existing.replace(".", r"\.")):
        export(tmp_path / "clusters.csv", run)
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "old"


def test_error_lists_every_existing_target(tmp_path, run):
    export(tmp_path / "clusters.csv", run)
    with pytest.raises(OutputExistsError, match="3 existing") as error:
        export(tmp_path / "clusters.csv", run)
    for path in sidecar_paths(tmp_path / "clusters.csv"):
        assert str(path) in str(error.value)


def test_overwrite_replaces_all_files(tmp_path, run):
    for path in (tmp_path / "clusters.csv", *sidecar_paths(tmp_path / "clusters.csv")):
        path.write_text("old")
    paths = export(tmp_path / "clusters.csv", run, overwrite=True)
    assert len(pd.read_csv(paths.csv)) == N_CELLS
    assert np.load(paths.embeddings).shape == (N_CELLS, 6)
    assert yaml.safe_load(paths.config.read_text())["name"] == "demo"


def test_no_temporary_files_are_left(tmp_path, run):
    export(tmp_path / "clusters.csv", run)
    export(tmp_path / "clusters.csv", run, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clusters.config.yaml",
        "clusters.csv",
        "clusters.embeddings.npy",
    ]


def test_failed_write_leaves_the_old_file_untouched(tmp_path, run, monkeypatch):
    export(tmp_path / "clusters.csv", run)
    before = (tmp_path / "clusters.csv").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)
    with pytest.raises(OSError, match="disk full"):
        export(tmp_path / "clusters.csv", run, overwrite=True)
    assert (tmp_path / "clusters.csv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_row_count_mismatches_are_input_errors(tmp_path, run):
    cells, clustering, umap_xy, embeddings, _ = run
    with pytest.raises(InputError, match="39 rows"):
        export_clusters(tmp_path / "a.csv", cells.iloc[:-1], clustering)
    with pytest.raises(InputError, match="umap_xy"):
        export_clusters(tmp_path / "a.csv", cells, clustering, umap_xy=umap_xy[:-1])
    with pytest.raises(InputError, match="embeddings"):
        export_clusters(tmp_path / "a.csv", cells, clustering, embeddings=embeddings[:-1])
    assert not list(tmp_path.iterdir())


def test_named_index_is_kept_and_old_results_are_replaced(run):
    cells, clustering, umap_xy, _, _ = run
    indexed = cells.set_index("cell_id").assign(cluster=-1)
    table = cluster_table(indexed, clustering, umap_xy)
    assert table.columns[0] == "cell_id"
    assert list(table.columns).count("cluster") == 1
    np.testing.assert_array_equal(table["cluster"], clustering.labels)


def test_memmapped_embeddings_are_exported(tmp_path, run):
    cells, clustering, _, embeddings, _ = run
    np.save(tmp_path / "source.npy", embeddings)
    mapped = np.load(tmp_path / "source.npy", mmap_mode="r")
    paths = export_clusters(tmp_path / "out" / "clusters.csv", cells, clustering, embeddings=mapped)
    np.testing.assert_array_equal(np.load(paths.embeddings), embeddings)
