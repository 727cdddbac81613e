"""A run that starts from weights (ImageNet-style ``train.encoder_weights`` or a previous run's ``init_from``)
must start its momentum encoder from the same weights: MoCo's keys and BYOL's targets come from it."""

import pytest
import torch
import torchvision

from phenossl.methods.registry import method_names, method_spec
from phenossl.train.trainer import save_untrained, set_up_training

MOMENTUM_METHODS = [name for name in method_names()
                    if method_spec(name).branch and method_spec(name).branch_class().uses_momentum_encoder]


def test_the_momentum_methods_are_found():
    assert {"mocov2", "byol"} <= set(MOMENTUM_METHODS)


def _assert_same(first, second):
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def _set_up(store, config, run_dir):
    return set_up_training(store, config, run_dir, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("method", MOMENTUM_METHODS)
def test_momentum_encoder_starts_from_encoder_weights(method, tiny_store, tiny_config, tmp_path):
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    config = tiny_config(method=method, encoder_weights=tmp_path / "resnet18.pth")
    model = _set_up(tiny_store, config, tmp_path / "run").model
    weights = torch.load(tmp_path / "resnet18.pth", weights_only=True)
    torch.testing.assert_close(model.encoder.body.layer1[0].conv1.weight, weights["layer1.0.conv1.weight"])
    _assert_same(model.momentum_encoder, model.encoder)


@pytest.mark.parametrize("method", MOMENTUM_METHODS)
def test_momentum_encoder_starts_from_the_previous_run(method, tiny_store, tiny_config, tmp_path):
    previous = save_untrained(tiny_store, tiny_config(method="simclr"), tmp_path / "previous", seed=7)
    config = tiny_config(method=method, init_from=previous.checkpoint)
    model = _set_up(tiny_store, config, tmp_path / "run").model
    saved = torch.load(previous.checkpoint, weights_only=True)["model"]
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, saved[f"encoder.{key}"]), key  # really started from the previous run
    _assert_same(model.momentum_encoder, model.encoder)
