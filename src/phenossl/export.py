"""Export one clustering: a per-cell CSV, with the embeddings and the run configuration beside it.

``clusters.csv`` holds every column of the cell table (ids, image / plate / well / site, centroid,
treatment...) followed by:

- ``cluster``: the cluster id (0..k-1; -1 for HDBSCAN's noise, the cells in no cluster);
- ``cluster_name`` (HDBSCAN clusterings only): the id as text, and "noise" for -1;
- ``distance_to_centroid``: Euclidean distance to the cell's own centroid, in the prepared feature
  space the clustering was made in;
- ``centroid_rank``: 1..n for the n cells listed nearest their centroid (1 = most typical of its
  cluster), 0 for all other cells, so ``centroid_rank > 0`` selects the typical cells;
- ``umap_x``, ``umap_y``: the 2-D layout, empty when no layout was given.

Beside it, ``<stem>.embeddings.npy`` (row i = CSV row i) and ``<stem>.config.yaml``. Nothing is
replaced unless ``overwrite=True``: every target is checked before any is written, and each file is
written atomically, so a failed export never leaves a half-written or mismatched set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from phenossl.atomic import atomic_paths
from phenossl.cluster.kmeans import Clustering
from phenossl.errors import ConfigError, InputError, OutputExistsError

RESULT_COLUMNS: tuple[str, ...] = ("cluster", "distance_to_centroid", "centroid_rank", "umap_x", "umap_y")
NAME_COLUMN = "cluster_name"  # HDBSCAN clusterings: "noise" for the cells in no cluster (cluster -1)


@dataclass(frozen=True)
class ExportPaths:
    """The files an export wrote (None for the optional ones that were not asked for)."""

    csv: Path
    embeddings: Path | None
    config: Path | None

    def written(self) -> list[Path]:
        return [path for path in (self.csv, self.embeddings, self.config) if path is not None]


def sidecar_paths(csv_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.embeddings.npy, <stem>.config.yaml)`` beside the CSV."""
    csv_path = Path(csv_path)
    return (
        csv_path.with_name(f"{csv_path.stem}.embeddings.npy"),
        csv_path.with_name(f"{csv_path.stem}.config.yaml"),
    )


def export_paths(csv_path: str | os.PathLike, *, embeddings: bool, config: bool) -> ExportPaths:
    """The files an export to ``csv_path`` writes: the CSV and, when asked for, its two sidecars."""
    embeddings_path, config_path = sidecar_paths(csv_path)
    return ExportPaths(csv=Path(csv_path), embeddings=embeddings_path if embeddings else None,
                       config=config_path if config else None)


def check_export_targets(paths: ExportPaths, overwrite: bool) -> None:
    """OutputExistsError listing every existing target unless ``overwrite`` (and for a target that is a folder,
    always): callers check before slow work."""
    check_targets_free(paths.written(), overwrite)


def check_targets_free(targets: list[Path], overwrite: bool) -> None:
    """``check_export_targets`` for any list of files (the other export formats' targets)."""
    from phenossl.atomic import check_can_write

    for path in targets:
        if path.is_dir():
            check_can_write(path, overwrite)  # says it is a folder, not a file
    existing = [path for path in targets if path.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"Export would replace {len(existing)} existing file(s): {', '.join(map(str, existing))}. "
            "Choose another file name, or ask to overwrite (--overwrite, or confirm in the dialog). "
            "Nothing was written."
        )


