"""Encoders: torchvision's VGG13 trunk and ResNet18 for any number of channels, plus local weights.

The encoder's output is the embedding that phenossl clusters, so it is a plain feature vector (B, D):
VGG13 keeps only its convolutional trunk (``features``) followed by global average pooling (the
4096-wide classifier would cost most of the time and is not part of a representation), ResNet18 keeps
its average pool and drops ``fc``. Global pooling makes both work for any tile size from 32 px up.

Pretrained ImageNet weights are never downloaded (offline machines, firewalls): the user points at a
local file, or we look in torch.hub's cache where torchvision itself would have saved it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from phenossl.errors import ConfigError, InputError, WeightsNotFoundError
from phenossl.models.registry import encoder_names, encoder_spec
from phenossl.registry import load_object

#: ``imagenet``: torchvision's stems. ``small``: ResNet18's 7x7 stride-2 convolution and max-pool replaced by a
#: 3x3 stride-1 convolution (solo-learn's and SimCLR's CIFAR setting): on 32-64 px cells the ImageNet stem
#: leaves a 1x1-2x2 map at the last stage; the small one keeps 4x4-8x8 (at 16x the compute). VGG13's first
#: convolution is already 3x3 stride 1, so its stem is the same either way.
STEMS: tuple[str, ...] = ("imagenet", "small")

# torchvision's own file names and URLs (IMAGENET1K_V1), so a file downloaded by torchvision is found.
IMAGENET_WEIGHT_FILES: dict[str, str] = {name: encoder_spec(name).imagenet_file for name in encoder_names()}
IMAGENET_WEIGHT_URLS: dict[str, str] = {name: encoder_spec(name).imagenet_url for name in encoder_names()}


class Encoder(nn.Module):
    """A torchvision trunk that maps (B, C, H, W) images to (B, feature_dim) features.

    ``body`` holds the torchvision modules under torchvision's own names, so ``body.state_dict()`` and an
    ImageNet state dict (minus its classifier) have the same keys.
    """

    def __init__(self, name: str, body: nn.Module, feature_dim: int, in_channels: int) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.feature_dim = feature_dim
        self.in_channels = in_channels

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}, feature_dim={self.feature_dim}"


@torch.no_grad()
def embed_in_eval_mode(encoder: nn.Module, images: Tensor) -> Tensor:
    """Features (B, D) float32 in eval mode (BatchNorm's running statistics: a cell's embedding must not
    depend on the other cells of its batch), without grad; the encoder's mode is restored after."""
    was_training = encoder.training
    encoder.eval()
    try:
        return encoder(images).float()
    finally:
        encoder.train(was_training)


def build_encoder(name: str, in_channels: int, stem: str = "imagenet") -> Encoder:
    """A randomly initialised registered encoder (VGG13 trunk, ResNet18...) whose first convolution takes
    ``in_channels`` (``stem``: see :data:`STEMS`)."""
    spec = encoder_spec(name)
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    body, feature_dim = load_object(spec.builder)(in_channels, stem)
    return Encoder(name, body, feature_dim=feature_dim, in_channels=in_channels)


def resnet18_body(in_channels: int, stem: str) -> tuple[nn.Module, int]:
    """torchvision's ResNet18 without its classifier (``fc``): average-pooled 512-d features."""
    from torchvision import models

    body = models.resnet18(weights=None)
    body.fc = nn.Identity()  # torchvision's forward: ... -> avgpool -> flatten -> fc
    if stem == "small":
        body.conv1 = _kaiming_conv(nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False))
        body.maxpool = nn.Identity()
    elif in_channels != 3:
        body.conv1 = _kaiming_conv(nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False))
    return body, 512


