"""Every encoder by name, in one table: what the configuration accepts, what napari lists, and how the encoder
is built and matched to torchvision's ImageNet weights all come from here.

An encoder is one builder function (``builder(in_channels, stem) -> (body, feature_dim)``, see
:mod:`phenossl.models.encoders`) plus one :func:`register_encoder` line. Light (no torch): the configuration
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from phenossl.registry import Registry


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder. ``imagenet_file``: torchvision's ImageNet weights file name (found in torch.hub's cache, never
    downloaded); ``first_conv``: the state-dict key of the convolution adapted to the channel count;
    ``signature_key``: a key that identifies this architecture in a foreign state dict (for error messages)."""

    name: str
    summary: str
    builder: str
    imagenet_file: str
    first_conv: str
    signature_key: str

    @property
    def imagenet_url(self) -> str:
        return f"https://download.pytorch.org/models/{self.imagenet_file}"


ENCODERS: Registry[EncoderSpec] = Registry("encoder")
register_encoder = ENCODERS.register
encoder_names = ENCODERS.names
encoder_spec = ENCODERS.get


register_encoder(EncoderSpec("resnet18", "resnet18: fast, a good default (512-d features)",
                             "phenossl.models.encoders:resnet18_body", "resnet18-f37072fd.pth",
                             "conv1.weight", "layer1.0.conv1.weight"))
register_encoder(EncoderSpec("vgg13", "vgg13: the paper's trunk, slower (512-d features after pooling)",
                             "phenossl.models.encoders:vgg13_body", "vgg13-19584684.pth",
                             "features.0.weight", "features.0.weight"))
