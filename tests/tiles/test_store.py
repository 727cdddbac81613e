import numpy as np
import pandas as pd
import pytest

from phenossl.errors import InputError, OutputExistsError
from phenossl.tiles import TileStore, TileStoreWriter


def _write_store(path, n=10, overwrite=False, fill=0.5):
    writer = TileStoreWriter(path, n_cells=n, channel_names=["DNA", "actin"], tile_size=8, overwrite=overwrite)
    writer.append(np.full((4, 2, 8, 8), fill, dtype=np.float32))
    writer.append(np.full((n - 4, 2, 8, 8), fill, dtype=np.float32))
    writer.save_labels("field_1", np.eye(5, dtype=np.int32))
    cells = pd.DataFrame({"label": np.arange(1, n + 1), "well": ["A01"] * n})
    return writer.finish(cells, {"normalization": {"lo_hi": [[0.0, 1.0], [2.0, 3.0]]}})


def test_round_trip_is_memory_mapped_and_self_describing(tmp_path):
    store = _write_store(tmp_path / "store")
    reopened = TileStore(tmp_path / "store")
    assert isinstance(reopened.tiles, np.memmap)
    assert reopened.tiles.dtype == np.float16 and reopened.tiles.shape == (10, 2, 8, 8)
    assert reopened.channel_names == ["DNA", "actin"] and reopened.tile_size == 8
    assert list(reopened.cells["cell_id"]) == list(range(10))
    np.testing.assert_array_equal(reopened.labels("field_1"), np.eye(5))
    assert reopened.labels("missing") is None
    np.testing.assert_allclose(reopened.intensity_percentiles, [[0, 1], [2, 3]])
    assert store.n_cells == 10
    assert not (tmp_path / "store.partial").exists()


def test_existing_store_is_not_replaced_without_overwrite(tmp_path):
    _write_store(tmp_path / "store", fill=0.5)
    with pytest.raises(OutputExistsError, match="already exists"):
        _write_store(tmp_path / "store", fill=0.25)
    assert float(TileStore(tmp_path / "store").tiles[0, 0, 0, 0]) == 0.5
    _write_store(tmp_path / "store", fill=0.25, overwrite=True)
    assert float(TileStore(tmp_path / "store").tiles[0, 0, 0, 0]) == 0.25


def test_incomplete_build_never_becomes_a_store(tmp_path):
    writer = TileStoreWriter(tmp_path / "store", n_cells=5, channel_names=["DNA"], tile_size=4)
    writer.append(np.zeros((2, 1, 4, 4)))
    with pytest.raises(InputError, match="incomplete"):
        writer.finish(pd.DataFrame({"label": range(5)}), {})
    writer.abort()
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
    with pytest.raises(InputError, match="not a phenossl tile store"):
        TileStore(tmp_path / "store")


def test_damaged_store_is_reported(tmp_path):
    _write_store(tmp_path / "store")
    (tmp_path / "store" / "tiles.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="damaged"):
        TileStore(tmp_path / "store")
