"""Synthetic run folders whose truth is known: fields of a sparse or a dense well, two compounds crossed with
the two densities, and an embedding built from either the cells' neighbour counts or their compound."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from phenossl.config import config_from_dict, save_config
from phenossl.pipeline import RunPaths
from phenossl.tiles.store import TileStoreWriter

FIELD = (240, 240)
TILE = 16
RADIUS = 30.0  # the report's radius on these stores: 3 nucleus diameters (area 79 px -> diameter 10)


def place(rng: np.random.Generator, n: int, min_distance: float = 9.0) -> np.ndarray:
    """``n`` centroids in a field, at least ``min_distance`` px apart (so their discs never merge)."""
    points: list[tuple[float, float]] = []
    while len(points) < n:
        p = rng.uniform(8, FIELD[0] - 8, size=2)
        if all(np.hypot(*(p - q)) >= min_distance for q in points):
            points.append(tuple(p))
    return np.round(np.array(points))


def disc_labels(centroids: np.ndarray, radius: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[: FIELD[0], : FIELD[1]]
    labels = np.zeros(FIELD, dtype=np.int32)
    for i, (y, x) in enumerate(centroids):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i + 1
    return labels


def plate_cells(seed: int = 0, n_wells: int = 8) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Cells of ``n_wells`` one-field wells: density (sparse 12 / dense 60 cells) and compound (A / B) crossed
    and repeated; the neighbour count of each cell within RADIUS is the ``true_neighbours`` column."""
    rng = np.random.default_rng(seed)
    rows, labels = [], {}
    for w in range(n_wells):
        dense, compound = w % 2 == 1, "AB"[(w // 2) % 2]
        key = f"P1_B{w + 2:02d}_s1"
        centroids = place(rng, 60 if dense else 12)
        labels[key] = disc_labels(centroids)
        neighbours = cKDTree(centroids).query_ball_point(centroids, RADIUS, return_length=True) - 1
        for i, (y, x) in enumerate(centroids):
            rows.append({"field": key, "label": i + 1, "centroid_y": y, "centroid_x": x, "area": 75 + rng.integers(0, 9),
                         "padded": False, "plate": "P1", "well": f"B{w + 2:02d}", "site": 1,
                         "compound": f"compound_{compound}", "true_neighbours": neighbours[i],
                         "dense": dense})
    return pd.DataFrame(rows), labels


def make_run(root, embeddings: np.ndarray, clusters: np.ndarray | None, cells: pd.DataFrame,
             labels: dict[str, np.ndarray] | None = None, *, seed: int = 0) -> RunPaths:
    """A run folder: config.yaml, a tile store of random tiles (a central disc as each nucleus mask),
    embeddings.npy and, unless ``clusters`` is None, clusters.csv."""
    rng = np.random.default_rng(seed)
    paths = RunPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    save_config(config_from_dict({"name": "synthetic", "seed": seed, "cluster": {"k": 2},
                                  "output": {"dir": str(root)}}), paths.config)
    n = len(cells)
    writer = TileStoreWriter(paths.store, n, ["DNA", "actin"], TILE)
    yy, xx = np.mgrid[:TILE, :TILE]
    mask = ((yy - TILE // 2) ** 2 + (xx - TILE // 2) ** 2 <= 9).astype(np.uint8)
    writer.append(rng.random((n, 2, TILE, TILE)).astype(np.float32), np.repeat(mask[None], n, axis=0))
    for key, image in (labels or {}).items():
        writer.save_labels(key, image)
    writer.finish(cells.drop(columns=["true_neighbours", "dense"], errors="ignore"), {"source": "test"})
    np.save(paths.embeddings, embeddings.astype(np.float32))
    if clusters is not None:
        pd.DataFrame({"cell_id": np.arange(n), "cluster": clusters}).to_csv(paths.clusters, index=False)
    return paths


def density_embedding(cells: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Embeddings that encode each cell's neighbour count (and nothing of its compound)."""
    rng = np.random.default_rng(seed)
    signal = cells["true_neighbours"].to_numpy(np.float64)[:, None]
    return np.hstack([signal * np.ones((1, 4)), np.zeros((len(cells), 12))]) + rng.normal(0, 0.3, (len(cells), 16))


def compound_embedding(cells: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Embeddings that encode each cell's compound (and nothing of its density)."""
    rng = np.random.default_rng(seed)
    one_hot = pd.get_dummies(cells["compound"]).to_numpy(np.float64) * 3.0
    return np.hstack([one_hot, np.zeros((len(cells), 14))]) + rng.normal(0, 0.5, (len(cells), 16))


def kmeans_labels(embeddings: np.ndarray, k: int = 2, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(embeddings)
