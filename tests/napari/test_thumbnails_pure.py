"""The Qt-free parts of the gallery and the UMAP plot: which crop a thumbnail shows, its nucleus outline, colours
by cluster or by a column, the words for a cell, and the nearest point under the mouse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from phenossl.augment.specs import auto_crop_fraction
from phenossl.config import RunConfig
from phenossl.napari.tasks import to_rgb8
from phenossl.napari.thumbnails import (
    OUTLINE_RGB,
    ThumbnailView,
    embedded_view,
    outline,
    resize_image,
    thumbnail,
)
from phenossl.napari.widgets.plots import (
    MAX_LEVELS,
    OTHER_RGBA,
    cluster_point_colours,
    colour_by_choices,
    colour_groups,
    column_point_colours,
    describe_cell,
)
from phenossl.napari.widgets.umap_widget import nearest_point, zoomed_limits


def _config(**sections) -> RunConfig:
    return RunConfig.model_validate(sections)


def test_the_view_is_the_runs_embedded_centre_crop_or_three_nucleus_diameters():
    auto = embedded_view(_config(), nucleus_diameter=20.0, tile_size=196)  # morphology: centre crop 'auto'
    assert auto.fraction == auto_crop_fraction(20.0, 196) and auto.crop_px == 60
    assert "centre crop the run embedded" in auto.describe() and "60 px of the 196 px" in auto.describe()
    fixed = embedded_view(
        _config(train={"composition_a": {"name": "half", "transforms": [{"kind": "center_crop", "fraction": 0.5}]}}),
        nucleus_diameter=20.0, tile_size=196)
    assert fixed.crop_px == 98
    # the B branch embeds when A weighs less than half
    mostly_b = _config(train={"weight_a": 0.2, "composition_b": {"name": "b", "transforms": [
        {"kind": "center_crop", "fraction": 0.25}]}})
    assert embedded_view(mostly_b, 20.0, 196).crop_px == 48  # 49 px, made even like the tile
    # no crop in the embedding: about three nucleus diameters, whatever the run
    for config in (_config(representation="cellprofiler"), _config(embed={"view": "full"}),
                   _config(train={"composition_a": {"name": "rc", "transforms": [{"kind": "random_crop"}]}})):
        view = embedded_view(config, nucleus_diameter=20.0, tile_size=196)
        assert view.crop_px == 60 and "3 nucleus diameters" in view.reason
    assert embedded_view(_config(representation="cellprofiler"), None, 96).crop_px == 96  # size unknown: all


def test_a_thumbnail_is_the_central_crop_in_the_channel_colours_at_the_chosen_size():
    rng = np.random.default_rng(0)
    tile = rng.random((3, 50, 50)).astype(np.float16)
    view = ThumbnailView(0.5, 50, "test")
    assert (view.start, view.crop_px) == (12, 26)  # 25 px would sit half a pixel off the centre
    same_size = thumbnail(tile, None, view, view.crop_px)  # no resampling: exactly the crop's pixels
    assert np.array_equal(same_size, to_rgb8(tile[:, 12:38, 12:38]))
    for size in (64, 112, 192):
        assert thumbnail(tile, None, view, size).shape == (size, size, 3)
    marked = np.zeros((1, 50, 50), dtype=np.float32)
    marked[0, 24:26, 24:26] = 1.0  # the tile's centre lands on the thumbnail's centre
    big = thumbnail(marked, None, view, 100)
    bright = np.argwhere(big.sum(axis=2) > 0)
    assert np.allclose(bright.mean(axis=0), 49.5, atol=1.0)
    with pytest.raises(ValueError, match="does not match 48 px tiles"):
        thumbnail(tile, None, ThumbnailView(0.5, 48, "wrong"), 64)


def test_the_outline_follows_the_nucleus_edge_and_not_the_crop_edge():
    from skimage.segmentation import find_boundaries

    yy, xx = np.mgrid[:60, :60]
    mask = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 10**2).astype(np.uint8)
    tile = np.zeros((2, 60, 60), dtype=np.float32)
    view = ThumbnailView(1.0, 60, "all")
    image = thumbnail(tile, mask, view, 120)
    white = np.all(image == OUTLINE_RGB, axis=2)
    edge = find_boundaries(np.kron(mask, np.ones((2, 2), dtype=np.uint8)).astype(bool), mode="inner")
    distance_to_white = _distance_to(white)
    assert white.sum() > 100 and np.mean(distance_to_white[edge] <= 1) > 0.95  # the whole edge is drawn
    assert _distance_to(edge)[white].max() <= 1.5  # and nothing else
    assert not white[:20].any() and not white[:, :20].any()
    # a nucleus cut by the crop: no line along the crop's border
    cut = np.zeros((60, 60), dtype=np.uint8)
    cut[:, :30] = 1
    line = outline(cut, 64)
    assert line[:, 30:34].any() and not line[0, :28].any() and not line[:, 0].any()
    assert thumbnail(tile, None, view, 64).max() == 0  # no mask: no line


def _distance_to(where: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~where)


def test_resizing_keeps_levels_and_shape():
    flat = np.full((139, 139, 3), 0.25, dtype=np.float32)
    for size in (64, 112, 192):
        assert np.allclose(resize_image(flat, size), 0.25) and resize_image(flat, size).shape == (size, size, 3)
    ramp = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (100, 1))
    small = resize_image(ramp, 40)
    assert np.all(np.diff(small[0]) > 0) and small[0, 0] < 0.05 and small[0, -1] > 0.95


def test_cluster_colours_and_their_legend_with_sizes():
    colors = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float32)
    labels = np.array([0, 2, 2, 1, 2])
    result = cluster_point_colours(labels, colors)
    assert np.array_equal(result.rgba, colors[labels])
    assert [label for label, _, _ in result.legend] == ["0 (1)", "1 (1)", "2 (3)"]


def test_categorical_and_numeric_columns_are_coloured_differently():
    values = pd.Series(["DMSO"] * 5 + ["taxol"] * 3 + [None], name="compound")
    result = column_point_colours(values)
    assert [label for label, _, _ in result.legend] == ["DMSO (5)", "taxol (3)", "missing (1)"]
    assert len({tuple(c) for c in result.rgba[:8]}) == 2 and tuple(result.rgba[8]) == OTHER_RGBA
    doses = pd.Series([0.0, 5.0, 15.0, 50.0, 5.0], name="dose")  # few numbers: categories, in their order
    assert [label for label, _, _ in column_point_colours(doses).legend] == ["0 (1)", "5 (2)", "15 (1)", "50 (1)"]
    many = pd.Series([f"c{i % 20}" for i in range(200)] + ["c0"] * 10, name="compound")
    legend = column_point_colours(many).legend
    assert len(legend) == MAX_LEVELS + 1 and legend[0][0] == "c0 (20)" and legend[-1][0] == "8 others (80)"
    area = pd.Series(np.arange(100, dtype=float), name="area")
    numeric = column_point_colours(area)
    assert not numeric.legend and numeric.value_range == pytest.approx((0.99, 98.01))
    from matplotlib import colormaps

    assert np.allclose(numeric.rgba[-1], colormaps["viridis"](1.0)) and np.allclose(numeric.rgba[0],
                                                                                     colormaps["viridis"](0.0))


def test_points_are_drawn_in_one_group_per_colour_the_largest_first():
    rgba = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1], [0, 1, 0, 1]], float)
    groups = colour_groups(rgba)
    assert [(colour, rows.tolist()) for colour, rows in groups] == [
        ((1.0, 0.0, 0.0, 1.0), [0, 2, 4]), ((0.0, 1.0, 0.0, 1.0), [1, 5]), ((0.0, 0.0, 1.0, 1.0), [3])]
    assert colour_groups(np.zeros((0, 4))) == []
    area = column_point_colours(pd.Series(np.random.default_rng(0).normal(size=10_000)), "area")
    assert len(colour_groups(area.rgba)) <= 64  # a colour scale in steps: few artists to draw


def test_colour_choices_and_the_words_for_a_cell():
    cells = pd.DataFrame({"cell_id": range(4), "label": [1, 2, 3, 4], "field": ["a", "a", "b", "b"],
                          "file_DNA": ["x.tif", "x.tif", "y.tif", "y.tif"], "compound": ["DMSO"] * 4,
                          "area": [10, 20, 30, 40], "plate": ["P1"] * 4, "well": ["B02", "B02", "B03", "B03"],
                          "centroid_y": [1.0, 2, 3, 4], "density_condition": ["sparse", "sparse", "dense", "dense"]})
    assert colour_by_choices(cells) == ["field", "area", "well", "centroid_y", "density_condition"]
    text = describe_cell(cells.iloc[2].to_dict(), 2, cluster=1)
    assert text.splitlines() == ["cell 2, cluster 1", "field b, plate P1, well B03",
                                 "compound DMSO, area 30, density_condition dense"]


def test_the_nearest_point_on_screen_and_zooming_about_the_mouse():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.1]])
    tree = cKDTree(xy)
    # x is drawn at 10 px per unit, y at 200: (0, 0.1) is 20 px away on screen, (1, 0) 10 px
    assert nearest_point(tree, xy, (0.6, 0.0), (10.0, 200.0), radius_px=6) == 1
    assert nearest_point(tree, xy, (0.0, 0.02), (10.0, 200.0), radius_px=6) == 0
    assert nearest_point(tree, xy, (0.5, 0.05), (10.0, 200.0), radius_px=6) is None
    assert zoomed_limits((0.0, 10.0), 2.0, 0.5) == (1.0, 6.0)
