"""Encoders for any channel count and tile size, and loading real local weights files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from phenossl.errors import ConfigError, InputError, WeightsNotFoundError
from phenossl.models.encoders import (
    IMAGENET_WEIGHT_FILES,
    IMAGENET_WEIGHT_URLS,
    adapt_first_conv,
    build_encoder,
    find_local_imagenet_weights,
    load_encoder_weights,
)

FIRST_CONV = {"resnet18": "conv1.weight", "vgg13": "features.0.weight"}


def _save_torchvision_weights(name: str, path, seed: int = 0):
    """A state dict as torchvision saves its ImageNet files: same keys and shapes, random values.

    For VGG13 only the ``features.*`` tensors: its classifier (500 MB) takes seconds to build and save and
    is dropped by the loader like ResNet18's ``fc``, which the complete ResNet18 files here do test.
    """
    torch.manual_seed(seed)
    if name == "resnet18":
        state = torchvision.models.resnet18(weights=None).state_dict()
    else:
        features = make_layers(cfgs["B"])  # what torchvision.models.vgg13() uses as .features
        state = {f"features.{key}": value for key, value in features.state_dict().items()}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["resnet18", "vgg13"])
@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_encoder_maps_any_channels_and_size_to_a_feature_vector(name, channels, size):
    encoder = build_encoder(name, channels).eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, channels, size, size))
    assert features.shape == (2, encoder.feature_dim)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", ["resnet18", "vgg13"])
def test_encoder_accepts_large_tiles(name):
    encoder = build_encoder(name, 2).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 2, 196, 196)).shape == (1, 512)


def test_vgg13_has_no_classifier():
    encoder = build_encoder("vgg13", 3)
    assert not any(key.startswith("body.classifier") for key in encoder.state_dict())
    assert sum(p.numel() for p in encoder.parameters()) < 10_000_000  # the trunk only (~9.4 M)


@pytest.mark.parametrize("bad", [{"name": "resnet50", "in_channels": 3}, {"name": "vgg13", "in_channels": 0}])
def test_build_encoder_rejects_bad_config(bad):
    with pytest.raises(ConfigError):
        build_encoder(**bad)


@pytest.mark.parametrize("name", ["resnet18", "vgg13"])
def test_load_torchvision_file_with_three_channels_copies_every_tensor(name, tmp_path):
    path = tmp_path / IMAGENET_WEIGHT_FILES[name]
    saved = _save_torchvision_weights(name, path)
    encoder = build_encoder(name, 3)
    assert load_encoder_weights(encoder, path) == path
    loaded = encoder.body.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, saved[key]), key


@pytest.mark.parametrize("name, channels", [("resnet18", 5), ("vgg13", 1)])
def test_load_adapts_first_conv_to_the_channel_count(name, channels, tmp_path):
    path = tmp_path / IMAGENET_WEIGHT_FILES[name]
    saved = _save_torchvision_weights(name, path)
    encoder = build_encoder(name, channels)
    load_encoder_weights(encoder, path)
    loaded = encoder.body.state_dict()
    rgb = saved[FIRST_CONV[name]]
    expected = rgb.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1) * (3 / channels)
    torch.testing.assert_close(loaded[FIRST_CONV[name]], expected)
    for key, value in loaded.items():
        if key != FIRST_CONV[name]:
            assert torch.equal(value, saved[key]), key


def test_adapted_conv_responds_to_a_uniform_image_like_the_rgb_conv():
    rgb = torch.randn(8, 3, 3, 3)
    grey = torch.rand(1, 1, 10, 10)
    expected = F.conv2d(grey.repeat(1, 3, 1, 1), rgb)
    for channels in (1, 2, 5):
        adapted = adapt_first_conv(rgb, channels)
        torch.testing.assert_close(F.conv2d(grey.repeat(1, channels, 1, 1), adapted), expected)


def test_load_phenossl_checkpoint_and_encoder_state(tmp_path):
    from phenossl.methods import MethodParams, MoCoParams, build_ssl_model

    torch.manual_seed(1)
    small = MethodParams(moco=MoCoParams(proj_hidden_dim=32, proj_output_dim=16, queue_size=8))
    model = build_ssl_model("mocov2", "resnet18", 2, params=small)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    torch.save(model.encoder.state_dict(), tmp_path / "encoder.pt")
    with torch.no_grad():  # make the momentum encoder differ, so loading it by mistake would show
        for param in model.momentum_encoder.parameters():
            param.add_(1.0)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint_moved.pt")
    for file in ("checkpoint.pt", "encoder.pt", "checkpoint_moved.pt"):
        encoder = build_encoder("resnet18", 2)
        load_encoder_weights(encoder, tmp_path / file)
        for key, value in encoder.state_dict().items():
            assert torch.equal(value, model.encoder.state_dict()[key]), (file, key)


def test_wrong_architecture_file_is_a_clear_input_error(tmp_path):
    path = tmp_path / "vgg13-19584684.pth"
    _save_torchvision_weights("vgg13", path)
    with pytest.raises(InputError, match="looks like vgg13") as raised:
        load_encoder_weights(build_encoder("resnet18", 3), path)
    assert str(path) in str(raised.value)


def test_file_that_is_not_a_state_dict_is_an_input_error(tmp_path):
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    for path in (tensor_file, garbage):
        with pytest.raises(InputError, match=str(path.name)):
            load_encoder_weights(build_encoder("resnet18", 3), path)


def test_missing_file_explains_how_to_get_imagenet_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError) as raised:
        load_encoder_weights(build_encoder("resnet18", 3), tmp_path / "nope.pth")
    message = str(raised.value)
    assert "nope.pth" in message and IMAGENET_WEIGHT_URLS["resnet18"] in message
    assert "~/.cache/torch/hub/checkpoints" in message


def test_find_local_imagenet_weights_looks_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if torch.hub.get_dir() != str(tmp_path / "hub"):
        pytest.skip("torch.hub.set_dir was called in this process; TORCH_HOME is ignored")
    assert find_local_imagenet_weights("resnet18") is None
    with pytest.raises(WeightsNotFoundError, match="no ImageNet weights for resnet18"):
        load_encoder_weights(build_encoder("resnet18", 1))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    saved = _save_torchvision_weights("resnet18", checkpoints / IMAGENET_WEIGHT_FILES["resnet18"])
    assert find_local_imagenet_weights("resnet18") == checkpoints / IMAGENET_WEIGHT_FILES["resnet18"]
    assert find_local_imagenet_weights("vgg13") is None
    encoder = build_encoder("resnet18", 3)
    load_encoder_weights(encoder)  # no path: the hub cache
    assert torch.equal(encoder.body.state_dict()["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])

    from phenossl.methods import MethodParams, SimCLRParams, build_ssl_model

    small = MethodParams(simclr=SimCLRParams(proj_hidden_dim=16, proj_output_dim=8))
    model = build_ssl_model("simclr", "resnet18", 3, params=small, encoder_weights="imagenet")
    assert torch.equal(
        model.encoder.body.state_dict()["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"]
    )
