"""`phenossl export --format h5ad|profiles`: the files opened with the libraries that read them (anndata, scanpy,
pycytominer), agreeing with the CSV export row by row, written all or none, never over a file silently."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from phenossl.cli import main
from phenossl.config import config_from_dict, save_config
from phenossl.export_formats import cell_profiles, feature_names, h5ad_plain, obs_table, well_profiles
from phenossl.pipeline import RunPaths
from phenossl.tiles.store import TileStoreWriter

anndata = pytest.importorskip("anndata", reason="anndata is a dependency of phenossl: install phenossl again")

WELLS = {"B02": "DMSO", "B03": "DMSO", "B04": "taxol", "B05": "taxol"}
PER_WELL, DIM, TILE = 12, 8, 16


def plate_run(root, *, clustered: bool = True, seed: int = 3) -> RunPaths:
    """A run folder without training: a tile store of 48 cells in 4 wells (2 DMSO, 2 taxol), embeddings that
    separate the compounds, the seeded configuration (k = 2), and (``clustered``) the run's own clustering made
    by ``phenossl cluster``."""
    rng = np.random.default_rng(seed)
    paths = RunPaths(root)
    root.mkdir(parents=True)
    save_config(config_from_dict({"name": "formats", "seed": seed, "cluster": {"k": 2},
                                  "output": {"dir": str(root)}}), paths.config)
    cells = pd.DataFrame([
        {"plate": "P1", "well": well, "site": 1 + i % 3, "field": f"P1_{well}_s{1 + i % 3}", "label": i + 1,
         "centroid_y": float(rng.uniform(0, 200)), "centroid_x": float(rng.uniform(0, 200)), "area": 80,
         "padded": False, "compound": compound, "dense": bool(i % 2), "note": "odd" if i % 5 == 0 else None}
        for well, compound in WELLS.items() for i in range(PER_WELL)
    ])
    n = len(cells)
    writer = TileStoreWriter(paths.store, n, ["DNA"], TILE)
    writer.append(rng.random((n, 1, TILE, TILE)).astype(np.float32))
    writer.finish(cells, {"source": "test"})
    shift = np.where(cells["compound"].to_numpy() == "taxol", 6.0, 0.0)[:, None]
    np.save(paths.embeddings, (rng.normal(size=(n, DIM)) + shift).astype(np.float32))
    if clustered:
        assert main(["cluster", str(root)]) == 0
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return plate_run(tmp_path_factory.mktemp("formats") / "run")


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run exported three ways: (csv table, embeddings.npy, AnnData, profiles folder)."""
    out = tmp_path_factory.mktemp("exports")
    assert main(["export", str(run.root), "--out", str(out / "cells.csv")]) == 0
    assert main(["export", str(run.root), "--format", "h5ad", "--out", str(out / "cells.h5ad")]) == 0
    assert main(["export", str(run.root), "--format", "profiles", "--out", str(out / "profiles")]) == 0
    return (pd.read_csv(out / "cells.csv"), np.load(out / "cells.embeddings.npy"),
            anndata.read_h5ad(out / "cells.h5ad"), out / "profiles")


# ------------------------------------------------------------------------------------------------
# AnnData


