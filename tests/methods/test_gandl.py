"""GAN-DL: the discriminator's trunk is the encoder; real and generated images pass the same compositions."""

import math

import pytest
import torch

from phenossl.config import TrainConfig
from phenossl.errors import ConfigError
from phenossl.methods.gandl import (
    Generator,
    discriminator_loss,
    generated_size,
    generator_loss,
    generator_plan,
    r1_penalty,
    running_stats_frozen,
)


@pytest.mark.parametrize("size, plan", [(96, (3, 5)), (64, (4, 4)), (128, (4, 5)), (40, (5, 3)), (196, (4, 6))])
def test_generator_reaches_every_size(size, plan):
    assert generator_plan(size) == plan
    images = Generator(latent_dim=8, out_channels=3, size=size, width=4)(torch.randn(2, 8))
    assert images.shape == (2, 3, size, size)


def test_losses_at_chance_and_r1_is_the_squared_gradient():
    zero = torch.zeros(4)
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    assert discriminator_loss(torch.full((4,), 9.0), torch.full((4,), -9.0)).item() < 1e-3
    a = torch.tensor([1.0, -2.0, 3.0])
    x = torch.randn(5, 3, requires_grad=True)
    assert r1_penalty(x @ a, x).item() == pytest.approx(14.0)  # |a|^2 for every image
    weights = torch.tensor([1.0, 0, 0, 0, 0])
    assert r1_penalty((x @ a) * torch.arange(1.0, 6.0), x, weights).item() == pytest.approx(14.0)


def test_generated_batches_leave_the_running_statistics_alone():
    norm = torch.nn.BatchNorm1d(3).train()
    with running_stats_frozen(norm):
        norm(torch.randn(16, 3) + 5)
    assert torch.equal(norm.running_mean, torch.zeros(3)) and norm.momentum == 0.1
    norm(torch.randn(16, 3) + 5)
    assert norm.running_mean.min() > 0.1


def test_generated_images_are_made_like_the_tiles():
    morphology = TrainConfig(method="gandl", resolution=96, composition_a="morphology-jitter")  # centre crop 0.5
    assert generated_size(morphology, tile_size=196) == 192  # larger tiles only shrink: 192 px suffice
    assert generated_size(morphology, tile_size=68) == 68  # small crops are upsampled: the same for both
    assert generated_size(TrainConfig(method="gandl", resolution=96, composition_a="context"), 196) == 96
    assert generated_size(TrainConfig(method="gandl", resolution=96, weight_a=0.5,
                                      composition_a="morphology-jitter"), 196) == 192
    assert generated_size(morphology) == 192
    auto = TrainConfig(method="gandl", resolution=96, composition_a="morphology")  # crop 'auto' unresolved
    assert generated_size(auto, tile_size=196) == 136  # at most 1/sqrt(2) of the side: 96 / 0.707


def test_cassle_has_no_projector_to_condition_in_a_gan():
    from phenossl.config import config_from_dict

    with pytest.raises(ConfigError, match="gandl has none"):
        config_from_dict({"train": {"method": "gandl", "cassle": True}})
