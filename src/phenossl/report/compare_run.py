"""``phenossl compare RUN_A RUN_B``: two run folders' comparison (``report.compare``) written as files.

Beside run B (or in ``--out``): ``compare-<A>.md`` (the reading, what B changed, the contingency, the moves, the
variables), ``compare-<A>.csv`` (the variables, A and B side by side), ``compare-<A>.png`` (contingency heat map
and the change of each variable), ``compare-<A>-changed.csv`` (every cell that changed cluster) and
``compare-<A>-gallery.png`` (those cells, grouped by their move). Written together, all or none, never over
existing files unless asked, under run B's lock when written into its folder. Figures use plain matplotlib
``Figure`` objects (no pyplot): napari draws them from worker threads.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.errors import InputError
from phenossl.report.compare import RunDifference, ami_text
from phenossl.report.write import markdown_cell

COMPARE_STEM = "compare"
GALLERY_MOVES = 4  # moves shown in the gallery, largest first
GALLERY_CELLS = 8  # cells shown per move
GALLERY_CELLS_COMPACT = 5  # in napari's dock
MOVES_LISTED = 10


def compare_targets(folder: Path, name_a: str) -> list[Path]:
    stem = f"{COMPARE_STEM}-{_slug(name_a)}"
    return [folder / f"{stem}.csv", folder / f"{stem}.md", folder / f"{stem}.png", folder / f"{stem}-changed.csv",
            folder / f"{stem}-gallery.png"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def compare_run_folders(run_a: str | Path, run_b: str | Path, *, out: str | Path | None = None,
                        overwrite: bool = False) -> RunDifference:
    """Compare the saved clusterings of two run folders of the same cells and write the files (see the module)."""
    from dataclasses import replace

    from phenossl.atomic import check_can_write
    from phenossl.pipeline import open_run
    from phenossl.report.run import run_embeddings, saved_clusters

    config_a, paths_a, store_a = open_run(run_a)
    config_b, paths_b, store_b = open_run(run_b)
    name_a, name_b = paths_a.root.name, paths_b.root.name
    if paths_a.root.resolve() == paths_b.root.resolve():
        raise InputError(f"both runs are {paths_a.root}: compare two different runs of the same cells")
    if name_a == name_b:
        name_a, name_b = str(paths_a.root), str(paths_b.root)
    folder = Path(out) if out is not None else paths_b.root
    targets = compare_targets(folder, name_a)
    for target in targets:  # before any computing
        check_can_write(target, overwrite)
    diff = difference_of_runs(
        RunSide(name_a, config_a, store_a, run_embeddings(paths_a, store_a), saved_clusters(paths_a, store_a.n_cells)),
        RunSide(name_b, config_b, store_b, run_embeddings(paths_b, store_b), saved_clusters(paths_b, store_b.n_cells)))
    write_comparison(folder, targets, diff, store_a, lock=folder.resolve() == paths_b.root.resolve(),
                     overwrite=overwrite, seed=config_a.seed)
    return replace(diff, written=targets)


@dataclass(frozen=True, eq=False)
class RunSide:
    """One run of a comparison as loaded: its name, configuration, tile store, embeddings and clusters (one per
    store row). napari builds these from its session's runs, the CLI from run folders."""

    name: str
    config: Any
    store: Any
    embeddings: np.ndarray
    clusters: np.ndarray


def difference_of_runs(a: RunSide, b: RunSide) -> RunDifference:
    """Each run's report (``describe_clusters`` in its own clustering space; the variables computed once when
    both runs share their tile store), then their difference on the cells they share."""
    from phenossl.cluster.stage import clustering_space
    from phenossl.report.compare import run_difference
    from phenossl.report.run import describe_clusters
    from phenossl.report.variables import store_variables

    columns = sorted(set(a.config.cluster.label_columns or []) | set(b.config.cluster.label_columns or [])) or None
    variables_a = store_variables(a.store, columns)
    same_store = Path(a.store.path).resolve() == Path(b.store.path).resolve()
    variables_b = variables_a if same_store else store_variables(b.store, columns)
    tables = [describe_clusters(side.config, side.store,
                                clustering_space(side.config, side.store, side.embeddings).features, side.clusters,
                                source="the run clustering", variables=variables).table
              for side, variables in ((a, variables_a), (b, variables_b))]
    return run_difference(a.name, b.name, a.store.cells, b.store.cells, a.clusters, b.clusters, tables[0],
                          tables[1], a.config.model_dump(mode="json"), b.config.model_dump(mode="json"))


