"""One optimisation step of each kind of model, behind one interface, so the training loop (epochs,
cancel, progress, NaN and collapse checks, checkpoints) is written once.

- :class:`SSLStep`: two augmented views per composition, the dual loss ``w * L_A + (1 - w) * L_B`` of the
  SSL method, one optimizer, mixed precision on CUDA, then the momentum networks' update.
- :class:`GANStep` (GAN-DL): a discriminator step (real vs generated, both through the compositions'
  augmentation, with lazy R1 on real views) and a generator step, each with its own Adam optimizer.

A step returns the total loss and one loss per part, as tensors (read back only when reported).
``state_dict`` holds everything a resume needs besides the model (optimizers, schedulers, scaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from phenossl.augment.pipeline import Augmenter
from phenossl.config import TrainConfig
from phenossl.methods.model import dual_loss
from phenossl.methods.registry import ADVERSARIAL_STEP, DUAL_LOSS_STEP, method_spec
from phenossl.train.distributed import average_gradients, mean_over_ranks
from phenossl.train.schedule import autocast_dtype, lr_schedule

LossParts = dict[str, Tensor]


def _optimizer(parameters, config: TrainConfig, lr: float, betas: tuple[float, float] | None = None):
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
    kwargs = {} if betas is None else {"betas": betas}
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay, **kwargs)


def _data_parallel(model, device: torch.device):
    """``model`` wrapped in DistributedDataParallel under torchrun (gradients averaged over the ranks while the
    backward pass runs), else ``model``. Buffers are not broadcast: BatchNorm's statistics are global and MoCo's
    queue receives the global batch's keys, so they are identical on every rank already."""
    from phenossl.train import distributed

    if not distributed.active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def _pad_params(params: Tensor, width: int) -> Tensor:
    """CASSLE: give every branch's parameter vector the same width (zeros for absent entries)."""
    return params if params.shape[1] == width else F.pad(params, (0, width - params.shape[1]))


