"""Which transform moved which cluster: two runs of the same cells, side by side.

Three answers, computed here without Qt or files: (a) the contingency of the two clusterings (which cluster of
run A became which of run B, after the Hungarian matching of ``cluster.compare``), (b) for each variable of the
run report, how much more or less run B's clusters (and its embedding) follow it than run A's, and (c) the cells
that changed cluster, grouped by their move. Run B's configuration is read against run A's
(``config_diff``), so the reading names what was changed next to what moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.cluster.compare import ClusteringComparison, compare_clusterings
from phenossl.errors import InputError
from phenossl.report.reading import NOTHING, _join

#: columns that identify a cell across two runs, in order of preference (plates: field + nucleus label)
CELL_KEYS = (("field", "label"), ("label",), ("source_file", "crop_index"), ("crop_index",), ("cell_id",))
MOVED = 0.05  # a change of clusters' AMI worth naming in the reading
MAX_NAMED = 3
VARIABLE_COLUMNS = ["variable", "group", "family", "kind", "cluster_ami_a", "cluster_ami_b", "cluster_ami_change",
                    "probe", "probe_score_a", "probe_score_b", "probe_change", "n_cells", "note"]


@dataclass(frozen=True, eq=False)
class RunDifference:
    """Run B against run A on the cells they share (``rows_a`` / ``rows_b``: those cells' store rows)."""

    name_a: str
    name_b: str
    rows_a: np.ndarray
    rows_b: np.ndarray
    clusters_a: np.ndarray  # of the shared cells, in rows_a order
    clusters_b: np.ndarray
    comparison: ClusteringComparison
    contingency: pd.DataFrame  # index: A's clusters, columns: B's clusters (matched ones first), cell counts
    moves: pd.DataFrame  # cluster_a, cluster_b, n_cells, share_of_a: the changed cells' moves, largest first
    variables: pd.DataFrame  # VARIABLE_COLUMNS, one row per variable
    differences: list[str]  # what B was made with differently (config_diff)
    reading: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def changed_rows_a(self) -> np.ndarray:
        """Store rows (run A) of the cells that changed cluster."""
        return self.rows_a[self.comparison.changed]


def cell_key(cells: pd.DataFrame) -> tuple[str, ...]:
    """The columns that identify a cell of this table (see CELL_KEYS)."""
    for key in CELL_KEYS:
        if all(column in cells.columns for column in key):
            return key
    raise InputError("the cell table has none of the columns that identify a cell (field and label, or crop_index, "
                     "or cell_id)")


def shared_cells(cells_a: pd.DataFrame, cells_b: pd.DataFrame, names: tuple[str, str] = ("A", "B")
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Store rows of the cells two runs share, matched on their identifying columns, in run A's order. Runs of one
    tile store share every cell; after re-tiling only the common ones are compared. A clear error when none is."""
    key_a, key_b = cell_key(cells_a), cell_key(cells_b)
    if key_a != key_b:
        raise InputError(f"runs {names[0]} and {names[1]} identify their cells differently ({', '.join(key_a)} vs "
                         f"{', '.join(key_b)}): they were made from different inputs, so no cell can be compared")
    a = cells_a[list(key_a)].astype(str).assign(row_a=np.arange(len(cells_a)))
    b = cells_b[list(key_b)].astype(str).assign(row_b=np.arange(len(cells_b)))
    both = a.merge(b, on=list(key_a), how="inner", validate="one_to_one").sort_values("row_a")
    if both.empty:
        raise InputError(f"runs {names[0]} and {names[1]} share no cell (matched on {', '.join(key_a)}): they were "
                         "made from different tiles; compare two runs of the same plate or crops")
    return both["row_a"].to_numpy(np.int64), both["row_b"].to_numpy(np.int64)


def contingency_table(clusters_a: np.ndarray, clusters_b: np.ndarray, matching: dict[int, int]) -> pd.DataFrame:
    """Cell counts, A's clusters as rows and B's as columns, B's ordered by their A partner so that an unchanged
    clustering is a diagonal; B's unmatched clusters come last."""
    table = pd.crosstab(pd.Series(clusters_a, name="A"), pd.Series(clusters_b, name="B"))
    matched = [matching[a] for a in table.index if a in matching]
    order = matched + [b for b in table.columns if b not in matched]
    return table[order]


def cluster_moves(clusters_a: np.ndarray, clusters_b: np.ndarray, changed: np.ndarray) -> pd.DataFrame:
    """Each (A cluster -> B cluster) move of the changed cells: how many, and what share of A's cluster."""
    if changed.size == 0:
        return pd.DataFrame(columns=["cluster_a", "cluster_b", "n_cells", "share_of_a"])
    moved = pd.DataFrame({"cluster_a": clusters_a[changed], "cluster_b": clusters_b[changed]})
    moves = moved.groupby(["cluster_a", "cluster_b"]).size().rename("n_cells").reset_index()
    sizes = pd.Series(clusters_a).value_counts()
    moves["share_of_a"] = moves["n_cells"] / moves["cluster_a"].map(sizes)
    return moves.sort_values(["n_cells", "cluster_a"], ascending=[False, True]).reset_index(drop=True)


def variable_changes(table_a: pd.DataFrame, table_b: pd.DataFrame) -> pd.DataFrame:
    """Two run reports' tables (``describe_clusters``) joined by variable: each score in A, in B, and B minus A."""
    keep = ["variable", "cluster_ami", "probe_score"]
    both = table_a.merge(table_b[keep], on="variable", how="outer", suffixes=("_a", "_b"))
    both["cluster_ami_change"] = both["cluster_ami_b"] - both["cluster_ami_a"]
    both["probe_change"] = both["probe_score_b"] - both["probe_score_a"]
    return both[VARIABLE_COLUMNS].sort_values("cluster_ami_change", key=lambda s: -s.abs(), na_position="last"
                                              ).reset_index(drop=True)


def _moved(rows: pd.DataFrame) -> list[str]:
    """'local density (neighbours 0.35 -> 0.04)' for a nuisance family, 'compound (0.10 -> 0.30)' for a treatment."""
    return [(f"{r.family} ({r.variable} " if r.group == "nuisance" else f"{r.variable} (")
            + f"{ami_text(r.cluster_ami_a)} -> {ami_text(r.cluster_ami_b)})" for r in rows.itertuples()]


def ami_text(value: float) -> str:
    """Two decimals, an AMI a hair below zero (chance) written 0.00 rather than -0.00."""
    return f"{round(value, 2) + 0.0:.2f}"


def difference_reading(diff: RunDifference) -> str:
    """The comparison in words, from its numbers: what B changed, then ``moves_reading``."""
    made = (f"{diff.name_b} differs from {diff.name_a} in: {'; '.join(diff.differences)}." if diff.differences
            else f"{diff.name_b} and {diff.name_a} were made with the same settings (another seed or start).")
    return made + " " + moves_reading(diff)


def moves_reading(diff: RunDifference) -> str:
    """How much the clusterings agree, and which variables B's clusters follow more and less than A's (each
    nuisance family by its largest move). napari lists ``diff.differences`` above it instead of a sentence."""
    comparison = diff.comparison
    agree = (f"Their clusters agree with AMI {comparison.ami:.2f} (1 = the same grouping, 0 = unrelated); "
             f"{comparison.n_changed} of {comparison.n_cells} cells ({comparison.fraction_changed:.0%}) changed cluster.")
    scored = diff.variables.dropna(subset=["cluster_ami_change"])
    scored = scored[(scored[["cluster_ami_a", "cluster_ami_b"]].max(axis=1) >= NOTHING)]
    by_family = scored.reindex(scored["cluster_ami_change"].abs().sort_values(ascending=False).index)
    by_family = by_family.drop_duplicates("family")
    more = by_family[by_family["cluster_ami_change"] >= MOVED].head(MAX_NAMED)
    less = by_family[by_family["cluster_ami_change"] <= -MOVED].head(MAX_NAMED)
    if more.empty and less.empty:
        follows = f" {diff.name_b}'s clusters follow every variable about as much as {diff.name_a}'s (no AMI moved " \
                  f"by {MOVED:g} or more)."
    else:
        parts = []
        if len(more):
            parts.append(f"{_join(_moved(more))} more")
        if len(less):
            parts.append(f"{_join(_moved(less))} less")
        follows = f" {diff.name_b}'s clusters follow " + ", and ".join(parts) + f" than {diff.name_a}'s."
    return agree + follows


def run_difference(name_a: str, name_b: str, cells_a: pd.DataFrame, cells_b: pd.DataFrame,
                   clusters_a: np.ndarray, clusters_b: np.ndarray, table_a: pd.DataFrame, table_b: pd.DataFrame,
                   config_a: dict, config_b: dict) -> RunDifference:
    """Compare two runs' clusterings (one label per store row of each run) and reports (``describe_clusters``
    tables), on the cells they share."""
    from dataclasses import replace

    from phenossl.report.config_diff import config_differences

    rows_a, rows_b = shared_cells(cells_a, cells_b, (name_a, name_b))
    a, b = np.asarray(clusters_a)[rows_a], np.asarray(clusters_b)[rows_b]
    comparison = compare_clusterings(a, b)
    diff = RunDifference(name_a, name_b, rows_a, rows_b, a, b, comparison,
                         contingency_table(a, b, comparison.matching), cluster_moves(a, b, comparison.changed),
                         variable_changes(table_a, table_b), config_differences(config_a, config_b))
    return replace(diff, reading=difference_reading(diff))
