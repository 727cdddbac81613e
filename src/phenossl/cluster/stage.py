"""The clustering stage of a run, one for both front ends (``phenossl cluster`` / ``phenossl run`` and napari's
Clusters step), so that their results cannot drift apart.

Computing only reads the run folder: a user may explore any k while another process writes there. Saving makes
one clustering the run's own: ``clusters.csv`` (with the UMAP columns), ``umap.npy``, ``metrics.json`` and
``overview.png`` are written together, all or none, under the run folder's lock; the same files whichever front
end made them. No Qt and no napari here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from phenossl.cluster.kmeans import Clustering
    from phenossl.cluster.space import EmbeddingSpace
    from phenossl.config import RunConfig
    from phenossl.pipeline import RunPaths
    from phenossl.tiles.store import TileStore


@dataclass(frozen=True)
class RunClustering:
    """One clustering of a run and what saving it needs: the space it was made in (its UMAP is cached there),
    its metrics, and the run's UMAP layout (None while it is not known)."""

    space: EmbeddingSpace
    clustering: Clustering
    metrics: dict[str, float]
    umap: np.ndarray | None


def clustering_space(config: RunConfig, store: TileStore, embeddings: np.ndarray) -> EmbeddingSpace:
    """The run's embeddings prepared for clustering as its configuration says (preprocessing, and each plate
    normalised to its own controls when ``cluster.controls`` names them)."""
    from phenossl.cluster import EmbeddingSpace
    from phenossl.cluster.space import control_groups

    groups = None
    if config.cluster.controls:
        groups = control_groups(store.cells, config.cluster.controls, config.cluster.control_batch)
    return EmbeddingSpace(embeddings, preprocessing=config.cluster.preprocessing, controls=groups)


def umap_params(config: RunConfig) -> dict[str, Any]:
    """The run's UMAP settings as ``EmbeddingSpace.umap`` takes them (the seed makes the layout repeatable)."""
    return {"seed": config.seed, "n_neighbors": config.cluster.umap.n_neighbors,
            "min_dist": config.cluster.umap.min_dist}


def cluster_in_space(config: RunConfig, store: TileStore, space: EmbeddingSpace, k: int, n_nearest: int, *,
                     layout: np.ndarray | None = None, algorithm: str | None = None,
                     params: dict[str, Any] | None = None) -> RunClustering:
    """Seeded clustering with ``k`` (and the ``n_nearest`` cells nearest each centroid) and its metrics on the
    run's label columns; ``layout`` is the run's UMAP when the caller has it. The algorithm and its parameters
    are the configuration's (``cluster.algorithm``) unless ``algorithm`` / ``params`` say otherwise."""
    from phenossl.cluster import clustering_metrics

    if algorithm is None:
        algorithm, params = config.cluster.algorithm, config.cluster.algorithm_params() if params is None else params
    clustering = space.cluster(k, seed=config.seed, n_nearest=n_nearest, algorithm=algorithm, params=params)
    metrics = clustering_metrics(space, clustering.labels, store.cells, config.cluster.label_columns, seed=config.seed)
    return RunClustering(space, clustering, metrics, layout)


def run_layout(config: RunConfig, paths: RunPaths, space: EmbeddingSpace, *, compute: bool) -> np.ndarray | None:
    """The run's UMAP layout: the space's cached one, else the run's umap.npy when it has one row per cell, else
    (with ``compute``) computed now when the run has cells enough for a UMAP; None otherwise."""
    from phenossl.cluster.projection import UMAP_MIN_CELLS

    layout = space.cached_umap(**umap_params(config))
    if layout is None and paths.umap.is_file():
        saved = np.load(paths.umap)
        layout = saved if saved.shape == (space.n_cells, 2) else None
    if layout is None and compute and space.n_cells >= UMAP_MIN_CELLS:
        layout = space.umap(**umap_params(config))
    return layout


def metrics_summary(result: RunClustering, n_cells: int) -> dict[str, Any]:
    """What ``metrics.json`` holds: k, the number of cells, every metric, the size of each cluster, the algorithm
    and (HDBSCAN) the number of noise cells."""
    clustering = result.clustering
    sizes = clustering.sizes.tolist()
    noise = {"n_noise": clustering.n_noise} if clustering.algorithm == "hdbscan" else {}
    return {"k": clustering.k, "n_cells": n_cells, **result.metrics, "cluster_sizes": sizes,
            "algorithm": clustering.algorithm, **noise}


def suggest_run_k(config: RunConfig, store: TileStore, space: EmbeddingSpace, *, algorithm: str | None = None,
                  label_column: str | None = None, params: dict[str, Any] | None = None):
    """The k curve (:func:`phenossl.cluster.suggest.suggest_k`) of the run's clustering space, seeded with the run's
    seed; ``label_column`` (a column of the cell table) adds the AMI curve. ``algorithm``: default the run's."""
    from phenossl.cluster.metrics import label_columns_to_score
    from phenossl.cluster.suggest import suggest_k

    if algorithm is None:
        algorithm, params = config.cluster.algorithm, config.cluster.algorithm_params()
    labels = None
    if label_column:
        label_columns_to_score(store.cells, [label_column])  # InputError naming the columns there are
        labels = store.cells[label_column].to_numpy()
    return suggest_k(space.features, algorithm=algorithm, seed=config.seed, labels=labels, label_column=label_column,
                     params=params)


def metrics_json(summary: dict[str, Any]) -> str:
    """``metrics.json``'s text: strict JSON, an undefined score (NaN, e.g. a silhouette of one cluster) as null."""
    def finite(value: Any) -> Any:
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value

    return json.dumps(finite(summary), indent=2, allow_nan=False)