class SSLStep:
    """The dual-loss SSL update of an :class:`~phenossl.methods.model.SSLModel`."""

    def __init__(self, model, augmenters: Mapping[str, Augmenter], config: TrainConfig, device: torch.device,
                 total_steps: int, warmup_steps: int) -> None:
        self.model, self.augmenters, self.config = model, dict(augmenters), config
        self.weight_a = config.branch_weights()["a"]
        self.condition_width = max(a.param_dim for a in self.augmenters.values()) if config.cassle else 0
        trainable = [p for p in model.parameters() if p.requires_grad]  # momentum copies follow by EMA
        self.optimizer = _optimizer(trainable, config, config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_schedule(warmup_steps, total_steps))
        self.amp_dtype = autocast_dtype(device) if config.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.device_type = device.type
        self.forward_model = _data_parallel(model, device)

    def __call__(self, x: Tensor, generator: torch.Generator, progress: float,
                 targets: Tensor | None = None) -> tuple[Tensor, LossParts]:
        """One update on the batch ``x``; ``targets``: its cells' labels (a method with ``needs_label``)."""
        return self.optimise(*self.make_views(x, generator), progress, targets)

    def make_views(self, x: Tensor, generator: torch.Generator) -> tuple[dict, dict | None]:
        """Two random views per composition of the batch ``x``, and (CASSLE) their augmentation parameters."""
        views, aug_params = {}, {}
        for name, augment in self.augmenters.items():
            first, second = augment(x, generator), augment(x, generator)
            views[name] = (first.views, second.views)
            if self.config.cassle:
                aug_params[name] = (_pad_params(first.params, self.condition_width),
                                    _pad_params(second.params, self.condition_width))
        return views, aug_params or None

    def optimise(self, views: dict, aug_params: dict | None, progress: float,
                 targets: Tensor | None = None) -> tuple[Tensor, LossParts]:
        """The dual loss of ``views``, backward, optimizer and schedule, then the momentum networks."""
        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = (self.forward_model(views, aug_params) if targets is None
                      else self.forward_model(views, aug_params, targets))
            total = dual_loss(losses, self.weight_a)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.model.update_momentum(progress)
        return total, losses

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class GANStep:
    """GAN-DL's alternating update of a :class:`~phenossl.methods.gandl.GANModel` (float32 throughout:
    R1's second derivatives are fragile in half precision)."""

    def __init__(self, model, augmenters: Mapping[str, Augmenter], config: TrainConfig, device: torch.device,
                 total_steps: int, warmup_steps: int) -> None:
        self.model, self.augmenters, self.config = model, dict(augmenters), config
        self.params = config.method_params.gandl
        self.weights = {name: w for name, w in config.branch_weights().items() if name in self.augmenters}
        lr = self.params.lr or config.lr
        betas = (self.params.beta1, self.params.beta2)
        self.discriminator_parameters = [*model.encoder.parameters(), *model.head.parameters()]
        self.generator_parameters = list(model.generator.parameters())
        self.optimizer = _optimizer(self.discriminator_parameters, config, lr, betas)
        self.optimizer_g = _optimizer(self.generator_parameters, config, lr, betas)
        schedule = lr_schedule(warmup_steps, total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scheduler_g = torch.optim.lr_scheduler.LambdaLR(self.optimizer_g, schedule)
        self.steps = 0
        self.r1_gamma = (self.params.r1_gamma if self.params.r1_gamma is not None
                         else 0.0002 * config.resolution**2 / config.batch_size)
        self._last_r1 = torch.zeros((), device=device)

    def _discriminate(self, images: Tensor, generator: torch.Generator, *, real: bool,
                      grad_of_views: bool = False) -> tuple[Tensor, Tensor]:
        """Logits (branches x B,) of every branch's augmented views of ``images``, branch after branch, in one
        discriminator pass (a large batch uses the device better), and the views (for R1). Running BatchNorm
        statistics are updated from real images only."""
        from phenossl.methods.gandl import running_stats_frozen

        views = torch.cat([self.augmenters[name](images, generator).views for name in self.weights])
        if grad_of_views:
            views = views.detach().requires_grad_(True)
        with contextlib.nullcontext() if real else running_stats_frozen(self.model.encoder):
            return self.model.discriminate(views), views

    def _weighted(self, loss, *logits: Tensor) -> Tensor:
        """``sum_b w_b * loss(branch b's logits...)``: the dual-loss weighting."""
        parts = [chunk.chunk(len(self.weights)) for chunk in logits]
        return sum(w * loss(*(p[i] for p in parts)) for i, w in enumerate(self.weights.values()))

    def __call__(self, x: Tensor, generator: torch.Generator, progress: float) -> tuple[Tensor, LossParts]:
        from phenossl.methods.gandl import discriminator_loss, generator_loss, r1_penalty

        r1_now = self.r1_gamma > 0 and self.steps % self.params.r1_every == 0
        fake = self.model.sample(len(x), generator)
        real_logits, real_views = self._discriminate(x, generator, real=True, grad_of_views=r1_now)
        fake_logits, _ = self._discriminate(fake.detach(), generator, real=False)
        d_loss = self._weighted(discriminator_loss, real_logits, fake_logits)
        regularised = d_loss
        if r1_now:  # lazy R1 (StyleGAN2): every r1_every steps, scaled up by r1_every
            row_weights = torch.cat([torch.full((len(x),), w, device=x.device) for w in self.weights.values()])
            r1 = r1_penalty(real_logits, real_views, row_weights)
            regularised = d_loss + 0.5 * self.r1_gamma * self.params.r1_every * r1
            self._last_r1 = r1.detach()
        self.optimizer.zero_grad(set_to_none=True)
        regularised.backward()
        average_gradients(self.discriminator_parameters)  # under torchrun; DDP needs forward, GAN-DL has none
        self.optimizer.step()

        fake_logits, _ = self._discriminate(fake, generator, real=False)
        g_loss = self._weighted(generator_loss, fake_logits)
        self.optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()  # also leaves gradients in D: cleared at the next discriminator step
        average_gradients(self.generator_parameters)
        self.optimizer_g.step()
        self.scheduler.step()
        self.scheduler_g.step()
        self.steps += 1
        # each rank's losses are its own share's: reported (and checked for NaN) as their mean, the same everywhere
        d_loss, g_loss = mean_over_ranks(d_loss.detach()), mean_over_ranks(g_loss.detach())
        # the adversarial losses (what the curve shows); R1 (the last one computed) apart, as StyleGAN2 logs it
        return d_loss + g_loss, {"discriminator": d_loss, "generator": g_loss, "r1": self._last_r1}

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "optimizer_g": self.optimizer_g.state_dict(), "scheduler_g": self.scheduler_g.state_dict(),
                "gan_steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.scheduler_g.load_state_dict(state["scheduler_g"])
        self.steps = int(state["gan_steps"])


#: the update step of each kind of method (``MethodSpec.step`` in the method registry)
UPDATES = {DUAL_LOSS_STEP: SSLStep, ADVERSARIAL_STEP: GANStep}


def make_step(model, augmenters, config: TrainConfig, device, total_steps: int, warmup_steps: int):
    """The update of ``config.method``, as its registry entry names it."""
    kind = UPDATES[method_spec(config.method).step]
    return kind(model, augmenters, config, device, total_steps, warmup_steps)
