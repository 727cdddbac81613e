"""Export formats besides the CSV: AnnData (``.h5ad``, for scanpy) and profiles (pycytominer's conventions).

Each format starts from the same per-cell table :func:`phenossl.export.cluster_table` makes (the CSV's rows, in
the same order), the embeddings (row i = cell i), the run configuration and its clustering metrics, so the three
exports of one run always agree. The table-building functions are pure; the writers check every target before
writing, write to temporaries beside them and move them into place together (all or none).

- ``h5ad``: one file; ``obs`` = the per-cell table (``cluster`` categorical), ``obsm["X_phenossl"]`` = the
  embedding, ``obsm["X_umap"]`` = the layout when the run has one, ``uns["phenossl"]`` = configuration + metrics.
- ``profiles``: a folder holding ``cells.csv`` (one row per cell) and ``wells.csv`` (the median per plate and
  well, as pycytominer's ``aggregate`` does by default); ``Metadata_``-prefixed metadata columns, then one
  feature column per embedding dimension (``phenossl_0000``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.errors import InputError

FORMATS: dict[str, str] = {
    "csv": "CSV (.csv), with the embeddings and configuration beside it",
    "h5ad": "AnnData (.h5ad), for scanpy",
    "profiles": "Profiles for pycytominer (a folder: cells.csv, wells.csv)",
}
PROFILE_FILES = ("cells.csv", "wells.csv")
FEATURE_PREFIX = "phenossl_"


@dataclass(frozen=True)
class Written:
    """The files an export in another format than CSV wrote (the same ``written()`` as ExportPaths)."""

    paths: tuple[Path, ...]

    def written(self) -> list[Path]:
        return list(self.paths)


def check_format(name: str) -> str:
    """The format name, or an InputError listing the formats."""
    if name not in FORMATS:
        raise InputError(f"Unknown export format {name!r}: choose one of {', '.join(FORMATS)}.")
    return name


def format_targets(name: str, out: str | os.PathLike) -> list[Path]:
    """The files an export in format ``name`` to ``out`` writes (for profiles, ``out`` is a folder)."""
    from phenossl.export import export_paths

    out = Path(out)
    if check_format(name) == "csv":
        return export_paths(out, embeddings=True, config=True).written()
    if name == "h5ad":
        return [out]
    if out.is_file():
        raise InputError(f"{out} is a file: profiles are written into a folder (cells.csv and wells.csv). "
                         "Choose a folder name.")
    return [out / name for name in PROFILE_FILES]


# ------------------------------------------------------------------------------------------------
# AnnData


def obs_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-cell table as AnnData's ``obs``: string index (the cell ids), ``cluster`` categorical (its
    categories the cluster ids as text, in numeric order, as scanpy's own clusterings are; HDBSCAN's noise -1 as
    "noise", last), the UMAP columns
    left out (they are ``obsm["X_umap"]``), and object columns made writable: bool stays bool, numbers become
    numbers, text becomes str (a categorical when values are missing, so missing stays missing)."""
    obs = table.drop(columns=[c for c in ("umap_x", "umap_y", "cluster_name") if c in table.columns]).copy()
    for column in obs.columns:
        if column != "cluster" and obs[column].dtype == object:
            obs[column] = writable_column(obs[column])
    if "cluster" in obs.columns:  # HDBSCAN's noise (-1) is the category "noise", after the clusters
        from phenossl.cluster.algorithms import cluster_name

        ids = sorted(pd.unique(obs["cluster"].astype(np.int64)), key=lambda i: (i < 0, i))
        names = obs["cluster"].astype(np.int64).map(cluster_name)
        obs["cluster"] = pd.Categorical(names, categories=[cluster_name(i) for i in ids])
    ids = obs["cell_id"] if "cell_id" in obs.columns else pd.Series(np.arange(len(obs)))
    names = ids.astype(str).to_numpy()
    obs.index = pd.Index(names if len(set(names)) == len(names) else np.arange(len(obs)).astype(str), name="cell")
    obs.columns = [str(column) for column in obs.columns]
    return obs


def writable_column(values: pd.Series) -> pd.Series:
    """An object column as h5ad can store it (mixed Python objects cannot be written)."""
    present = values.dropna()
    if len(present) and all(isinstance(v, (bool, np.bool_)) for v in present):
        return values.astype(bool) if len(present) == len(values) else values.astype("boolean")
    if len(present) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in present):
        return pd.to_numeric(values)
    text = values.map(lambda v: v if pd.isna(v) else str(v))
    return text.astype(object) if len(present) == len(values) else pd.Series(pd.Categorical(text), index=values.index)