def save_run_clustering(config: RunConfig, paths: RunPaths, store: TileStore, result: RunClustering, *,
                        what: str, overview: bool = True, also: Callable[[], None] | None = None,
                        only_if: Callable[[], bool] | None = None) -> RunClustering:
    """Make ``result`` the run's own clustering: clusters.csv, umap.npy, metrics.json and (with ``overview``)
    overview.png, moved into place together under the run folder's lock (``what`` tells another process what
    holds it). A result whose layout is not known yet gets it first (computed, or the running computation
    awaited), outside the lock. ``also`` runs under the same lock once the files are in place. ``only_if`` is
    asked under the lock first: when it says no, nothing is written (a save made meanwhile wins). Returns the
    result with its layout."""
    from phenossl.atomic import atomic_paths
    from phenossl.export import cluster_table, save_npy
    from phenossl.overview import write_run_overview
    from phenossl.runlock import run_folder_lock

    if result.umap is None:
        result = RunClustering(result.space, result.clustering, result.metrics,
                               run_layout(config, paths, result.space, compute=True))
    layout = None if result.umap is None else np.asarray(result.umap)
    table = cluster_table(store.cells, result.clustering, layout)
    text = metrics_json(metrics_summary(result, store.n_cells))
    writes: list[tuple[Path, Callable[[Path], Any]]] = [
        (paths.clusters, lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n")),
        (paths.metrics, lambda tmp: tmp.write_text(text, encoding="utf-8")),
    ]
    if layout is not None:
        writes.append((paths.umap, lambda tmp: save_npy(tmp, layout)))
    if overview:
        writes.append((paths.overview, lambda tmp: write_run_overview(tmp, config, store, result.clustering, layout)))
    with run_folder_lock(paths.root, what):
        if only_if is not None and not only_if():
            return result
        with atomic_paths([path for path, _ in writes]) as temporaries:
            for (_, write), tmp in zip(writes, temporaries):
                write(tmp)
        if also is not None:
            also()
    return result


def save_layout(paths: RunPaths, layout: np.ndarray, *, what: str) -> None:
    """The run's umap.npy alone, under the run folder's lock: the layout does not depend on k, so an
    exploration's layout is the run's too."""
    from phenossl.atomic import atomic_write
    from phenossl.export import save_npy
    from phenossl.runlock import run_folder_lock

    with run_folder_lock(paths.root, what):
        atomic_write(paths.umap, lambda tmp: save_npy(tmp, np.asarray(layout)))


K_CURVE_FILE = "k_curve.csv"


def command_line_choice(config: RunConfig, paths: RunPaths, store: TileStore, *, k: str | int | None = None,
                        algorithm: str | None = None, min_cluster_size: int | None = None,
                        label: str | None = None, out: Path | None = None,
                        overwrite: bool = False) -> tuple[RunConfig, Any]:
    """``phenossl cluster``'s choices applied to the run's configuration (validated as the configuration is: the
    same one-line messages): ``--algorithm``, ``--min-cluster-size`` (hdbscan), ``--k N`` or ``--k auto``. With
    auto, k is chosen on the run's cached embedding space by :func:`suggest_run_k` (the best silhouette; ``label``
    adds the AMI curve) and the curve is returned beside the configuration (else None). With an export (``out``),
    its k curve's file is checked before anything is computed (OutputExistsError unless ``overwrite``)."""
    from phenossl.config import apply_overrides
    from phenossl.errors import ConfigError

    overrides = [f"cluster.algorithm={algorithm}"] if algorithm is not None else []
    if min_cluster_size is not None:
        overrides.append(f"cluster.hdbscan.min_cluster_size={min_cluster_size}")
    auto = isinstance(k, str) and k.strip().lower() == "auto"
    if k is not None and not auto:
        overrides.append(f"cluster.k={k}")
    config = apply_overrides(config, overrides)
    if k is not None and config.cluster.algorithm == "hdbscan":
        raise ConfigError("hdbscan finds the number of clusters itself: leave out --k (its smallest cluster is "
                          "--min-cluster-size).")
    if not auto:
        return config, None
    if out is not None:
        from phenossl.export import check_targets_free

        check_targets_free([k_curve_path(paths, out)], overwrite)
    space = clustering_space(config, store, paths.load_embeddings())
    curve = suggest_run_k(config, store, space, label_column=label)
    return apply_overrides(config, [f"cluster.k={curve.best_k}"]), curve


def k_curve_path(paths: RunPaths, out: Path | None) -> Path:
    """Where ``--k auto`` writes its curve: the run's k_curve.csv, or ``<stem>.k_curve.csv`` beside an export."""
    return paths.root / K_CURVE_FILE if out is None else Path(out).with_name(f"{Path(out).stem}.{K_CURVE_FILE}")


def record_command_line_choice(config: RunConfig, paths: RunPaths, curve: Any, *, out: Path | None,
                               overwrite: bool) -> list[Path]:
    """After ``phenossl cluster``: the k curve (``--k auto``) as ``k_curve.csv`` beside the run's clusters.csv, or
    as ``<stem>.k_curve.csv`` beside an export; and, when the run's own clustering was replaced, the run's
    config.yaml with the algorithm and k that made it. Returns the files written."""
    from phenossl.atomic import atomic_write_text
    from phenossl.config import save_config
    from phenossl.runlock import run_folder_lock

    written: list[Path] = []
    target = k_curve_path(paths, out)
    with run_folder_lock(paths.root, "phenossl cluster"):
        if curve is not None:
            atomic_write_text(target, curve.table().to_csv(index=False, lineterminator="\n"),
                              overwrite=overwrite or out is None)
            written.append(target)
        if out is None:
            save_config(config, paths.config)
            written.append(paths.config)
    return written
