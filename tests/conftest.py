"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    """Real microscopy data beside the checkout (../shared/data) or where PHENOSSL_SHARED_DATA points."""
    env = os.environ.get("PHENOSSL_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real data folder; skips the test (saying why) where it is absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set PHENOSSL_SHARED_DATA to its folder to run this test)")
    return path


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def claim_runs(tmp_path_factory):
    """The bundled synthetic plate tiled once, and one run folder per composition of the paper's claim
    (``morphology``, ``context``: MoCo v2 / ResNet18, 15 epochs at the demo's resolution, seed 0), each with
    config.yaml, embeddings.npy and a K-Means clusters.csv (k = 3, seed 0). Trained once for every test that
    checks the claim (tests/pipeline/test_phenotype_claim.py, tests/report/test_report_claim.py): about 3 minutes
    per run on 2 CPU cores."""
    import pandas as pd

    from phenossl.augment.specs import load_composition
    from phenossl.cluster import EmbeddingSpace
    from phenossl.config import save_config
    from phenossl.demo import demo_config
    from phenossl.embed import embed_store
    from phenossl.pipeline import RunPaths, prepare_run_dir, stage_tile
    from phenossl.train import train

    base = tmp_path_factory.mktemp("claim")
    config = demo_config(out=base / "tiles")
    store = stage_tile(config, prepare_run_dir(config))
    runs = {}
    for composition in ("morphology", "context"):
        root = base / composition
        root.mkdir()
        paths = RunPaths(root)
        (root / "store").symlink_to(store.path, target_is_directory=True)
        train_config = config.train.model_copy(update={"composition_a": load_composition(composition), "epochs": 15})
        save_config(config.model_copy(update={"train": train_config}), paths.config)
        result = train(store, train_config, root / "training", seed=0)
        embeddings = embed_store(store, result.checkpoint, paths.embeddings)
        labels = EmbeddingSpace(embeddings).cluster(3, seed=0).labels
        pd.DataFrame({"cell_id": range(store.n_cells), "cluster": labels}).to_csv(paths.clusters, index=False)
        runs[composition] = (root, labels)
    return store, runs


#: an OME-Zarr HCS plate's fields: 2 wells x 2 fields (3 channels), for the reader tests in io/ and napari/
HCS_KEYS = ["SYNTH01_C02_s1", "SYNTH01_C02_s2", "SYNTH01_C03_s1", "SYNTH01_C03_s2"]


@pytest.fixture(scope="session")
def hcs_synthetic():
    """The synthetic plate behind ``hcs_plate`` (its images are what the readers must return)."""
    from phenossl.synthetic import make_synthetic_plate

    return make_synthetic_plate(3, sites_per_well=2, field_size=96, field_keys=HCS_KEYS)


@pytest.fixture
def hcs_plate(tmp_path, hcs_synthetic):
    """``hcs_synthetic`` written as a real OME-Zarr HCS plate (by ome-zarr) at tmp_path/out/SYNTH01.zarr."""
    from phenossl.synthetic.files import write_plate_ome_zarr

    return write_plate_ome_zarr(hcs_synthetic, tmp_path / "out")
