"""Step 5's jobs on several runs: which clusters moved between two runs and what they follow now
(``report.compare``), and every run scored side by side (``phenossl evaluate``). No Qt; run in workers.

A run is compared with the clusters it shows now (an exploration not kept yet included), so the comparison
is of what the user sees; a run not shown has its saved clusters read from its folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from phenossl.errors import PhenosslError
from phenossl.napari.report_tasks import figure_png
from phenossl.napari.session import RunRecord
from phenossl.napari.tasks import reported_as, saved_cluster_labels


@dataclass(frozen=True)
class RunComparison:
    """Run B against run A as the dock shows it: the difference and its two pictures, drawn in the worker."""

    difference: Any  # phenossl.report.compare.RunDifference
    chart_png: bytes  # contingency heat map and each variable's change (compact)
    gallery_png: bytes  # the changed cells, grouped by their move

    @property
    def name_a(self) -> str:
        return self.difference.name_a

    @property
    def name_b(self) -> str:
        return self.difference.name_b

    @property
    def changed_cells(self) -> np.ndarray:
        """Store rows of run A whose cluster changed (what 'Select the cells that changed cluster' selects)."""
        return self.difference.changed_rows_a


def run_side(record: RunRecord):
    """One run of a comparison as loaded: its configuration, tiles, embeddings and shown clusters."""
    from phenossl.report.compare_run import RunSide

    store = record.tile_store()
    labels = cluster_labels(record)
    return RunSide(record.name, record.config, store, np.asarray(record.paths.load_embeddings()), labels)


def compare_runs(a: RunRecord, b: RunRecord) -> RunComparison:
    """``phenossl compare``'s difference of two runs (contingency, moves, each variable's change, the reading),
    for the clusters each run has now, and its two pictures for the dock."""
    from phenossl.report.compare_run import comparison_figure, difference_of_runs, gallery_figure

    with reported_as("Comparing runs"):
        side_a, side_b = run_side(a), run_side(b)
        diff = difference_of_runs(side_a, side_b)
        chart = figure_png(comparison_figure(diff, compact=True), dpi=90)
        gallery = figure_png(gallery_figure(diff, side_a.store.tiles, seed=a.config.seed, compact=True), dpi=90)
        return RunComparison(diff, chart, gallery)


def cluster_labels(record: RunRecord) -> np.ndarray:
    """The cluster of every store row of a run: the shown clustering, else the run's clusters.csv, else
    its saved algorithm (K-Means by default) again on its embeddings with its saved k and seed (seeded: the
    clusters it had)."""
    from phenossl.cluster.stage import clustering_space

    if record.clustering is not None:
        return np.asarray(record.clustering.labels)
    saved = saved_cluster_labels(record)
    if saved is not None:
        return saved
    if not record.has_embeddings:
        raise PhenosslError(
            f"run {record.name} has no embeddings yet, so no clusters: embed it first (Runs > Embed cells)"
        )
    config = record.config
    space = clustering_space(config, record.tile_store(), record.paths.load_embeddings())
    return np.asarray(space.cluster(config.cluster.k, seed=config.seed, n_nearest=1, algorithm=config.cluster.algorithm,
                                    params=config.cluster.algorithm_params()).labels)


def evaluate_runs(records: Sequence[RunRecord], settings: Any) -> pd.DataFrame:
    """The ``phenossl evaluate`` table for the session's runs that have embeddings (trained, measured,
    untrained side by side): does training beat measuring, on this plate's own labels?"""
    from phenossl.evaluate import EvaluatedRun, evaluation_table
    from phenossl.pipeline import describe_representation

    with reported_as("Evaluating the runs"):
        ready = [r for r in records if r.has_embeddings]
        if not ready:
            raise PhenosslError("no run has embeddings yet: train, measure or embed a run first")
        runs = [EvaluatedRun(r.name, describe_representation(r.config), r.paths.load_embeddings(),
                             r.tile_store().cells) for r in ready]
        return evaluation_table(runs, settings)
