"""Segmentation and tiling as Dask tasks (phenossl.tiles.distributed): on a LocalCluster of 2 worker processes the
store equals a serial run's; a failed field is named and the others' shards kept; a rerun redoes only what is
missing; a worker killed mid-task is recovered."""

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenossl.cli import main
from phenossl.tiles import build
from phenossl.tiles.distributed import FieldsFailedError, shards_folder
from phenossl.tiles.store import TileStore

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
from pipeline_helpers import disc_field, plate_folder, run_config

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers get this module's functions by value


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture
def small_samples(monkeypatch):
    """Fields of 160 x 160 px draw a random sample of their pixels (as a real plate's do), not all of them."""
    monkeypatch.setattr(build, "SAMPLES_PER_FIELD", 5000)


def _plate(tmp_path, odd_field=True):
    """4 fields; B03 is smaller than the sample (all its pixels, no draw), so the samples of the fields after it
    come from other random states than a run of 160 x 160 px fields gives."""
    plate = plate_folder(tmp_path / "plate", n_fields=4)
    if odd_field:
        rng = np.random.default_rng(1)
        dna = disc_field(shape=(64, 70), centres=((20, 20), (40, 50)))
        tifffile.imwrite(plate / "P1_B03_s1_w1.tif", dna)
        tifffile.imwrite(plate / "P1_B03_s1_w2.tif", (rng.random(dna.shape) * 1000).astype(np.uint16))
    return plate


def _build(config, store, scheduler=None, overwrite=False):
    return build.build_store(config.input, store, segmentation=config.segmentation, tiles=config.tiles,
                             seed=config.seed, scheduler=scheduler, overwrite=overwrite)


def _assert_same_store(a: TileStore, b: TileStore) -> None:
    assert np.array_equal(np.asarray(a.tiles), np.asarray(b.tiles))
    assert np.array_equal(np.asarray(a.masks), np.asarray(b.masks))
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert np.array_equal(a.intensity_percentiles, b.intensity_percentiles)
    assert a.info["report"] == b.info["report"]
    assert a.field_keys() == b.field_keys()
    for key in a.field_keys():
        assert np.array_equal(a.labels(key), b.labels(key))


def test_a_dask_build_equals_the_serial_one(tmp_path, client, small_samples):
    config = run_config(tmp_path, _plate(tmp_path))
    serial = _build(config, tmp_path / "serial")
    dask_store = _build(config, tmp_path / "dask", scheduler=client)
    _assert_same_store(serial, dask_store)
    assert dask_store.info["tiling"]["fields_segmented"] == 4
    assert dask_store.info["tiling"]["samples_redrawn"] == 2  # B04 and B05: drawn from the state a 160 px B03 gives
    assert not shards_folder(tmp_path / "dask").exists()  # joined, then removed


def _count_segmentations(log: str) -> None:
    """On a worker: append the key of every field segmented to ``log``."""
    original = getattr(build, "_original_segment_field", build.segment_field)
    build._original_segment_field = original

    def counted(fld, *args, **kwargs):
        with open(log, "a") as out:
            out.write(fld.key + "\n")
        return original(fld, *args, **kwargs)

    build.segment_field = counted


def _die_once(marker: str, key: str) -> None:
    """On a worker: the first attempt to segment field ``key`` kills its worker process."""
    original = getattr(build, "_original_segment_field", build.segment_field)
    build._original_segment_field = original

    def dying(fld, *args, **kwargs):
        if fld.key.endswith(key):
            with open(marker, "a") as out:
                out.write(f"{os.getpid()}\n")
            if len(Path(marker).read_text().split()) == 1:
                os._exit(1)
        return original(fld, *args, **kwargs)

    build.segment_field = dying


def _restore() -> None:
    build.segment_field = getattr(build, "_original_segment_field", build.segment_field)


class _Patch(distributed.WorkerPlugin):
    """Patch every worker, those that start later (a killed one's replacement) too, with ``function(*args)``."""

    name = "phenossl-test-patch"

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def setup(self, worker):
        self.function(*self.args)

    def teardown(self, worker):
        _restore()


@contextlib.contextmanager
def _patched(client, function, *args):
    client.register_plugin(_Patch(function, *args))
    try:
        yield
    finally:
        client.unregister_worker_plugin(_Patch.name)
        client.run(_restore)


def test_a_failed_field_is_named_the_others_kept_and_a_rerun_does_only_it(tmp_path, client):
    plate = _plate(tmp_path, odd_field=False)
    good = (plate / "P1_B03_s1_w1.tif").read_bytes()
    (plate / "P1_B03_s1_w1.tif").write_bytes(b"II*\x00 this is not a TIFF")
    config = run_config(tmp_path, plate)
    log = tmp_path / "segmented.log"
    with _patched(client, _count_segmentations, str(log)):
        with pytest.raises(FieldsFailedError) as failed:
            _build(config, tmp_path / "store", scheduler=client)
        assert "1 of 4 field(s)" in str(failed.value) and "P1_B03_s1_w1.tif" in str(failed.value)
        assert failed.value.failed == ["P1_B03_s1"]
        shards = shards_folder(tmp_path / "store")
        kept = sorted(p.name.split("-")[0] for p in shards.iterdir() if (p / "segmented" / "field.json").is_file())
        assert len(kept) == 3 and not any("B03" in name for name in kept)
        assert not (tmp_path / "store").exists()
        assert len(log.read_text().split()) == 3

        log.unlink()
        (plate / "P1_B03_s1_w1.tif").write_bytes(good)  # fixed: the rerun segments it alone
        store = _build(config, tmp_path / "store", scheduler=client)
        assert log.read_text().split() == ["P1_B03_s1"]
        assert store.info["tiling"]["fields_segmented"] == 1 and store.info["tiling"]["fields_reused"] == 3
    _assert_same_store(_build(config, tmp_path / "serial"), store)


def test_a_killed_worker_is_recovered(tmp_path, client):
    config = run_config(tmp_path, _plate(tmp_path, odd_field=False))
    marker = tmp_path / "killed-once"
    with _patched(client, _die_once, str(marker), "B04_s1"):
        store = _build(config, tmp_path / "store", scheduler=client)
    first, second = marker.read_text().split()  # a worker died on it, another process segmented it
    assert first != second
    _assert_same_store(_build(config, tmp_path / "serial"), store)


def test_the_command_line_tiles_on_a_local_cluster(tmp_path, capsys):
    config = run_config(tmp_path, plate_folder(tmp_path / "plate", n_fields=2))
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    assert main(["tile", str(path), "--scheduler", "local:1"]) == 0
    store = TileStore(tmp_path / "run" / "store")
    assert store.info["tiling"]["scheduler"] == "local:1" and store.n_cells == 10
    assert "Dask (local:1): 2 field(s) segmented, 0 reused from an earlier run's shards, 2 tiled" in capsys.readouterr().out
    assert main(["tile", str(path), "--overwrite", "--scheduler", "nowhere"]) == 2
    assert "local:N" in capsys.readouterr().err
