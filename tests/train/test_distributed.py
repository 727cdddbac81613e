"""Training under torchrun computes the single-process losses of the global batch: two ranks with half the batch
each give the same first-step loss and gradients as one process with the whole batch, for every method (CPU, gloo,
two processes on two cores, tiny inputs)."""

import os
import socket

import numpy as np
import pytest
import torch

from phenossl.methods.registry import method_names

B, SIZE, CHANNELS = 8, 32, 3
#: (case, method, TrainConfig settings): every registered method, in a dual-loss run, and CASSLE's conditions
CASES = [(name, name, {}) for name in method_names()] + [("simclr+cassle", "simclr", {"cassle": True})]


def _config(method: str, settings: dict):
    from phenossl.config import TrainConfig

    extra = {"label_column": "dose"} if method == "yaware" else {}
    return TrainConfig(method=method, encoder="resnet18", batch_size=B, resolution=SIZE, device="cpu",
                       optimizer="sgd", weight_a=0.5, composition_b="morphology", **extra, **settings)


def _inputs(method: str, augmenters, cassle: bool) -> dict:
    """The same fixed views (and labels, and CASSLE parameters) of B cells in every process."""
    generator = torch.Generator().manual_seed(1)
    views = {name: tuple(torch.randn(B, CHANNELS, SIZE, SIZE, generator=generator) for _ in range(2))
             for name in augmenters}
    width = max(a.param_dim for a in augmenters.values())
    params = ({name: tuple(torch.randn(B, width, generator=generator) for _ in range(2)) for name in augmenters}
              if cassle else None)
    targets = torch.rand(B, generator=generator) * 2 if method == "yaware" else None
    fake = torch.randn(B, CHANNELS, SIZE, SIZE, generator=generator)
    return {"views": views, "params": params, "targets": targets, "fake": fake}


def first_step(case: str, rows: slice) -> dict:
    """One update of ``case`` on the cells ``rows`` of the fixed batch (this process's share): the loss, the
    gradients and the buffers (BatchNorm's running statistics, MoCo's queue) after it."""
    from phenossl.methods.build import build_model
    from phenossl.train import distributed
    from phenossl.train.steps import make_step

    _, method, settings = next(c for c in CASES if c[0] == case)
    config = _config(method, settings)
    torch.manual_seed(0)
    model, augmenters = build_model(config, in_channels=CHANNELS, num_samples=64, tile_size=SIZE)
    model = distributed.synchronise_batch_norm(model, "cpu")
    model.train()
    data = _inputs(method, augmenters, config.cassle)
    if method == "gandl":  # its update samples images; here the discriminator's loss on fixed real and fake views
        from phenossl.methods.gandl import discriminator_loss, r1_penalty

        real = data["views"]["a"][0][rows].requires_grad_(True)
        logits = model.discriminate(torch.cat([real, data["fake"][rows]]))
        real_logits, fake_logits = logits.chunk(2)
        loss = discriminator_loss(real_logits, fake_logits) + r1_penalty(real_logits, real)
        loss.backward()
        distributed.average_gradients(model.parameters())
        loss = distributed.mean_over_ranks(loss)  # GANStep's reported loss: each rank's share's, averaged
    else:
        step = make_step(model, augmenters, config, torch.device("cpu"), total_steps=10, warmup_steps=0)
        views = {name: (v1[rows], v2[rows]) for name, (v1, v2) in data["views"].items()}
        params = None if data["params"] is None else {n: (p1[rows], p2[rows]) for n, (p1, p2) in data["params"].items()}
        targets = None if data["targets"] is None else data["targets"][rows]
        loss, _ = step.optimise(views, params, 0.0, targets)
    return {"loss": float(loss.detach()),
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
            "buffers": {n: b.detach().clone() for n, b in model.named_buffers() if b.dtype.is_floating_point}}


def _rank_main(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from phenossl.train import distributed

    distributed.start("cpu")
    try:
        for case, _, _ in CASES:
            result = first_step(case, slice(rank * B // 2, (rank + 1) * B // 2))
            torch.save(result, os.path.join(folder, f"{case}-rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_steps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), str(folder)), nprocs=2, join=True)
    return folder


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the reference's largest value; a gradient that is zero up to rounding
    (a bias followed by BatchNorm: about 1e-9) counts as equal to another such."""
    return float((a - b).abs().max() / (b.abs().max() + 1e-5))


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_two_ranks_with_half_the_batch_each_equal_one_process_with_the_whole_batch(two_rank_steps, case):
    whole = first_step(case, slice(0, B))
    ranks = [torch.load(two_rank_steps / f"{case}-rank{r}.pt") for r in range(2)]
    for result in ranks:
        assert result["loss"] == pytest.approx(whole["loss"], rel=1e-4)
        assert result["grads"].keys() == whole["grads"].keys() and whole["grads"]
        for name, grad in whole["grads"].items():
            assert _relative_difference(result["grads"][name], grad) < 1e-3, name
        for name, buffer in whole["buffers"].items():  # running statistics, MoCo's queue: the global batch's
            assert _relative_difference(result["buffers"][name], buffer) < 1e-3, name
    for name in whole["grads"]:  # and the ranks hold the same gradients, so their models stay identical
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name])


def test_a_rank_without_the_global_batch_would_differ(two_rank_steps):
    """The comparison can fail: one process on half the batch (no gathering) gives another loss and gradients."""
    whole, half = first_step("simclr", slice(0, B)), first_step("simclr", slice(0, B // 2))
    assert half["loss"] != pytest.approx(whole["loss"], rel=1e-4)
    assert max(_relative_difference(half["grads"][n], g) for n, g in whole["grads"].items()) > 1e-2


def test_the_global_batch_is_split_evenly_or_refused(tmp_path):
    from phenossl.errors import TooFewCellsError
    from phenossl.train.loader import TileBatches

    tiles = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    whole = TileBatches(tiles, 8, "cpu", seed=3)
    shares = [TileBatches(tiles, 8, "cpu", seed=3, rank=r, world_size=2) for r in range(2)]
    assert whole.steps_per_epoch == shares[0].steps_per_epoch == 2
    for together, first, second in zip(whole.epoch(0), shares[0].epoch(0), shares[1].epoch(0), strict=True):
        assert sorted(together.flatten().tolist()) == sorted([*first.flatten().tolist(), *second.flatten().tolist()])
    with pytest.raises(TooFewCellsError, match="multiple of 3"):
        TileBatches(tiles, 8, "cpu", rank=0, world_size=3)
