"""The nuclei layers' tables and colours, built without Qt: napari's row conventions, what untiled nuclei
show, the cluster palette against the channel colours, the status line's cluster sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from phenossl.napari import layer_tables
from phenossl.napari.controller import cluster_sizes_text
from phenossl.render import CHANNEL_RGB, PALETTE_NAME, cluster_colors, hex_colors


@dataclass
class FakeClustering:
    labels: np.ndarray
    distance: np.ndarray
    nearest_rank: np.ndarray
    k: int


def _nuclei() -> pd.DataFrame:
    """Five nuclei on two fields; label 4 was deleted by the user (a gap), label 2 has no tile."""
    return pd.DataFrame(
        {
            "label": [1, 2, 3, 5, 6],
            "field": ["f1", "f1", "f2", "f2", "f2"],
            "field_index": [0, 0, 1, 1, 1],
            "plate": ["P1"] * 5,
            "well": ["B02", "B02", "C03", "C03", "C03"],
            "site": [1, 1, 1, 1, 1],
            "centroid_y": [10.0, 20, 30, 40, 50],
            "centroid_x": [11.0, 21, 31, 41, 51],
            "area": [100, 110, 120, 130, 140],
        }
    )


def _store() -> pd.DataFrame:
    return pd.DataFrame(
        {"label": [1, 3, 5, 6], "field": ["f1", "f2", "f2", "f2"], "compound": ["DMSO", "DMSO", "CHX", "CHX"],
         "concentration": [0.0, 0.0, 1.0, 3.0]}
    )


def test_labels_table_row_r_is_label_r_with_the_background_first():
    cells = layer_tables.cell_table(_nuclei(), _store())
    dense = layer_tables.labels_table(cells)
    assert dense["index"].tolist() == list(range(7)) and dense["label"].tolist() == list(range(7))
    assert dense["cell_id"].tolist() == [None, 0, None, 1, None, 2, 3]  # background, untiled and gap: None
    assert dense.loc[5, "compound"] == "CHX" and pd.isna(dense.loc[4, "compound"])
    assert dense["area"].tolist()[1] == 100 and dense["area"].iloc[0] is None  # ints stay ints, no '100.0'


def test_before_tiling_there_is_no_cell_id_and_plate_columns_are_categories():
    cells = layer_tables.cell_table(_nuclei())
    assert "cell_id" not in cells
    for column in ("plate", "well", "field"):
        assert isinstance(cells[column].dtype, pd.CategoricalDtype)


def test_clustered_cells_carry_cluster_colour_umap_and_components():
    clustering = FakeClustering(np.array([0, 1, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 1, 2, 2]), 2)
    colors = cluster_colors(2)
    umap = np.arange(8, dtype=float).reshape(4, 2)
    pcs = np.arange(12, dtype=np.float32).reshape(4, 3)
    paint = layer_tables.layer_paint(
        _nuclei(), _store(), np.int32, clustering=clustering, umap=umap, pcs=pcs, colors=colors
    )
    cells = paint.cells
    tiled = cells["cell_id"].notna().to_numpy()
    assert cells["cluster"].tolist()[2] == 1 and pd.isna(cells["cluster"].iloc[1])
    assert cells.loc[tiled, "cluster_color"].tolist() == [hex_colors(colors)[c] for c in (0, 1, 1, 0)]
    assert cells.loc[tiled, "umap_y"].tolist() == [1.0, 3.0, 5.0, 7.0]
    assert [c for c in cells if c.startswith("emb_pc")] == ["emb_pc1", "emb_pc2", "emb_pc3"]
    assert isinstance(cells["compound"].dtype, pd.CategoricalDtype)
    # colours: each nucleus its cluster's, the untiled one grey; the label colormap agrees with the points
    assert np.allclose(paint.point_colors[tiled], colors[[0, 1, 1, 0]])
    assert np.allclose(paint.colormap.map(5), colors[1]) and np.allclose(paint.colormap.map(2)[:3], 0.55)
    assert paint.colormap._cache_other  # the texture mapping was built here (the worker), not on the UI thread


def test_embedding_components_are_bounded_and_seeded():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 20)).astype(np.float32)
    first = layer_tables.embedding_pcs(features, seed=3)
    assert first.shape == (300, layer_tables.N_PCS) and first.dtype == np.float32
    assert np.array_equal(first, layer_tables.embedding_pcs(features, seed=3))
    assert layer_tables.embedding_pcs(features[:, :3]).shape == (300, 3)


def test_cluster_palette_keeps_away_from_every_channel_hue_and_is_stable():
    from skimage.color import rgb2lab

    assert PALETTE_NAME == "phenossl-distinct"
    colors = cluster_colors(10)
    assert np.array_equal(colors, cluster_colors(10)) and np.array_equal(colors[:4], cluster_colors(4))
    lab = rgb2lab(colors[None, :, :3].astype(float))[0]
    channels = rgb2lab(CHANNEL_RGB[None])[0]
    chromatic = np.hypot(channels[:, 1], channels[:, 2]) > 20
    hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1]))
    channel_hue = np.degrees(np.arctan2(channels[chromatic, 2], channels[chromatic, 1]))
    gap = np.abs((hue[:, None] - channel_hue[None] + 180) % 360 - 180).min(axis=1)
    vivid = np.hypot(lab[:, 1], lab[:, 2]) >= 15
    assert (gap[vivid] > 25).all()  # a green cluster would vanish on green tubulin
    nuclear_hue = np.degrees(np.arctan2(channels[0, 2], channels[0, 1]))  # the blue every nucleus lies on
    assert (np.abs((hue[vivid] - nuclear_hue + 180) % 360 - 180) > 60).all()
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(10) * 1e9
    assert distances.min() > 20  # and the clusters stay apart from each other
    assert (lab[:, 0] >= 50).all()  # bright enough on a dark plate


@pytest.mark.parametrize(
    ("sizes", "text"),
    [
        ([5], "1 cluster of 5 cells"),
        ([40, 52, 61], "3 clusters of 40, 52 and 61 cells"),
        (list(range(3, 103)), "100 clusters of 3-102 cells (median 52)"),
    ],
)
def test_status_names_cluster_sizes_briefly(sizes, text):
    assert cluster_sizes_text(np.array(sizes)) == text
