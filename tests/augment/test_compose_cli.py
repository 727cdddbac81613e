"""`phenossl compose`: a composition as full YAML, saved without overwriting, and a PNG of its views."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phenossl.augment.specs import load_composition
from phenossl.cli import main
from phenossl.tiles import TileStoreWriter


def test_compose_prints_the_full_composition_and_saves_it_once(tmp_path, capsys):
    saved = tmp_path / "mine.yaml"
    assert main(["compose", "morphology", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "kind: rotation" in out and "kind: center_crop" in out and "fraction: auto" in out
    assert load_composition(saved) == load_composition("morphology")
    saved.write_text(saved.read_text().replace("fraction: auto", "fraction: 0.6"))
    assert main(["compose", "context", "--save", str(saved)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_composition(saved).transforms != load_composition("context").transforms  # left as it was


def test_compose_preview_draws_views_of_real_cells(tmp_path, capsys):
    rng = np.random.default_rng(0)
    writer = TileStoreWriter(tmp_path / "store", 10, ["DNA", "actin"], 40)
    writer.append(rng.random((10, 2, 40, 40)).astype(np.float32))
    writer.finish(pd.DataFrame({"label": range(10)}), {})
    png = tmp_path / "views.png"
    args = ["compose", "context", "--preview", str(tmp_path), "--cells", "0,9", "--views", "3", "--png", str(png)]
    assert main(args) == 0
    assert "2 cells x 3 views" in capsys.readouterr().out
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape[1] > pixels.shape[0] and pixels.std() > 10  # 2 rows of 4 images, not a blank page
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main([*args[:-2], "--cells", "10", "--png", str(tmp_path / "other.png")]) == 2
    assert "not in the store (it has cells 0..9)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["morphology", "context", "none"])
def test_views_sheet_has_the_tile_then_each_view(name):
    from phenossl.views_sheet import views_sheet

    tiles = np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32)
    rows = views_sheet(tiles, load_composition(name), n_views=4, seed=0, out_size=24)
    assert len(rows) == 2 and all(len(row) == 5 for row in rows)
    assert rows[0][0].shape == (32, 32, 3) and rows[0][1].shape == (24, 24, 3)
    if name == "none":  # no augmentation: every view is the same resized tile
        np.testing.assert_allclose(rows[0][1], rows[0][2])
    else:
        assert not np.allclose(rows[0][1], rows[0][2])
