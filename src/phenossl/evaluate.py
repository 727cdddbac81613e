"""Does a representation separate the treatments? The same measurements for every run, side by side.

A biologist's question before trusting a trained encoder is whether it beats simply measuring the cells.
:func:`evaluate_embeddings` answers it on the user's own labels for any representation (a trained encoder,
CellProfiler measurements, an untrained encoder), with the numbers the profiling field uses:

- **AMI**: K-Means with k = the number of label values (or the k asked for), adjusted mutual information
  against the label, mean and sd over several K-Means seeds;
- **AMI within**: the same, K-Means refitted inside each group of ``within`` (e.g. each plate) that holds at
  least two label values, so no plate effect can help; mean over those groups;
- **1-NN balanced accuracy**: each cell labelled by its nearest other cell, the nearest taken from the *other*
  groups of ``within`` when given (leave one plate out), else 5-fold cross-validation; balanced, because
  controls usually outnumber treated cells;
- **silhouette** of the label groups in the space (how compact and apart the labels are).

Every figure can be computed twice: in the space as clustered (global z-score) and with each plate
standardised to its own negative controls (``controls``, pycytominer's ``normalize``); a representation has to
win after that correction too. Pure: arrays and tables in, a table out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, InputError

DEFAULT_SEEDS = 5
KNN_FOLDS = 5
MIN_CELLS_PER_VALUE = 2  # a label value needs this many cells to be clustered or predicted
SILHOUETTE_SAMPLE = 10_000
NORMALIZATIONS = ("as clustered", "to controls")


@dataclass(frozen=True)
class EvaluationSettings:
    """What to score against and how. ``k`` None = the number of label values (per group for AMI within)."""

    label: str
    within: str | None = None
    k: int | None = None
    controls: str | None = None  # "compound=DMSO": also score with each batch standardised to its controls
    batch_column: str | None = None  # batches for the control normalisation; default: ``within``, else plate
    seeds: int = DEFAULT_SEEDS
    preprocessing: str = "standardize"

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 2:
            raise ConfigError(f"k must be at least 2 (or 'auto'), got {self.k}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}")

    def batches(self, cells: pd.DataFrame) -> str | None:
        if self.batch_column is not None:
            return self.batch_column
        if self.within is not None:
            return self.within
        return "plate" if "plate" in cells.columns else None


@dataclass
class Evaluation:
    """The figures of one representation in one space; ``per_group`` holds AMI within each group."""

    n_cells: int
    k: int
    ami_mean: float
    ami_sd: float
    ami_within_mean: float | None
    ami_within_sd: float | None
    knn_balanced_accuracy: float
    silhouette: float
    per_group: dict[str, float] = field(default_factory=dict)
    knn_scheme: str = ""

    def as_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "per_group"}
        row.update({f"ami_within[{group}]": value for group, value in self.per_group.items()})
        return row


def parse_k(text: str | int | None) -> int | None:
    """``auto`` (or None) -> None; otherwise an integer >= 2, with a clear message."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--k must be a whole number of clusters (at least 2) or 'auto'; got {text!r}") from None
    if k < 2:
        raise ConfigError(f"--k must be at least 2 (K-Means needs two clusters to separate anything); got {k}")
    return k


def check_labels(cells: pd.DataFrame, settings: EvaluationSettings, what: str = "the cell table") -> np.ndarray:
    """Rows with a label (cells without one are left out). Raises InputError naming the column and its values
    when the label is missing, constant, or has a value held by a single cell, or ``within`` is missing."""
    label = settings.label
    for column, role in ((label, "label"), (settings.within, "--within")):
        if column is not None and column not in cells.columns:
            raise InputError(
                f"The {role} column {column!r} is not in {what}; its columns are: "
                f"{', '.join(map(str, cells.columns))}."
            )
    known = cells[label].notna().to_numpy()
    counts = cells.loc[known, label].astype(str).value_counts()
    shown = ", ".join(f"{value} ({n})" for value, n in counts.head(12).items())
    if len(counts) < 2:
        raise InputError(
            f"The label column {label!r} has {'one value' if len(counts) else 'no values'} in {what} ({shown or 'none'}): "
            "there is nothing to separate. Choose a column whose cells differ (e.g. compound)."
        )
    single = counts[counts < MIN_CELLS_PER_VALUE]
    if len(single):
        raise InputError(
            f"The label column {label!r} has values with fewer than {MIN_CELLS_PER_VALUE} cells in {what}: "
            f"{', '.join(map(str, single.index[:10]))} (values: {shown}). A single cell can be neither clustered "
            "nor predicted: leave those cells out or choose another column."
        )
    return known


def evaluate_embeddings(
    embeddings: np.ndarray, cells: pd.DataFrame, settings: EvaluationSettings, *, to_controls: bool = False,
    what: str = "the cell table",
) -> Evaluation:
    """Score one representation (N, D) against ``cells[settings.label]`` (see the module docstring)."""
    from phenossl.cluster.space import control_groups, prepare_features

    if len(cells) != len(embeddings):
        raise InputError(f"{what} has {len(cells)} cells but the embeddings have {len(embeddings)} rows.")
    known = check_labels(cells, settings, what)
    groups = None
    if to_controls:
        if settings.controls is None:
            raise ConfigError("normalising to the controls needs a control selection, e.g. compound=DMSO")
        groups = control_groups(cells, settings.controls, settings.batches(cells))
    features = prepare_features(embeddings, settings.preprocessing, groups)[known]
    table = cells.loc[known].reset_index(drop=True)
    labels = table[settings.label].astype(str).to_numpy()
    k = settings.k or len(np.unique(labels))
    amis = [_kmeans_ami(features, labels, k, seed) for seed in range(settings.seeds)]
    per_group, within_by_seed = {}, None
    if settings.within is not None:
        per_group, within_by_seed = _ami_within(features, labels, table[settings.within].astype(str).to_numpy(),
                                                settings)
    knn, scheme = _nearest_neighbour(features, labels, table, settings)
    return Evaluation(
        n_cells=int(known.sum()),
        k=k,
        ami_mean=float(np.mean(amis)),
        ami_sd=float(np.std(amis)),
        ami_within_mean=None if within_by_seed is None else float(np.mean(within_by_seed)),
        ami_within_sd=None if within_by_seed is None else float(np.std(within_by_seed)),
        knn_balanced_accuracy=knn,
        silhouette=_label_silhouette(features, labels),
        per_group=per_group,
        knn_scheme=scheme,
    )