def _table(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    records = frame[columns].to_dict(orient="records")  # keeps each column's type (iterrows would make ints floats)
    return lines + ["| " + " | ".join(markdown_cell(row[c]) for c in columns) + " |" for row in records]


def comparison_markdown(diff: RunDifference) -> str:
    """The comparison as Markdown: reading, differences, contingency, moves, variables."""
    title = f"{diff.name_b} against {diff.name_a}: which clusters moved, and what they follow now"
    contingency = diff.contingency.copy()
    contingency.index = [f"A {a}" for a in contingency.index]
    contingency = contingency.rename(columns=lambda b: f"B {b}").reset_index(names="")
    lines = [f"# {title}", "", diff.reading, "", f"## What {diff.name_b} was made with differently", ""]
    lines += [f"- {line}" for line in diff.differences] or ["- nothing (same settings)"]
    lines += ["", "## Contingency (cells; rows: A's clusters, columns: B's, matched ones first)", ""]
    lines += _table(contingency, list(contingency.columns))
    lines += ["", f"## The largest moves ({diff.comparison.n_changed} cells changed cluster)", ""]
    moves = diff.moves.head(MOVES_LISTED)
    lines += _table(moves, list(moves.columns)) if len(moves) else ["No cell changed cluster."]
    lines += ["", "## Each variable: clusters' AMI and the linear probe in A, in B, and the change", ""]
    lines += _table(diff.variables[diff.variables["n_cells"] > 0],
                    ["variable", "group", "kind", "cluster_ami_a", "cluster_ami_b", "cluster_ami_change", "probe",
                     "probe_score_a", "probe_score_b", "probe_change"])
    return "\n".join(lines) + "\n"


def comparison_figure(diff: RunDifference, *, compact: bool = False):
    """Contingency heat map (share of each A cluster going to each B cluster, counts written in) beside the change
    of every variable's clusters' AMI from A to B. ``compact``: the two stacked, narrow, short labels and no
    caption, for napari's dock (which shows the reading as text)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from phenossl.report.write import GROUP_COLORS

    table = diff.contingency
    shown = diff.variables[diff.variables["cluster_ami_change"].notna()].iloc[::-1]
    if compact:
        heights = [1.0 + 0.25 * len(table), 0.7 + 0.2 * max(len(shown), 1)]
        fig = Figure(figsize=(4.2, sum(heights)), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=heights)  # each laid out alone: long names stay below
        left, right = top.subplots(), bottom.subplots()
        tick, label = 7, 7
    else:
        height = max(3.2, 0.8 + 0.28 * max(len(shown), len(table)))
        fig = Figure(figsize=(12, height + 0.8), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
        tick, label = 8, 9
    share = table.to_numpy() / np.maximum(table.to_numpy().sum(axis=1, keepdims=True), 1)
    image = left.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), count in np.ndenumerate(table.to_numpy()):
        left.text(j, i, str(count), ha="center", va="center", fontsize=7,
                  color="white" if share[i, j] > 0.6 else "black")
    left.set_xticks(range(table.shape[1]), [str(b) for b in table.columns], fontsize=tick)
    left.set_yticks(range(table.shape[0]), [str(a) for a in table.index], fontsize=tick)
    left.set_xlabel(f"{diff.name_b}: cluster", fontsize=label)
    left.set_ylabel(f"{diff.name_a}: cluster", fontsize=label)
    left.set_title(f"where each cluster went (AMI {diff.comparison.ami:.2f})", fontsize=label)
    bar = left.figure.colorbar(image, ax=left, shrink=0.8, label="share of the A cluster")
    y = np.arange(len(shown))
    right.barh(y, shown["cluster_ami_change"], color=[GROUP_COLORS.get(g, "#1b9e77") for g in shown["group"]])
    right.axvline(0, color="black", linewidth=0.8)
    right.set_yticks(y, [f"{v} ({ami_text(a)}->{ami_text(b)})" for v, a, b in
                         zip(shown["variable"], shown["cluster_ami_a"], shown["cluster_ami_b"])], fontsize=tick)
    right.set_xlabel("clusters' AMI, B minus A (right: B follows it more)" if compact else
                     f"clusters' AMI, {diff.name_b} minus {diff.name_a} (right: B follows it more)", fontsize=label,
                     loc="right" if compact else "center")  # compact: under the long names too, never cut
    if compact:
        right.xaxis.set_major_locator(MaxNLocator(4))
        right.tick_params(axis="x", labelsize=tick)
        bar.ax.tick_params(labelsize=tick)
        bar.set_label("share of the A cluster", fontsize=label)
    else:
        fig.suptitle(textwrap.fill(diff.reading, 170), fontsize=8)
    return fig


def gallery_figure(diff: RunDifference, tiles, *, seed: int = 0, compact: bool = False):
    """The changed cells, one row per move (largest first), up to GALLERY_CELLS seeded picks each (``compact``:
    fewer, smaller, for napari's dock)."""
    from matplotlib.figure import Figure

    from phenossl.render import composite_rgb

    per_move = GALLERY_CELLS_COMPACT if compact else GALLERY_CELLS
    moves = diff.moves.head(GALLERY_MOVES)
    rows = max(len(moves), 1)
    size = (0.75 * per_move + 0.9, 0.8 * rows + 0.4) if compact else (1.3 * per_move + 1.2, 1.4 * rows + 0.6)
    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, per_move, squeeze=False))
    rng = np.random.default_rng(seed)
    changed = diff.comparison.changed
    for i, move in enumerate(moves.itertuples()):
        members = changed[(diff.clusters_a[changed] == move.cluster_a) & (diff.clusters_b[changed] == move.cluster_b)]
        picks = np.sort(rng.choice(members, size=min(per_move, members.size), replace=False))
        for j, position in enumerate(picks):
            axes[i, j].imshow(composite_rgb(np.asarray(tiles[int(diff.rows_a[position])])))
        axes[i, 0].set_ylabel(f"A {move.cluster_a} -> B {move.cluster_b}\n{move.n_cells} cells",
                              fontsize=7 if compact else 8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    title = (f"cells that changed cluster from {diff.name_a} to {diff.name_b}" if len(moves)
             else f"no cell changed cluster from {diff.name_a} to {diff.name_b}")
    fig.suptitle(title, fontsize=8 if compact else 9)
    return fig


def changed_cells_table(diff: RunDifference, cells_a: pd.DataFrame) -> pd.DataFrame:
    """One row per changed cell: run A's identifying columns and plate position, its cluster in A and in B."""
    keep = [c for c in ("cell_id", "field", "label", "plate", "well", "site", "crop_index", "centroid_y",
                        "centroid_x") if c in cells_a.columns]
    changed = diff.comparison.changed
    table = cells_a.iloc[diff.rows_a[changed]][keep].reset_index(drop=True)
    table["cluster_a"] = diff.clusters_a[changed]
    table["cluster_b"] = diff.clusters_b[changed]
    return table


def write_comparison(folder: Path, targets: list[Path], diff: RunDifference, store_a, *, lock: bool,
                     overwrite: bool, seed: int = 0) -> None:
    import contextlib

    from phenossl.atomic import atomic_paths
    from phenossl.runlock import run_folder_lock

    folder.mkdir(parents=True, exist_ok=True)
    guard = run_folder_lock(folder, "phenossl compare") if lock else contextlib.nullcontext()
    with guard, atomic_paths(targets, overwrite=overwrite) as (csv, md, png, changed, gallery):
        diff.variables.to_csv(csv, index=False, lineterminator="\n")
        md.write_text(comparison_markdown(diff), encoding="utf-8")
        comparison_figure(diff).savefig(png, dpi=110, format="png")
        changed_cells_table(diff, store_a.cells).to_csv(changed, index=False, lineterminator="\n")
        gallery_figure(diff, store_a.tiles, seed=seed).savefig(gallery, dpi=110, format="png")
