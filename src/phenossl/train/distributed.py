"""Training and embedding on several processes with PyTorch's own engine: ``torch.distributed``, launched by
``torchrun`` (one multi-GPU machine, or several under SLURM / Kubernetes). phenossl starts no processes itself.

    torchrun --nproc_per_node 4 -m phenossl train run.yaml

Under ``torchrun`` (its ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` variables are set) :func:`start` joins the
process group (NCCL on CUDA, gloo on the CPU) and gives each rank its device (``cuda:LOCAL_RANK``). Outside it
every function here is the identity and phenossl runs in one process, as before.

How the losses stay the single-process losses of the global batch (``train.batch_size`` cells, split evenly):

- the encoder's BatchNorm layers normalise with the statistics of the global batch: ``nn.SyncBatchNorm`` on
  CUDA; on the CPU, where PyTorch's SyncBatchNorm refuses to run, :class:`GlobalBatchNorm` does the same sums
  with ``torch.distributed.nn``'s differentiable all-reduce;
- the encoder's features (and the momentum encoder's, the labels and CASSLE's parameters) of every rank are
  gathered, with their gradients, before the heads (:func:`gather_with_grad`), so each rank computes the heads
  and the loss on the whole global batch: SimCLR's negatives, MoCo's keys (and the queue, which stays identical
  on every rank), VICReg's variances and covariances and y-aware's kernel all see every rank's cells;
- DistributedDataParallel (or, for GAN-DL's two optimisers, which never go through ``forward``,
  :func:`average_gradients`) averages the gradients: since every rank's loss is the same global loss, the average
  is its gradient, exactly as one process on the whole batch computes it (``tests/train/test_distributed.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from phenossl.errors import ConfigError

#: the variables torchrun sets for each process it starts
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> Ranks | None:
    """This process's ranks when torchrun started it (its three variables are set; one rank too: the DDP path on
    a single GPU), else None: a process of its own."""
    if not all(name in os.environ for name in LAUNCH_VARIABLES):
        return None
    try:
        return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"torchrun's variables are incomplete or not numbers ({exc}): launch with "
                          "'torchrun --nproc_per_node N -m phenossl ...'") from exc


def active() -> bool:
    """Whether this process is a rank of a started process group (torchrun)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process). Before the process group is
    started it answers from torchrun's variables, so the run folder's lock and the configuration are taken by
    rank 0 only."""
    if active():
        return rank() == 0
    ranks = launched()
    return ranks is None or ranks.is_main


def start(device):
    """Join torchrun's process group (once) and return this rank's device: ``cuda:LOCAL_RANK`` on CUDA, else
    ``device`` unchanged. Does nothing outside torchrun."""
    import torch
    import torch.distributed as dist

    ranks = launched()
    if ranks is None:
        return device
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                **({"device_id": device} if device.type == "cuda" else {}))
    return device


def barrier() -> None:
    import torch.distributed as dist

    if active():
        dist.barrier()


def gather_with_grad(tensor):
    """Every rank's ``tensor`` (same shape on each) concatenated along the first axis, in rank order, with the
    gradient flowing back to each rank's own rows (``torch.distributed.nn.functional.all_gather``)."""
    import torch

    if not active():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


def gather(tensor):
    """Every rank's ``tensor`` concatenated in rank order, without gradient (labels, parameters)."""
    import torch
    import torch.distributed as dist

    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def mean_over_ranks(tensor):
    """The mean of ``tensor`` over the ranks (a loss each rank computed on its own share), without gradient."""
    import torch.distributed as dist

    if not active():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def any_rank(flag: bool, device) -> bool:
    """Whether ``flag`` is true on any rank (a cancel seen by one rank stops all of them at the same step)."""
    import torch
    import torch.distributed as dist

    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def average_gradients(parameters: Iterable[Any]) -> None:
    """Average the gradients of ``parameters`` over the ranks, in one flat all-reduce (what DDP does for a module
    whose update never goes through ``forward``)."""
    import torch
    import torch.distributed as dist

    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the temporary file all ranks write into)."""
    import torch.distributed as dist

    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _global_batch_norm_class():
    import torch
    from torch import nn

    class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
        """BatchNorm over the global batch on the CPU (gloo), where ``nn.SyncBatchNorm`` refuses to run: the
        per-channel sums of every rank are added with a differentiable all-reduce, then the input is normalised
        with the global mean and variance and the running statistics move as BatchNorm's do. Same parameters and
        buffers as BatchNorm: a checkpoint loads into either."""

        def _check_input_dim(self, input):
            if input.dim() < 2:
                raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

        def forward(self, input):
            if not (self.training and active()):
                return super().forward(input)
            from torch.distributed.nn.functional import all_reduce

            dims = [d for d in range(input.dim()) if d != 1]
            shape = [1, -1] + [1] * (input.dim() - 2)
            x = input.float()
            count = torch.tensor([x.numel() / x.shape[1]], device=x.device)
            stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
            channels = x.shape[1]
            total = stats[-1]
            mean = stats[:channels] / total
            var = stats[channels : 2 * channels] / total - mean * mean
            out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
            if self.affine:
                out = out * self.weight.view(shape) + self.bias.view(shape)
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    unbiased = var.detach() * total / (total - 1).clamp(min=1)
                    self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                    self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
            return out.to(input.dtype)

    return GlobalBatchNorm


def synchronise_batch_norm(model, device):
    """``model`` with its BatchNorm layers normalising over the global batch: ``nn.SyncBatchNorm`` on CUDA,
    :class:`GlobalBatchNorm` elsewhere. Only the parts a model names in ``per_rank_parts`` (an SSL model's encoders,
    which see this rank's cells; its heads see the gathered global batch already) or, without that attribute, the
    whole model. Parameters and buffers are kept (the optimiser's references stay valid)."""
    import torch
    from torch import nn

    if not active():
        return model
    if torch.device(device).type == "cuda":
        convert = nn.SyncBatchNorm.convert_sync_batchnorm
    else:
        cls = _global_batch_norm_class()
        def convert(module):
            return _convert(module, cls)
    names = getattr(model, "per_rank_parts", None)
    if names is None:
        return convert(model)
    for name in names:
        if getattr(model, name, None) is not None:
            setattr(model, name, convert(getattr(model, name)))
    return model


def _convert(module, cls):
    from torch import nn

    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
        converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                        module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
        return converted
    for name, child in module.named_children():
        replaced = _convert(child, cls)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def shard(n_items: int) -> slice:
    """This rank's contiguous share of ``n_items`` (embedding: each rank writes its own rows)."""
    per_rank = -(-n_items // world_size())
    start = min(n_items, rank() * per_rank)
    return slice(start, min(n_items, start + per_rank))