def h5ad_plain(value: Any) -> Any:
    """A configuration / metrics value as h5ad's ``uns`` can store it: mappings stay nested dicts, lists of
    one scalar kind become arrays, lists of mappings become dicts keyed "0", "1"..., other mixed lists text."""
    from phenossl.export import to_plain

    value = to_plain(value)
    if isinstance(value, Mapping):
        return {str(k): h5ad_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        if any(isinstance(v, (Mapping, list)) for v in value):
            return {str(i): h5ad_plain(v) for i, v in enumerate(value)}
        kinds = {type(v) for v in value}
        if kinds <= {int, float} or kinds <= {bool} or kinds <= {str}:
            return np.asarray(value) if value else np.asarray([], dtype=str)
        return np.asarray(["" if v is None else str(v) for v in value], dtype=object)
    return value


def layout_of(table: pd.DataFrame) -> np.ndarray | None:
    """The UMAP layout held in the table's umap_x / umap_y columns, or None when it is missing or incomplete."""
    if not {"umap_x", "umap_y"} <= set(table.columns):
        return None
    xy = table[["umap_x", "umap_y"]].to_numpy(dtype=np.float32)
    return xy if np.isfinite(xy).all() else None


def run_anndata(table: pd.DataFrame, embeddings: np.ndarray, config: Mapping[str, Any],
                metrics: Mapping[str, Any] | None = None):
    """The AnnData of one exported clustering (pure: nothing written). ``X`` is left empty: the embedding
    is not an expression matrix, so it lives in ``obsm`` where scanpy's ``use_rep`` finds it."""
    import anndata

    from phenossl.export import check_embeddings_rows, config_yaml

    embeddings = np.asarray(embeddings)
    check_embeddings_rows(embeddings, len(table))
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    obsm = {"X_phenossl": embeddings.astype(np.float32)}
    layout = layout_of(table)
    if layout is not None:
        obsm["X_umap"] = layout
    uns = {"phenossl": {"config": h5ad_plain(config), "config_yaml": config_yaml(config),
                        "metrics": h5ad_plain(dict(metrics or {})),
                        "embedding_key": "X_phenossl", "cluster_key": "cluster"}}
    return anndata.AnnData(obs=obs_table(table), obsm=obsm, uns=uns)


def write_h5ad(path: str | os.PathLike, table: pd.DataFrame, embeddings: np.ndarray, config: Mapping[str, Any],
               metrics: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> Written:
    """Write the clustering as one ``.h5ad`` (atomically; never over an existing file unless ``overwrite``)."""
    from phenossl.atomic import atomic_write
    from phenossl.export import check_targets_free

    path = Path(path)
    check_targets_free([path], overwrite)
    adata = run_anndata(table, embeddings, config, metrics)
    atomic_write(path, lambda tmp: adata.write_h5ad(tmp), overwrite=overwrite)
    return Written((path,))


# ------------------------------------------------------------------------------------------------
# Profiles (pycytominer)


def treatment_columns(table: pd.DataFrame) -> list[str]:
    """The table's treatment columns (compound, dose...): metadata columns that are not positions or ids."""
    from phenossl.io.metadata import treatment_column_names

    return treatment_column_names([str(c) for c in table.columns])


def metadata_name(column: str) -> str:
    """``plate`` -> ``Metadata_Plate`` for pycytominer's own names; treatments keep their spelling."""
    own = {"plate": "Plate", "well": "Well", "site": "Site", "cell_id": "Cell_ID", "field": "Field",
           "centroid_y": "Centroid_Y", "centroid_x": "Centroid_X", "cluster": "Cluster"}
    return f"Metadata_{own.get(column, column)}"


def feature_names(n_features: int) -> list[str]:
    return [f"{FEATURE_PREFIX}{i:04d}" for i in range(n_features)]


def cell_profiles(table: pd.DataFrame, embeddings: np.ndarray) -> pd.DataFrame:
    """One row per cell: Metadata_ columns (ids, plate / well / site, position, treatments, cluster), then one
    feature column per embedding dimension. InputError when the cells have no plate and well (pre-cropped cells
    without metadata): profiles are per well."""
    from phenossl.export import check_embeddings_rows

    missing = [c for c in ("plate", "well") if c not in table.columns]
    if missing:
        raise InputError(
            f"These cells have no {' or '.join(missing)} column, and profiles are aggregated per plate and well. "
            "Give the run a metadata table with plate and well (input.metadata), or export as csv or h5ad instead."
        )
    embeddings = np.asarray(embeddings)
    check_embeddings_rows(embeddings, len(table))
    position = [c for c in ("cell_id", "plate", "well", "site", "field", "centroid_y", "centroid_x")
                if c in table.columns]
    columns = [*position, *treatment_columns(table), *(["cluster"] if "cluster" in table.columns else [])]
    metadata = table[columns].reset_index(drop=True).rename(columns=metadata_name)
    features = pd.DataFrame(embeddings.astype(np.float32), columns=feature_names(embeddings.shape[1]))
    return pd.concat([metadata, features], axis=1)


def well_profiles(cells: pd.DataFrame) -> pd.DataFrame:
    """The median of each feature per (Metadata_Plate, Metadata_Well), as pycytominer's ``aggregate`` computes
    by default, with ``Metadata_Object_Count`` (cells per well) and every treatment column that has one value in
    the well (a treatment that varies inside a well describes no well, so it is left out)."""
    strata = ["Metadata_Plate", "Metadata_Well"]
    features = [c for c in cells.columns if c.startswith(FEATURE_PREFIX)]
    groups = cells.groupby(strata, sort=True, dropna=False)
    wells = groups[features].median().reset_index()
    skip = {*strata, "Metadata_Cell_ID", "Metadata_Site", "Metadata_Field", "Metadata_Centroid_Y",
            "Metadata_Centroid_X", "Metadata_Cluster"}
    described = [c for c in cells.columns if c.startswith("Metadata_") and c not in skip]
    constant = [c for c in described if (groups[c].nunique(dropna=False) <= 1).all()]
    labels = groups[constant].first().reset_index(drop=True)
    counts = groups.size().reset_index(drop=True).rename("Metadata_Object_Count")
    return pd.concat([wells[strata], labels, counts, wells[features]], axis=1)


def write_profiles(folder: str | os.PathLike, table: pd.DataFrame, embeddings: np.ndarray, *,
                   overwrite: bool = False) -> Written:
    """Write ``folder/cells.csv`` and ``folder/wells.csv`` together (both or neither; a folder this call made
    is removed again when the write fails)."""
    from phenossl.atomic import atomic_paths
    from phenossl.export import check_targets_free

    folder = Path(folder)
    targets = format_targets("profiles", folder)
    check_targets_free(targets, overwrite)
    cells = cell_profiles(table, embeddings)
    wells = well_profiles(cells)
    made_folder = not folder.exists()
    try:
        with atomic_paths(targets, overwrite=overwrite) as (cells_tmp, wells_tmp):
            cells.to_csv(cells_tmp, index=False, lineterminator="\n")
            wells.to_csv(wells_tmp, index=False, lineterminator="\n")
    except BaseException:
        if made_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return Written(tuple(targets))


def write_format(name: str, out: str | os.PathLike, table: pd.DataFrame, embeddings: np.ndarray,
                 config: Mapping[str, Any], metrics: Mapping[str, Any] | None = None, *,
                 overwrite: bool = False) -> Any:
    """Export in format ``name`` (csv, h5ad, profiles) from the per-cell table :func:`cluster_table` makes;
    returns what was written (``written()`` lists the files)."""
    from phenossl.export import check_targets_free, config_yaml, save_npy

    if check_format(name) == "h5ad":
        return write_h5ad(out, table, embeddings, config, metrics, overwrite=overwrite)
    if name == "profiles":
        return write_profiles(out, table, embeddings, overwrite=overwrite)
    from phenossl.atomic import atomic_paths
    from phenossl.export import export_paths

    paths = export_paths(out, embeddings=True, config=True)
    check_targets_free(paths.written(), overwrite)
    text = config_yaml(config)
    with atomic_paths(paths.written(), overwrite=overwrite) as (csv_tmp, embeddings_tmp, config_tmp):
        table.to_csv(csv_tmp, index=False, lineterminator="\n")
        save_npy(embeddings_tmp, np.asarray(embeddings))
        config_tmp.write_text(text, encoding="utf-8")
    return paths


#: the napari export dialog's file-type filters, one per format (the chosen filter picks the format)
DIALOG_FILTERS: dict[str, str] = {
    "csv": "CSV files (*.csv)",
    "h5ad": "AnnData (*.h5ad)",
    "profiles": "Profiles for pycytominer (a folder: cells.csv, wells.csv) (*)",
}
SUFFIXES = {"csv": ".csv", "h5ad": ".h5ad"}


def dialog_choice(path: str, name_filter: str) -> tuple[Path, str]:
    """(target, format) from the save dialog's answer: the chosen file type gives the format (else the name's
    suffix does); the suffix is added when missing; for profiles the name is the folder to write into."""
    by_filter = {text: name for name, text in DIALOG_FILTERS.items()}
    suffix = Path(path).suffix.lower()
    fmt = by_filter.get(name_filter) or next((n for n, s in SUFFIXES.items() if s == suffix), "csv")
    wanted = SUFFIXES.get(fmt)
    if wanted and suffix != wanted:
        path += wanted
    return Path(path), fmt


def format_choices() -> Sequence[tuple[str, str]]:
    """(name, description) of each format, for the command line's help and the napari dialog."""
    return list(FORMATS.items())