def _kmeans_ami(features: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    from phenossl.cluster.kmeans import cluster_features
    from phenossl.cluster.metrics import ami

    return ami(labels, cluster_features(np.ascontiguousarray(features), k, seed=seed, n_nearest=1).labels)


def _ami_within(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, settings: EvaluationSettings):
    """AMI per group holding >= 2 label values (K-Means refitted there), and the mean over groups per seed."""
    per_group: dict[str, float] = {}
    by_seed = np.zeros(settings.seeds)
    scored = 0
    for group in sorted(set(groups)):
        rows = groups == group
        values, counts = np.unique(labels[rows], return_counts=True)
        if (counts >= MIN_CELLS_PER_VALUE).sum() < 2:
            continue
        k = settings.k or len(values)
        seeds = [_kmeans_ami(features[rows], labels[rows], k, seed) for seed in range(settings.seeds)]
        per_group[str(group)] = float(np.mean(seeds))
        by_seed += seeds
        scored += 1
    if not scored:
        raise InputError(
            f"No group of {settings.within!r} holds two values of {settings.label!r}, so there is nothing to "
            f"separate within a {settings.within}: leave out --within, or choose another column."
        )
    return per_group, by_seed / scored


def _nearest_neighbour(features: np.ndarray, labels: np.ndarray, table: pd.DataFrame,
                       settings: EvaluationSettings) -> tuple[float, str]:
    """1-NN balanced accuracy: leave one ``within`` group out when there are several, else stratified k-fold."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    predicted = np.empty(labels.shape, dtype=object)
    groups = table[settings.within].astype(str).to_numpy() if settings.within else None
    if groups is not None and len(set(groups)) > 1:
        folds = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in sorted(set(groups))]
        scheme = f"leave one {settings.within} out"
    else:
        n_folds = int(min(KNN_FOLDS, np.unique(labels, return_counts=True)[1].min()))
        folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=0).split(features, labels))
        scheme = f"{n_folds}-fold"
    for train, test in folds:
        classifier = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(features[train], labels[train])
        predicted[test] = classifier.predict(features[test])
    return float(balanced_accuracy_score(labels, predicted.astype(str))), scheme


def _label_silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    from phenossl.cluster.metrics import silhouette

    codes = pd.factorize(labels)[0]
    return silhouette(features, codes, seed=0, sample_size=SILHOUETTE_SAMPLE)


# --------------------------------------------------------------------------------------------------
# Several runs, one table


@dataclass(frozen=True)
class EvaluatedRun:
    """What a row needs from a run: its name, what kind of representation it is, its embeddings and cells."""

    name: str
    representation: str
    embeddings: np.ndarray
    cells: pd.DataFrame


def evaluation_table(runs: Sequence[EvaluatedRun], settings: EvaluationSettings) -> pd.DataFrame:
    """One row per run and space (as clustered, and normalised to the controls when ``settings.controls``)."""
    rows = []
    for run in runs:
        for to_controls in (False, True) if settings.controls else (False,):
            result = evaluate_embeddings(run.embeddings, run.cells, settings, to_controls=to_controls,
                                         what=f"run {run.name}")
            rows.append({"run": run.name, "representation": run.representation,
                         "space": NORMALIZATIONS[int(to_controls)], **result.as_row()})
    return pd.DataFrame(rows)


def table_markdown(table: pd.DataFrame, settings: EvaluationSettings) -> str:
    """The table as Markdown, with a line saying what was measured."""
    within = f"; AMI within each {settings.within}" if settings.within else ""
    controls = f"; 'to controls' = each {settings.batch_column or settings.within or 'plate'} standardised to its {settings.controls} cells" \
        if settings.controls else ""
    lines = [
        f"Against **{settings.label}**: K-Means AMI (mean ± sd over {settings.seeds} seeds, k = "
        f"{settings.k or 'the number of values'}){within}; 1-NN balanced accuracy; silhouette of the label "
        f"groups{controls}.",
        "",
        "| run | representation | space | cells | k | AMI | AMI within | 1-NN bal. acc. | silhouette |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table.itertuples(index=False):
        within_text = "–" if pd.isna(row.ami_within_mean) else f"{row.ami_within_mean:.3f} ± {row.ami_within_sd:.3f}"
        lines.append(
            f"| {row.run} | {row.representation} | {row.space} | {row.n_cells} | {row.k} | "
            f"{row.ami_mean:.3f} ± {row.ami_sd:.3f} | {within_text} | {row.knn_balanced_accuracy:.3f} "
            f"({row.knn_scheme}) | {row.silhouette:.3f} |"
        )
    return "\n".join(lines) + "\n"
