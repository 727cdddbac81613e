"""The CUDA path (AMP, channels_last, tiles resident on the device), run where a GPU is present.

CI has no GPU, so these skip there; benchmarks/gpu_check.sh runs them first on every GPU loan, before
any benchmark, so a broken GPU path is found before its numbers are trusted.
"""

import os

import numpy as np
import pytest
import torch

from phenossl.embed import embed_tiles, embedding_view, load_trained_model
from phenossl.train import train
from phenossl.train.checkpoint import load_checkpoint

# PHENOSSL_TEST_DEVICE=cpu runs the same tests on the CPU (to check the tests themselves without a GPU)
DEVICE = os.environ.get("PHENOSSL_TEST_DEVICE", "cuda")
needs_cuda = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("method", ["mocov2", "simclr", "byol", "vicreg", "gandl"])
def test_every_method_trains_on_cuda_with_amp_channels_last_and_device_tiles(method, tiny_store, tiny_config,
                                                                            tmp_path):
    config = tiny_config(method=method, device=DEVICE, amp=True, channels_last=True, cache_on_device="always",
                         weight_a=1.0 if method == "gandl" else 0.5, epochs=2)
    result = train(tiny_store, config, tmp_path / "run")
    assert result.device.startswith(DEVICE)
    assert np.isfinite(result.history["loss"]).all()
    state = load_checkpoint(result.checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@needs_cuda
def test_cuda_checkpoint_embeds_the_same_on_cpu_and_cuda(tiny_store, tiny_config, tmp_path):
    result = train(tiny_store, tiny_config(method="mocov2", device=DEVICE, epochs=1), tmp_path / "run")
    tiles = np.asarray(tiny_store.tiles)
    embedded = {}
    for device in ("cpu", DEVICE):
        model, config = load_trained_model(result.checkpoint, device=device)
        embedded[device] = embed_tiles(model, tiles, embedding_view(config, "auto", "d4"), batch_size=16)
    np.testing.assert_allclose(embedded[DEVICE], embedded["cpu"], rtol=1e-2, atol=1e-3)


@needs_cuda
def test_small_stem_trains_on_cuda(tiny_store, tiny_config, tmp_path):
    result = train(tiny_store, tiny_config(method="mocov2", device=DEVICE, stem="small", epochs=1), tmp_path / "r")
    assert np.isfinite(result.history["loss"]).all()