def cluster_table(
    cells: pd.DataFrame, clustering: Clustering, umap_xy: np.ndarray | None = None
) -> pd.DataFrame:
    """The per-cell export table: the cell columns, then RESULT_COLUMNS (pure; nothing is written); an HDBSCAN
    clustering's table has ``cluster_name`` after ``cluster`` ("noise" for cluster -1).

    A named or non-default index of ``cells`` becomes columns. Result columns already present in
    ``cells`` (re-exporting an exported table) are replaced, not duplicated.
    """
    n_cells = clustering.n_cells
    if len(cells) != n_cells:
        raise InputError(f"The cell table has {len(cells)} rows but the clustering has {n_cells} cells.")
    if umap_xy is not None:
        umap_xy = np.asarray(umap_xy)
        if umap_xy.shape != (n_cells, 2):
            raise InputError(
                f"umap_xy must have shape ({n_cells}, 2), one row per cell; got {umap_xy.shape}."
            )
    keep_index = not (
        isinstance(cells.index, pd.RangeIndex) and all(name is None for name in cells.index.names)
    )
    table = cells.reset_index(drop=not keep_index)
    table = table.drop(columns=[column for column in (*RESULT_COLUMNS, NAME_COLUMN) if column in table.columns])
    xy = np.full((n_cells, 2), np.nan, np.float32) if umap_xy is None else umap_xy.astype(np.float32)
    results = pd.DataFrame(
        {
            "cluster": np.asarray(clustering.labels, dtype=np.int64),
            "distance_to_centroid": np.asarray(clustering.distance, dtype=np.float32),
            "centroid_rank": np.asarray(clustering.nearest_rank, dtype=np.int64),
            "umap_x": xy[:, 0],
            "umap_y": xy[:, 1],
        },
        index=table.index,
    )
    if getattr(clustering, "algorithm", "kmeans") == "hdbscan" or clustering.n_noise:
        from phenossl.cluster.algorithms import cluster_name

        names = [cluster_name(c) for c in range(-1, clustering.k)]
        results.insert(1, NAME_COLUMN, np.asarray(names, dtype=object)[results["cluster"].to_numpy() + 1])
    return pd.concat([table, results], axis=1)


def config_yaml(config: Mapping[str, Any] | str | Any) -> str:
    """YAML text for a config given as a mapping, YAML text, or a pydantic model (``model_dump``)."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    if isinstance(config, str):
        try:
            parsed = yaml.safe_load(config)
        except yaml.YAMLError as error:
            raise ConfigError(f"The run configuration is not valid YAML: {error}") from error
        if not isinstance(parsed, Mapping):
            raise ConfigError(
                "The run configuration must be a YAML mapping (key: value lines); got "
                f"{type(parsed).__name__}."
            )
        return config if config.endswith("\n") else config + "\n"
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"The run configuration must be a mapping or YAML text; got {type(config).__name__}."
        )
    return yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True)


def to_plain(value: Any) -> Any:
    """Numpy scalars/arrays, paths and tuples turned into plain YAML-safe Python values, recursively."""
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def check_embeddings_rows(embeddings: np.ndarray, n_cells: int) -> None:
    """InputError unless ``embeddings`` is a 2-D array with one row per cell."""
    shape = getattr(embeddings, "shape", None)
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] != n_cells:
        raise InputError(
            f"embeddings must be an array of shape ({n_cells}, D), one row per cell; got {shape}."
        )


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save through an open file: given a path, np.save would append '.npy' to the temporary name."""
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def export_clusters(
    csv_path: str | os.PathLike,
    cells: pd.DataFrame,
    clustering: Clustering,
    *,
    umap_xy: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    config: Mapping[str, Any] | str | None = None,
    overwrite: bool = False,
) -> ExportPaths:
    """Write the per-cell CSV and, when given, the embeddings (.npy) and config (.yaml) beside it.

    Row counts of ``cells``, ``clustering``, ``umap_xy`` and ``embeddings`` must agree (InputError).
    Raises OutputExistsError listing every existing target, before writing anything, unless
    ``overwrite``. Returns the paths written.
    """
    csv_path = Path(csv_path)
    table = cluster_table(cells, clustering, umap_xy)
    if embeddings is not None:
        check_embeddings_rows(embeddings, len(table))
    config_text = config_yaml(config) if config is not None else None
    paths = export_paths(csv_path, embeddings=embeddings is not None, config=config_text is not None)
    check_export_targets(paths, overwrite)

    # one unit: every file is written to a temporary first, then all are moved into place (or none is)
    with atomic_paths(paths.written(), overwrite=overwrite) as temporaries:
        writes = iter(temporaries)
        table.to_csv(next(writes), index=False, lineterminator="\n")
        if paths.embeddings is not None:
            save_npy(next(writes), embeddings)
        if paths.config is not None:
            next(writes).write_text(config_text, encoding="utf-8")
    return paths
