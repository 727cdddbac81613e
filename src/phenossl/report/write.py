"""The report's files beside the run: the table (CSV), the same with its reading (Markdown) and a bar chart
(PNG), written together, all or none, under the run folder's lock, never over existing files unless asked.

The chart is drawn on a plain matplotlib ``Figure`` (no pyplot), as the overview is: napari may draw it from a
worker thread.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.report.association import N_BINS
from phenossl.report.variables import CATEGORICAL, CONTINUOUS, NUISANCE, TREATMENT

REPORT_STEM = "report"
GROUP_COLORS = {NUISANCE: "#8c8c8c", TREATMENT: "#d95f02"}
KIND_TAGS = {CATEGORICAL: "cat.", CONTINUOUS: "num."}


def report_targets(root: Path, k: int | None = None) -> list[Path]:
    """report.csv, report.md and report.png in the run folder; an exploration with another k gets its own
    names (report-k5.*) so that it never replaces the report of the run's own clustering."""
    stem = REPORT_STEM if k is None else f"{REPORT_STEM}-k{k}"
    return [Path(root) / f"{stem}.{ext}" for ext in ("csv", "md", "png")]


def markdown_cell(value: object) -> str:
    """A table cell of the reports' Markdown: numbers to 3 decimals, NaN empty, no stray column bars."""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.3f}"
    return str(value).replace("|", "/")


def report_markdown(table: pd.DataFrame, reading: str, title: str, settings: list[str]) -> str:
    """The Markdown report: title, the reading, how the numbers were made, the table of available variables
    (clusters' scores first), then the variables that could not be computed and why."""
    shown = table[table["n_cells"] > 0].sort_values("cluster_ami", ascending=False)
    columns = ["variable", "group", "family", "kind", "cluster_ami", "eta2", "probe", "probe_score", "probe_chance", "note"]
    lines = [f"# {title}", "", reading, "", *[f"- {s}" for s in settings], "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row[c]) for c in columns) + " |" for _, row in shown.iterrows()]
    absent = table[table["n_cells"] == 0]
    if len(absent):
        lines += ["", "Not available for this run:", ""]
        lines += [f"- {row.variable}: {row.note.removeprefix('not available: ')}" for row in absent.itertuples()]
    return "\n".join(lines) + "\n"


def plot_report(path, table: pd.DataFrame, title: str, reading: str) -> None:
    """The report's chart as a PNG file (``path`` may be a binary file object)."""
    report_figure(table, title + "\n" + textwrap.fill(reading, 150)).savefig(path, dpi=110, format="png")


def report_figure(table: pd.DataFrame, caption: str = "", *, compact: bool = False):
    """Two bar panels sharing the variables: the clusters' AMI, and the linear probe's score on the embedding
    (R2 for numbers, balanced accuracy for categories with its chance level marked). ``caption`` goes above.
    ``compact``: narrow, with short axis labels, for napari's dock (which shows the reading as text)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    shown = table[table["n_cells"] > 0].sort_values("cluster_ami", ascending=True, na_position="first")
    n = max(len(shown), 1)
    width, label_size, tick_size, row_height = (4.2, 7, 7, 0.2) if compact else (11.0, 9, 8, 0.32)
    fig = Figure(figsize=(width, (2.2 if caption else 0.9) + row_height * n), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(shown))
    colors = [GROUP_COLORS.get(g, "#1b9e77") for g in shown["group"]]
    left.barh(y, shown["cluster_ami"].fillna(0), color=colors)
    names = shown["variable"] if compact else [f"{v} ({KIND_TAGS.get(k, k)})" for v, k in zip(shown["variable"], shown["kind"])]
    left.set_yticks(y, names, fontsize=tick_size)
    left.set_xlabel("clusters: AMI" if compact else f"clusters: AMI (numbers on {N_BINS} quantile bins)",
                    fontsize=label_size)
    right.barh(y, shown["probe_score"].fillna(0).clip(lower=0), color=colors)
    chance = shown["probe_chance"].to_numpy()
    categorical = shown["probe"].to_numpy() == "balanced accuracy"
    right.scatter(chance[categorical], y[categorical], marker="|", s=120, color="black", label="chance")
    right.set_xlabel("embedding: probe (R2 / bal. acc.)" if compact else
                     "embedding: linear probe, whole wells held out (R2 / balanced accuracy)", fontsize=label_size)
    right.set_xlim(0, 1)
    if compact:
        for axes in (left, right):
            axes.tick_params(axis="x", labelsize=tick_size)
    if categorical.any():
        right.legend(fontsize=tick_size, loc="lower right")
    left.legend(handles=[Patch(color=color, label=group) for group, color in GROUP_COLORS.items()],
                fontsize=tick_size, loc="lower right")
    if caption:
        fig.suptitle(caption, fontsize=9)
    return fig


def write_report(root: Path, targets: list[Path], table: pd.DataFrame, markdown: str, title: str, reading: str,
                 *, overwrite: bool = False) -> list[Path]:
    """The three files, moved into place together under the run folder's lock."""
    from phenossl.atomic import atomic_paths
    from phenossl.runlock import run_folder_lock

    with run_folder_lock(root, "phenossl report"), atomic_paths(targets, overwrite=overwrite) as (csv, md, png):
        table.to_csv(csv, index=False, lineterminator="\n")
        md.write_text(markdown, encoding="utf-8")
        plot_report(png, table, title, reading)
    return targets
