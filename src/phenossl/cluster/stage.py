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
                     layout: np.ndarray | None = None) -> RunClustering:
    """Seeded K-Means with ``k`` (and the ``n_nearest`` cells nearest each centroid) and its metrics on the
    run's label columns; ``layout`` is the run's UMAP when the caller has it."""
    from phenossl.cluster import clustering_metrics

    clustering = space.cluster(k, seed=config.seed, n_nearest=n_nearest)
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
    """What ``metrics.json`` holds: k, the number of cells, every metric, and the size of each cluster."""
    sizes = result.clustering.sizes.tolist()
    return {"k": result.clustering.k, "n_cells": n_cells, **result.metrics, "cluster_sizes": sizes}


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
