"""GAN-DL (Mascolini et al. 2022, "Exploiting generative self-supervised learning for the assessment of
biological images with lack of annotations", BMC Bioinformatics): the embedding is the *discriminator's*
feature vector, learnt by telling real cells from generated ones.

phenossl's version keeps the rest of the product unchanged: the discriminator's trunk is the chosen
encoder (ResNet18 or VGG13, any channel count, ImageNet weights when local), followed by one linear
logit; the generator is a DCGAN-style upsampling network. GAN-DL uses StyleGAN2; we keep its loss
(non-saturating logistic loss with a lazy R1 penalty on real images, Mescheder et al. 2018, weighted by
StyleGAN2-ADA's heuristic unless set) and its Adam settings, with a much smaller generator so a screen trains on one GPU in minutes.

The compositions still decide what the discriminator sees: both real tiles and generated images pass
through the same random augmentation before the discriminator (differentiable augmentation, Zhao et al.
2020: without it a discriminator overfits a few thousand cells), and with two compositions the losses are
weighted ``w * L_A + (1 - w) * L_B`` as for the SSL methods. Generated images are drawn at the scale of the
real tiles *as the composition sees them* (a centre crop of 0.5 at 96 px: 192 px images), so a cell's
nucleus has the same size in both.

The discriminator's BatchNorm statistics are updated from real cells only (generated batches use
their own batch statistics without touching the running ones), so the embedding, computed in eval mode,
normalises real cells by real-cell statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phenossl.errors import ConfigError
from phenossl.methods.params import GANParams
from phenossl.models.encoders import Encoder, embed_in_eval_mode


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating logistic loss of the discriminator: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: softplus(-D(fake)) (StyleGAN2's default)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean (or ``weights``-weighted mean) over images of |grad_x D(x)|^2 at the real images (which must
    require grad): R1 keeps the discriminator smooth where the data is (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    per_image = grad.float().pow(2).flatten(1).sum(1)
    return per_image.mean() if weights is None else (per_image * weights).sum() / weights.sum()


def generator_plan(resolution: int) -> tuple[int, int]:
    """(start size, number of x2 upsamplings) that reach ``resolution`` exactly when it is a small integer
    (3..7) times a power of two, else the smallest 4 * 2**n above it (then resized)."""
    for ups in range(10, -1, -1):
        start, rest = divmod(resolution, 2**ups)
        if rest == 0 and 3 <= start <= 7:
            return start, ups
    return 4, max(0, math.ceil(math.log2(resolution / 4)))


class Generator(nn.Module):
    """Latent vector (B, latent_dim) -> image (B, C, size, size): linear to a small map, then
    nearest-neighbour x2 upsampling + 3x3 convolutions (BatchNorm, ReLU), halving the width as it grows."""

    def __init__(self, latent_dim: int, out_channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.size = latent_dim, size
        start, ups = generator_plan(size)
        widths = [width * 2 ** max(0, min(3, ups - 1) - i) for i in range(ups + 1)]
        self.start = start
        self.stem = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * start * start, bias=False),
            nn.Unflatten(1, (widths[0], start, start)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(w_in, w_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        image = self.to_image(self.blocks(self.stem(z)))
        if image.shape[-1] != self.size:
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return image


class GANModel(nn.Module):
    """Discriminator (``encoder`` trunk + linear logit) and generator. Only the encoder is kept for the
    embedding, exactly as for an :class:`~phenossl.methods.model.SSLModel`."""

    method = "gandl"

    def __init__(self, encoder: Encoder, params: GANParams, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.params = params
        self.head = nn.Linear(encoder.feature_dim, 1)
        self.generator = Generator(params.latent_dim, encoder.in_channels, image_size, params.generator_width)

    @property
    def feature_dim(self) -> int:
        return self.encoder.feature_dim

    def discriminate(self, images: Tensor) -> Tensor:
        """Real-vs-generated logits (B,)."""
        return self.head(self.encoder(images)).squeeze(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` generated images from latent vectors drawn with ``generator``."""
        device = next(self.generator.parameters()).device
        z = torch.randn(n, self.params.latent_dim, device=device, generator=generator)
        return self.generator(z)

    def update_momentum(self, progress: float) -> None:
        """No momentum network (interface of SSLModel)."""

    def embed(self, images: Tensor) -> Tensor:
        """Discriminator trunk features (B, D) float32, in eval mode (real-cell BatchNorm statistics)."""
        return embed_in_eval_mode(self.encoder, images)


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's statistics but leave their running ones unchanged
    (momentum 0): generated images must not shift the statistics the embedding uses."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def generated_size(config, tile_size: int | None = None) -> int:
    """The size of the images generated for the ``TrainConfig`` ``config``. Generated images go through the same
    augmentation as the real tiles, so at the tiles' own size they are resampled exactly alike (otherwise the
    discriminator could tell them apart by sharpness alone). Only tiles larger than needed are not matched: a
    composition keeping a centre crop of fraction f shows f of the tile at the training resolution, so
    resolution / f px suffice (both then shrink). Without a tile size, that is the size."""
    from phenossl.augment.specs import kept_fraction

    needed = [math.ceil(config.resolution / kept_fraction(composition.transforms))
              for composition in config.compositions().values()]
    return max(needed) if tile_size is None else min(tile_size, max(needed))


def build_gan_for_config(config, encoder: Encoder, augmenters, tile_size: int | None = None) -> GANModel:
    """GAN-DL's builder in the method registry: ``encoder`` as the discriminator's trunk, a generator of images
    of :func:`generated_size` (the augmenters are the trainer's; the model needs no more of them)."""
    return build_gan_model(encoder, config.method_params.gandl, generated_size(config, tile_size))


def build_gan_model(encoder: Encoder, params: GANParams, image_size: int) -> GANModel:
    if image_size < 8:
        raise ConfigError(f"GAN-DL generates images of at least 8 px, got {image_size}")
    return GANModel(encoder, params, image_size)