def vgg13_body(in_channels: int, stem: str) -> tuple[nn.Module, int]:
    """torchvision's own VGG13 trunk ("B" configuration) and global average pooling, without building the
    120 M-parameter classifier, whose initialisation alone takes seconds on a CPU; same layers and state-dict
    keys as vgg13().features. Its first convolution is 3x3 stride 1 already: both stems are the same."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["B"], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            _kaiming_conv(module)  # as torchvision's VGG.__init__ does
    if in_channels != 3:
        features[0] = _kaiming_conv(nn.Conv2d(in_channels, 64, kernel_size=3, padding=1))
    body = nn.Sequential()
    body.add_module("features", features)
    body.add_module("pool", nn.AdaptiveAvgPool2d(1))
    body.add_module("flatten", nn.Flatten(1))
    return body, 512


def _kaiming_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Initialise a convolution the way torchvision initialises those of its ResNets and VGGs."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def find_local_imagenet_weights(name: str) -> Path | None:
    """torchvision's ImageNet file for ``name`` in torch.hub's cache (``<hub dir>/checkpoints``), or None.

    Never downloads. Any ``<name>-<hash>.pth`` is accepted, torchvision's exact file name first.
    """
    encoder_spec(name)  # a clear error for an unknown name
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    exact = checkpoints / IMAGENET_WEIGHT_FILES[name]
    if exact.is_file():
        return exact
    candidates = sorted(checkpoints.glob(f"{name}-*.pth")) if checkpoints.is_dir() else []
    return candidates[0] if candidates else None


def load_encoder_weights(encoder: Encoder, path: str | Path | None = None) -> Path:
    """Load a local state dict into ``encoder``, adapting the first convolution to its channel count.

    ``path`` may be a torchvision ImageNet file (as torchvision saves it), an encoder's ``state_dict()``
    or a phenossl checkpoint that holds one. ``None`` means torchvision's ImageNet file from torch.hub's
    cache. Returns the file that was loaded.
    """
    resolved = _resolve_weights_path(encoder.name, path)
    state = _read_state_dict(resolved)
    body_state = _select_body_state(state, encoder, resolved)
    first_conv = encoder_spec(encoder.name).first_conv
    body_state[first_conv] = adapt_first_conv(body_state[first_conv], encoder.in_channels)
    expected = encoder.body.state_dict()
    for key, value in expected.items():
        if body_state[key].shape != value.shape:
            raise InputError(
                f"{resolved}: tensor {key!r} has shape {tuple(body_state[key].shape)} but this "
                f"{encoder.name} expects {tuple(value.shape)}; the file is for a different architecture or "
                f"variant. Use torchvision's {IMAGENET_WEIGHT_FILES[encoder.name]} or a checkpoint of a "
                f"{encoder.name} phenossl model."
            )
    with torch.no_grad():
        encoder.body.load_state_dict({key: body_state[key] for key in expected}, strict=True)
    return resolved


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """First-convolution kernels for ``in_channels`` inputs from kernels trained on another channel count.

    Microscopy channels are not red, green and blue, so each new channel gets the mean kernel; scaling by
    (old channels / new channels) keeps the layer's response to a uniform image unchanged
    (3 / in_channels for RGB weights).
    """
    old_channels = weight.shape[1]
    if old_channels == in_channels:
        return weight.clone()
    mean_kernel = weight.float().mean(dim=1, keepdim=True)
    adapted = mean_kernel.repeat(1, in_channels, 1, 1) * (old_channels / in_channels)
    return adapted.to(weight.dtype)


def _resolve_weights_path(name: str, path: str | Path | None) -> Path:
    if path is None:
        found = find_local_imagenet_weights(name)
        if found is None:
            raise WeightsNotFoundError(_missing_weights_message(name, None))
        return found
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise WeightsNotFoundError(_missing_weights_message(name, resolved))
    return resolved


def _missing_weights_message(name: str, path: Path | None) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    where = f"no weights file at {path}" if path else f"no ImageNet weights for {name} in {cache}"
    return (
        f"{where}. ImageNet weights are not downloaded here (this machine may be offline). On a machine "
        f'with internet, download {IMAGENET_WEIGHT_URLS[name]} (or run python -c "import torchvision; '
        f"torchvision.models.{name}(weights='IMAGENET1K_V1')\", which saves it in "
        f"~/.cache/torch/hub/checkpoints/), copy the file to {cache / IMAGENET_WEIGHT_FILES[name]} on this "
        "machine or give its path, or train from random initialisation."
    )


def _read_state_dict(path: Path) -> Mapping[str, object]:
    try:
        # weights_only: a weights file from elsewhere must not be able to run code when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean "not a readable state dict"
        raise InputError(
            f"{path} could not be read as PyTorch weights ({type(error).__name__}): it is not a file saved "
            "with torch.save, it is damaged, or it holds Python objects other than tensors and plain values "
            "(not loaded, for safety). Give a state-dict file (e.g. torchvision's .pth file) or a phenossl "
            "checkpoint."
        ) from error
    if not isinstance(state, Mapping):
        raise InputError(
            f"{path} holds a {type(state).__name__}, not a state dict (a mapping of names to tensors). "
            "Give torchvision's .pth file or a phenossl checkpoint."
        )
    return state


def _candidate_state_dicts(state: Mapping[str, object]) -> list[Mapping[str, Tensor]]:
    """The mapping itself plus any nested mapping of tensors (a checkpoint's ``model`` or ``encoder``)."""
    found = []
    stack: list[Mapping[str, object]] = [state]
    while stack:
        mapping = stack.pop()
        tensors = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if tensors:
            found.append(tensors)
        stack.extend(v for v in mapping.values() if isinstance(v, Mapping))
    return found


def _select_body_state(state: Mapping[str, object], encoder: Encoder, path: Path) -> dict[str, Tensor]:
    """The tensors of ``encoder.body``, whatever prefix the file stores them under (none, ``body.``,
    ``encoder.body.``, ``module.``...), with the classifier dropped."""
    expected = set(encoder.body.state_dict())
    best: dict[str, Tensor] = {}
    for tensors in _candidate_state_dicts(state):
        prefixes = {
            key[: len(key) - len(suffix)] for key in tensors for suffix in expected if key.endswith(suffix)
        }
        for prefix in prefixes:
            if prefix.endswith("momentum_encoder.body.") or (prefix and not prefix.endswith(".")):
                continue
            picked = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            picked = {key: value for key, value in picked.items() if key in expected}
            if len(picked) > len(best):
                best = picked
    missing = expected - set(best)
    if missing:
        raise InputError(
            f"{path} does not hold {encoder.name} weights: {len(missing)} of its {len(expected)} tensors are "
            f"missing (e.g. {min(missing)!r}){_guess_architecture(state)}. Give torchvision's "
            f"{IMAGENET_WEIGHT_FILES[encoder.name]} or a checkpoint of a {encoder.name} phenossl model."
        )
    return best


def _guess_architecture(state: Mapping[str, object]) -> str:
    keys = [key for tensors in _candidate_state_dicts(state) for key in tensors]
    for name in encoder_names():
        if any(key.endswith(encoder_spec(name).signature_key) for key in keys):
            return f"; it looks like {name} weights"
    return ""
