"""Step 5's "What do the clusters follow?": the report of the shown clustering, computed and saved in
workers. No Qt.

The report is ``phenossl report``'s own (``phenossl.report.run.describe_clusters``), made for the labels the
user sees, which may be an exploration not kept yet. Only the run's saved clustering may be saved beside
the run: report.csv / .md / .png there always describe clusters.csv, as the command line's do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phenossl.errors import OutputExistsError, PhenosslError
from phenossl.napari.session import RunRecord
from phenossl.napari.tasks import FilesExist, reported_as, saved_cluster_labels


@dataclass(frozen=True)
class ClusterReport:
    """The report of one clustering of one run, with the chart drawn for the dock."""

    run: str
    labels: np.ndarray  # the clusters reported on (one per store row)
    saved: bool  # they are the run's saved clustering (clusters.csv), so the report may be saved beside it
    report: Any  # phenossl.report.run.Report
    png: bytes  # the compact chart


def figure_png(figure: Any, dpi: int = 80) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes, drawn in the worker: the dock only shows the picture."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def exploring_source(k: int, seed: int) -> str:
    return f"napari's shown K-Means k={k}, seed {seed}, not kept as the run's clustering"


def report_clusters(record: RunRecord, labels: np.ndarray, space: Any = None) -> ClusterReport:
    """The report of ``labels`` (the shown clustering of ``record``) in its clustering space (``space``, or
    computed from the run's embeddings as ``phenossl report`` does)."""
    from phenossl.cluster.stage import clustering_space
    from phenossl.report.run import SAVED_SOURCE, describe_clusters, run_embeddings
    from phenossl.report.write import report_figure

    with reported_as("The report"):
        labels = np.asarray(labels)
        config, store = record.config, record.tile_store()
        if labels.shape[0] != store.n_cells:
            raise PhenosslError(f"run {record.name}'s clusters do not match its tiles: show the run again")
        if space is None:
            space = clustering_space(config, store, run_embeddings(record.paths, store))
        saved_labels = saved_cluster_labels(record)
        saved = saved_labels is not None and np.array_equal(saved_labels, labels)
        k = len(np.unique(labels))
        source = SAVED_SOURCE if saved else exploring_source(k, config.seed)
        report = describe_clusters(config, store, space.features, labels, source=source)
        return ClusterReport(record.name, labels, saved, report, figure_png(report_figure(report.table, compact=True)))


def save_report(record: RunRecord, result: ClusterReport, *, overwrite: bool) -> list[Path] | FilesExist:
    """Write report.csv / .md / .png beside the run (``phenossl report RUN``'s files), under its lock.

    Refused unless ``result`` describes the run's saved clustering as it is now. Returns the paths, or
    ``FilesExist`` (returned, not raised: the widget asks, then calls again with ``overwrite=True``)."""
    from phenossl.report.write import report_targets, write_report

    with reported_as("Saving the report"):
        saved_labels = saved_cluster_labels(record)
        if not result.saved or saved_labels is None or not np.array_equal(saved_labels, result.labels):
            raise PhenosslError(
                f"This report is not of run {record.name}'s saved clustering: keep the shown clustering as the "
                "run's (step 4, Keep), report on it again, then save. Nothing was written."
            )
        report = result.report
        targets = report_targets(record.paths.root)
        try:
            return write_report(record.paths.root, targets, report.table, report.markdown, report.title,
                                 report.reading, overwrite=overwrite)
        except OutputExistsError:
            existing = [path for path in targets if path.exists()]
            if not existing or any(path.is_dir() for path in existing):
                raise
            return FilesExist(
                f"Saving the report of run {record.name} would replace {len(existing)} existing file(s) in "
                f"{record.paths.root}: {', '.join(path.name for path in existing)}. Nothing has been written yet."
            )


def _score(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"


def report_rows(table) -> list[tuple[str, str, str, str]]:
    """The dock's compact table: (variable, group, clusters' AMI, probe score) of every variable the run has,
    the clusters' strongest first, as report.md lists them."""
    shown = table[table["n_cells"] > 0].sort_values("cluster_ami", ascending=False)
    rows = []
    for row in shown.itertuples():
        probe = _score(row.probe_score)
        if row.probe == "balanced accuracy":
            probe += f" (chance {row.probe_chance:.2f})"
        elif row.probe == "R2":
            probe += " R²"
        elif row.probe:
            probe = str(row.probe).split(":")[0]  # "skipped" (why: in the report's Markdown)
        rows.append((str(row.variable), str(row.group), _score(row.cluster_ami), probe))
    return rows
