import numpy as np
import pandas as pd
import pytest

from phenossl.tiles import TileStoreWriter


@pytest.fixture
def tiny_store(tmp_path):
    """48 random two-channel tiles: enough for a few real training steps in well under a second."""
    rng = np.random.default_rng(0)
    writer = TileStoreWriter(tmp_path / "store", 48, ["DNA", "actin"], 40)
    writer.append(rng.random((48, 2, 40, 40)).astype(np.float32))
    return writer.finish(pd.DataFrame({"label": range(48)}), {})


@pytest.fixture
def tiny_config():
    from phenossl.config import TrainConfig

    def make(**overrides):
        settings = dict(method="simclr", encoder="resnet18", epochs=2, batch_size=16, resolution=32, device="cpu")
        settings.update(overrides)
        return TrainConfig(**settings)

    return make