def test_h5ad_holds_the_csv_rows_in_order_the_embedding_layout_and_configuration(exported):
    table, embeddings, adata, _ = exported
    assert adata.n_obs == len(table) == 4 * PER_WELL
    assert list(adata.obs_names) == [str(i) for i in table["cell_id"]]
    assert isinstance(adata.obs["cluster"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["cluster"].cat.categories) == ["0", "1"]
    np.testing.assert_array_equal(adata.obs["cluster"].astype(int).to_numpy(), table["cluster"].to_numpy())
    for column in ("plate", "well", "site", "compound", "centroid_y", "distance_to_centroid", "centroid_rank"):
        np.testing.assert_array_equal(adata.obs[column].to_numpy(), table[column].to_numpy(), err_msg=column)
    assert adata.obs["dense"].dtype == bool
    assert adata.obsm["X_phenossl"].dtype == np.float32
    np.testing.assert_array_equal(adata.obsm["X_phenossl"], embeddings)
    np.testing.assert_allclose(adata.obsm["X_umap"], table[["umap_x", "umap_y"]].to_numpy(), rtol=1e-6)
    ours = adata.uns["phenossl"]
    assert ours["config"]["train"]["method"] == "mocov2" and ours["config"]["seed"] == 3
    assert ours["config"]["cluster"]["k"] == 2 and "seed: 3" in ours["config_yaml"]
    assert ours["metrics"]["k"] == 2 and ours["metrics"]["n_cells"] == 4 * PER_WELL


def test_scanpy_builds_a_neighbour_graph_and_clusters_on_the_embedding(exported):
    sc = pytest.importorskip("scanpy", reason="scanpy is in the test extra: pip install -e '.[test]'")
    adata = exported[2].copy()
    sc.pp.neighbors(adata, use_rep="X_phenossl", n_neighbors=8, random_state=0)
    assert adata.obsp["connectivities"].shape == (adata.n_obs, adata.n_obs)
    try:
        sc.tl.leiden(adata, flavor="igraph", n_iterations=2, random_state=0)
    except ImportError as error:  # leiden needs igraph (or leidenalg), which scanpy does not install
        pytest.skip(f"scanpy's leiden needs igraph, not installed here: {error}")
    assert adata.obs["leiden"].nunique() >= 2
    # the compounds are far apart in the embedding: leiden's clusters never mix them
    mixed = pd.crosstab(adata.obs["leiden"], adata.obs["compound"]).gt(0).sum(axis=1)
    assert (mixed == 1).all()


def test_h5ad_is_never_written_over_an_existing_file_without_overwrite(run, tmp_path, capsys):
    target = tmp_path / "cells.h5ad"
    target.write_bytes(b"an older export")
    assert main(["export", str(run.root), "--format", "h5ad", "--out", str(target)]) == 2
    assert "would replace" in capsys.readouterr().err
    assert target.read_bytes() == b"an older export"
    assert main(["export", str(run.root), "--format", "h5ad", "--out", str(target), "--overwrite"]) == 0
    assert anndata.read_h5ad(target).n_obs == 4 * PER_WELL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad"]  # no temporary left


def test_a_failed_h5ad_write_leaves_nothing_behind(run, tmp_path, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", full_disk)
    assert main(["export", str(run.root), "--format", "h5ad", "--out", str(tmp_path / "cells.h5ad")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_its_own_clustering_is_clustered_for_the_export_and_left_as_it_was(tmp_path):
    paths = plate_run(tmp_path / "run", clustered=False)
    before = sorted(p.name for p in paths.root.iterdir())
    assert main(["export", str(paths.root), "--format", "h5ad", "--out", str(tmp_path / "c.h5ad")]) == 0
    adata = anndata.read_h5ad(tmp_path / "c.h5ad")
    assert adata.obs["cluster"].nunique() == 2 and "X_umap" in adata.obsm
    assert adata.uns["phenossl"]["metrics"]["k"] == 2
    assert sorted(p.name for p in paths.root.iterdir()) == before


def test_obs_columns_of_mixed_python_objects_become_writable(tmp_path):
    table = pd.DataFrame({"cell_id": [0, 1, 2], "cluster": [1, 0, 1],
                          "flag": pd.Series([True, False, True], dtype=object),
                          "maybe": pd.Series([True, None, False], dtype=object),
                          "mixed": pd.Series(["a", 3, None], dtype=object),
                          "number": pd.Series([1, 2.5, None], dtype=object)})
    obs = obs_table(table)
    assert obs["flag"].dtype == bool and obs["number"].dtype.kind == "f"
    assert obs["mixed"].tolist()[:2] == ["a", "3"] and pd.isna(obs["mixed"].iloc[2])
    config = {"name": "x", "none": None, "augment": [{"op": "flip", "p": 0.5}], "channels": ["DNA", "actin"],
              "empty": [], "mixed": [1, "two", None]}
    adata = anndata.AnnData(obs=obs, uns={"phenossl": h5ad_plain(config)})
    adata.write_h5ad(tmp_path / "x.h5ad")
    back = anndata.read_h5ad(tmp_path / "x.h5ad")
    maybe = back.obs["maybe"].tolist()
    assert maybe[0] is True and pd.isna(maybe[1]) and maybe[2] is False
    assert back.uns["phenossl"]["augment"]["0"]["op"] == "flip"
    assert list(back.uns["phenossl"]["channels"]) == ["DNA", "actin"]


# ------------------------------------------------------------------------------------------------
# Profiles (pycytominer)


def test_profiles_follow_pycytominers_conventions(exported):
    table, embeddings, _, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["cells.csv", "wells.csv"]
    cells, wells = pd.read_csv(folder / "cells.csv"), pd.read_csv(folder / "wells.csv")
    features = feature_names(DIM)
    metadata = [c for c in cells.columns if c.startswith("Metadata_")]
    assert list(cells.columns) == [*metadata, *features]  # metadata first, then one column per dimension
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_compound", "Metadata_Cluster"} <= set(metadata)
    np.testing.assert_array_equal(cells["Metadata_Cluster"], table["cluster"])
    np.testing.assert_allclose(cells[features].to_numpy(), embeddings, rtol=1e-6)
    assert list(wells["Metadata_Well"]) == list(WELLS) and (wells["Metadata_Object_Count"] == PER_WELL).all()
    assert list(wells["Metadata_compound"]) == list(WELLS.values())
    median = np.median(embeddings[table["well"].to_numpy() == "B04"], axis=0)
    np.testing.assert_allclose(wells.loc[wells["Metadata_Well"] == "B04", features].to_numpy()[0], median, rtol=1e-5)
    assert "Metadata_Cluster" not in wells.columns and "Metadata_Site" not in wells.columns


def test_pycytominer_normalises_to_dmso_selects_features_and_aggregates_the_export(exported):
    pycytominer = pytest.importorskip("pycytominer", reason="pycytominer is in the test extra: pip install -e '.[test]'")
    _, _, _, folder = exported
    cells = pd.read_csv(folder / "cells.csv")
    features = feature_names(DIM)
    normalized = pycytominer.normalize(cells, features=features, meta_features="infer",
                                       samples="Metadata_compound == 'DMSO'", method="standardize")
    dmso = normalized[normalized["Metadata_compound"] == "DMSO"]
    np.testing.assert_allclose(dmso[features].mean(), 0, atol=1e-6)  # standardised to the controls
    selected = pycytominer.feature_select(normalized, features=features,
                                          operation=["variance_threshold", "correlation_threshold"])
    kept = [c for c in selected.columns if c.startswith("phenossl_")]
    assert kept and set(kept) <= set(features)
    wells = pycytominer.aggregate(selected, strata=["Metadata_Plate", "Metadata_Well"], features=kept,
                                  operation="median")
    assert list(wells["Metadata_Well"]) == list(WELLS)
    taxol = wells["Metadata_Well"].isin(["B04", "B05"]).to_numpy()
    shift = wells[kept].to_numpy()
    assert np.abs(shift[taxol]).mean() > 3 * np.abs(shift[~taxol]).mean()  # taxol wells far from DMSO
    # phenossl's own wells.csv is pycytominer's median aggregate of the raw profiles
    ours = pd.read_csv(folder / "wells.csv")
    theirs = pycytominer.aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"], features=features,
                                   operation="median")
    np.testing.assert_allclose(ours[features].to_numpy(), theirs[features].to_numpy(), rtol=1e-5)


def test_profiles_are_written_together_or_not_at_all(run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "wells.csv").write_text("older\n")
    assert main(["export", str(run.root), "--format", "profiles", "--out", str(folder)]) == 2
    assert "would replace" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["wells.csv"]
    assert (folder / "wells.csv").read_text() == "older\n"

    def fail_second_write(self, path, *args, **kwargs):
        if os.fspath(path).find("wells.csv") >= 0:
            raise OSError(28, "No space left on device")
        return original(self, path, *args, **kwargs)

    original = pd.DataFrame.to_csv
    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_second_write)
    fresh = tmp_path / "new"
    assert main(["export", str(run.root), "--format", "profiles", "--out", str(fresh)]) == 2
    assert not fresh.exists()  # neither file, and not the folder made for them


def test_profiles_need_plate_and_well():
    table = pd.DataFrame({"cell_id": [0, 1], "cluster": [0, 1]})
    with pytest.raises(Exception, match="no plate or well column"):
        cell_profiles(table, np.zeros((2, 3), np.float32))


def test_well_medians_by_plate_and_well():
    cells = pd.DataFrame({"Metadata_Plate": ["P1"] * 3 + ["P2"], "Metadata_Well": ["A01", "A01", "A02", "A01"],
                          "Metadata_dose": [1, 2, 3, 4], "phenossl_0000": [1.0, 3.0, 5.0, 7.0]})
    wells = well_profiles(cells)
    assert wells.to_dict("list") == {"Metadata_Plate": ["P1", "P1", "P2"], "Metadata_Well": ["A01", "A02", "A01"],
                                     "Metadata_Object_Count": [2, 1, 1], "phenossl_0000": [2.0, 5.0, 7.0]}
