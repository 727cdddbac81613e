"""GAN-DL training through phenossl's training loop: trains, embeds, resumes, and really learns."""

import math
import threading

import numpy as np
import pytest
import torch

from phenossl.errors import Cancelled
from phenossl.methods.build import build_model
from phenossl.train import EpochDone, iter_training, train
from phenossl.train.checkpoint import load_checkpoint


def _gan_config(tiny_config, **overrides):
    settings = {"method": "gandl", "weight_a": 0.5, "epochs": 2,
                "method_params": {"gandl": {"latent_dim": 16, "generator_width": 8}}}
    settings.update(overrides)
    return tiny_config(**settings)


def test_gan_dl_trains_embeds_and_resumes_exactly(tiny_store, tiny_config, tmp_path):
    from phenossl.embed import embed_store

    config = _gan_config(tiny_config)
    events = []
    straight = train(tiny_store, config, tmp_path / "straight", progress=events.append)
    steps = [e for e in events if not isinstance(e, EpochDone)]
    assert set(steps[0].branch_losses) == {"discriminator", "generator", "r1"}
    assert steps[0].branch_losses["r1"] > 0  # R1 is computed on the first step (lazy: every 4th after)
    assert all(np.isfinite(s.loss) for s in steps)
    state = load_checkpoint(straight.checkpoint)
    assert {"optimizer", "optimizer_g", "scheduler_g"} <= set(state) and state["gan_steps"] == 6
    embeddings = embed_store(tiny_store, straight.checkpoint, tmp_path / "embeddings.npy")
    assert embeddings.shape == (48, 512) and np.isfinite(embeddings).all()

    cancel = threading.Event()
    with pytest.raises(Cancelled):
        for event in iter_training(tiny_store, config, tmp_path / "resumed", cancel=cancel):
            if isinstance(event, EpochDone):
                cancel.set()
    resumed = load_checkpoint(train(tiny_store, config, tmp_path / "resumed", resume=True).checkpoint)
    for key, value in state["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, msg=f"{key} differs after resume")


def test_the_discriminator_learns_to_tell_real_cells_from_generated_ones(tiny_config):
    from phenossl.train.steps import make_step

    torch.manual_seed(0)
    config = _gan_config(tiny_config, composition_a="none", weight_a=1.0)
    model, augmenters = build_model(config, in_channels=2, num_samples=48)
    update = make_step(model, augmenters, config, torch.device("cpu"), total_steps=40, warmup_steps=0)
    real = torch.zeros(16, 2, 40, 40)
    real[:, 0, 12:28, 12:28] = 1.0  # a bright square nucleus on a dark background: easy to tell apart
    generator = torch.Generator().manual_seed(0)
    d_losses = [float(update(real, generator, i / 40)[1]["discriminator"]) for i in range(25)]
    assert np.mean(d_losses[-5:]) < 0.8 * 2 * math.log(2), d_losses  # well below chance (1.386)
