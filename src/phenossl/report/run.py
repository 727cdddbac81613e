"""``phenossl report RUN``: what a run's clusters (and its embedding) follow, from its saved files.

Reads the run folder (configuration, tile store, embeddings, the saved clustering or a new one with another
k), computes every variable the store allows, scores each, and writes the report beside the run. Only the
writing takes the run folder's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.errors import InputError

SAVED_SOURCE = "the run clustering (clusters.csv)"  # the report of the run's own clustering says so (CLI, napari)


@dataclass(frozen=True)
class Report:
    """A report's numbers (one row per variable), its reading in words, and its Markdown."""

    table: pd.DataFrame
    reading: str
    markdown: str
    title: str
    k: int
    written: list[Path] = field(default_factory=list)


def saved_clusters(paths, n_cells: int) -> np.ndarray:
    """The run's own cluster of every cell, from clusters.csv; a clear error when the run has none, or one
    made from other embeddings or another cell table."""
    clusters = paths.clusters
    if not clusters.is_file():
        raise InputError(f"{paths.root} has no clustering (no {clusters.name}): cluster it first with "
                         f"'phenossl cluster {paths.root}', or pass --k K to cluster it for this report.")
    if clusters.stat().st_mtime < paths.embeddings.stat().st_mtime:
        raise InputError(f"{clusters} is older than the run's embeddings, so it describes other embeddings: "
                         f"recluster with 'phenossl cluster {paths.root} --overwrite', or pass --k K.")
    table = pd.read_csv(clusters)
    if "cluster" not in table.columns or len(table) != n_cells:
        raise InputError(f"{clusters} does not hold one cluster per cell of the run ({len(table)} rows, "
                         f"{n_cells} cells): recluster with 'phenossl cluster {paths.root} --overwrite'.")
    return table["cluster"].to_numpy()


def run_report(run_dir: str | Path, *, k: int | None = None, overwrite: bool = False) -> Report:
    """The report of the run in ``run_dir``: of its saved clustering, or (``k``) of a seeded K-Means with k
    clusters made now and not saved. Writes report.csv / .md / .png (report-kK.* with ``k``) beside the run."""
    from phenossl.atomic import check_can_write
    from phenossl.cluster.stage import clustering_space
    from phenossl.config import apply_overrides
    from phenossl.pipeline import open_run
    from phenossl.report.write import report_targets, write_report

    config, paths, store = open_run(run_dir)
    targets = report_targets(paths.root, k)
    for target in targets:  # before any computing
        check_can_write(target, overwrite)
    space = clustering_space(config, store, run_embeddings(paths, store))
    if k is None:
        clusters = saved_clusters(paths, store.n_cells)
    else:
        config = apply_overrides(config, [f"cluster.k={k}"])  # validated as the configuration validates k
        clusters = space.cluster(k, seed=config.seed).labels
    source = SAVED_SOURCE if k is None else f"K-Means k={k}, seed {config.seed}"
    report = describe_clusters(config, store, space.features, clusters, source=source)
    written = write_report(paths.root, targets, report.table, report.markdown, report.title, report.reading,
                           overwrite=overwrite)
    return replace(report, written=written)


def run_embeddings(paths, store) -> np.ndarray:
    """The run's embeddings, checked to hold one row per cell of its store."""
    embeddings = paths.load_embeddings()
    if embeddings.shape[0] != store.n_cells:
        raise InputError(f"{paths.embeddings} has {embeddings.shape[0]} rows but the store has {store.n_cells} cells: "
                         f"embed again with 'phenossl embed {paths.root} --overwrite'.")
    return embeddings


def describe_clusters(config, store, features: np.ndarray, clusters: np.ndarray, *, source: str,
                      variables=None) -> Report:
    """The report of ``clusters`` (one per cell of ``store``) and of the embedding ``features`` they were made in
    (the clustering space): every variable the store allows, scored and read in words. Computes, writes nothing;
    ``variables`` (``store_variables``) may be passed in when several clusterings of one store are described."""
    from phenossl.report.association import (
        N_BINS,
        PROBE_MAX_CELLS,
        association_table,
        probe_folds,
        well_groups,
    )
    from phenossl.report.reading import reading as plain_reading
    from phenossl.report.variables import RADIUS_DIAMETERS, neighbour_radius, store_variables
    from phenossl.report.write import report_markdown

    if variables is None:
        variables = store_variables(store, config.cluster.label_columns)
    groups = well_groups(store.cells)
    table = association_table(variables, clusters, features, groups, seed=config.seed)
    text = plain_reading(table)
    found = np.unique(clusters)
    n_noise = int((np.asarray(clusters) == -1).sum())  # HDBSCAN's noise is no cluster
    k_used = int((found != -1).sum())
    noise = f", {n_noise} noise cells" if n_noise else ""
    title = (f"What the clusters of '{config.name}' follow ({config.representation}, {config.train.method}, "
             f"A={config.train.composition_a.name}, k={k_used}{noise}, {store.n_cells} cells)")
    has_fields = "field" in store.cells.columns and "centroid_y" in store.cells.columns
    folds = 0 if groups is None else probe_folds(groups)
    settings = [
        f"clusters: {source}",
        f"categories: AMI; numbers: correlation ratio eta2, and AMI on {N_BINS} quantile bins (the common scale)",
        (f"probe: {folds}-fold GroupKFold by well on the clustering space, ridge (R2; penalty by leave-one-out "
         f"in the training folds) / logistic regression "
         f"(balanced accuracy), at most {PROBE_MAX_CELLS} cells (seed {config.seed})"),
        "intensities: the store's normalised units (one percentile scale per channel)",
    ]
    if has_fields:
        settings.append(f"neighbours counted within {neighbour_radius(store):.0f} px ({RADIUS_DIAMETERS:g} nucleus "
                        "diameters, or 50 px where the nucleus size is unknown)")
    return Report(table, text, report_markdown(table, text, title, settings), title, k_used)
