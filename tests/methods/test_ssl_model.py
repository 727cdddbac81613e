"""The dual-loss model: shared encoder, one branch per composition, momentum networks, queues, CASSLE."""

from __future__ import annotations

import pytest
import torch

from phenossl.errors import ConfigError, TooFewCellsError
from phenossl.methods import (
    BYOLParams,
    MethodParams,
    MoCoParams,
    SimCLRParams,
    SSLModel,
    VICRegParams,
    build_ssl_model,
    dual_loss,
)
from phenossl.models import build_encoder

METHODS = ["mocov2", "simclr", "byol", "vicreg"]
CHANNELS, SIZE, BATCH = 2, 32, 8

# narrow heads: the tests check behaviour, not capacity
SMALL = MethodParams(
    moco=MoCoParams(proj_hidden_dim=64, proj_output_dim=32, queue_size=64),
    simclr=SimCLRParams(proj_hidden_dim=64, proj_output_dim=32),
    byol=BYOLParams(proj_hidden_dim=64, proj_output_dim=32, pred_hidden_dim=64, momentum=0.9),
    vicreg=VICRegParams(proj_hidden_dim=64, proj_output_dim=64),
    condition_embed_dim=8,
)


def _model(method: str, seed: int = 0, **kwargs) -> SSLModel:
    torch.manual_seed(seed)
    return build_ssl_model(method, "resnet18", CHANNELS, params=kwargs.pop("params", SMALL), **kwargs)


def _views(branches=("a", "b"), seed: int = 0, size: int = SIZE):
    """Two noisy views of the same base images per branch (fixed by the seed)."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(BATCH, CHANNELS, size, size, generator=generator)

    def noisy():
        return base + 0.1 * torch.randn(base.shape, generator=generator)

    return {name: (noisy(), noisy()) for name in branches}


def _queues(model: SSLModel) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items() if "queue" in key}


def _loss_against(model: SSLModel, views, queues: dict[str, torch.Tensor]) -> float:
    """The training-mode loss with MoCo's queues set to ``queues``, restored afterwards.

    Comparing losses before and after training against the same negatives measures learning alone:
    on a tiny fixed batch the live queue fills with keys of the very same cells.
    """
    current = _queues(model)
    model.load_state_dict({**model.state_dict(), **queues})
    with torch.no_grad():
        loss = dual_loss(model(views), 0.5)
    model.load_state_dict({**model.state_dict(), **current})
    return loss.item()


@pytest.mark.parametrize("method", METHODS)
def test_one_loss_per_branch_present(method):
    model = _model(method)
    losses = model(_views())
    assert set(losses) == {"a", "b"}
    assert all(loss.ndim == 0 and torch.isfinite(loss) for loss in losses.values())
    assert set(model(_views(branches=("b",)))) == {"b"}


def test_unknown_branch_and_tiny_batch_are_rejected():
    model = _model("simclr")
    with pytest.raises(ConfigError, match="unknown branches"):
        model(_views(branches=("a", "c")))
    with pytest.raises(ConfigError, match="no views"):
        model({})
    one = torch.rand(1, CHANNELS, SIZE, SIZE)
    with pytest.raises(TooFewCellsError):
        model({"a": (one, one)})


@pytest.mark.parametrize("method", ["mocov2", "byol"])
def test_gradient_reaches_the_encoder_but_not_the_momentum_networks(method):
    model = _model(method)
    dual_loss(model(_views()), 0.5).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.encoder.body.conv1.weight.grad.abs().sum() > 0
    for branch in model.branches.values():
        assert all(p.grad is not None for p in branch.projector.parameters())
    momentum_params = list(model.momentum_encoder.parameters()) + [
        p for branch in model.branches.values() for p in branch.momentum_projector.parameters()
    ]
    assert all(p.grad is None and not p.requires_grad for p in momentum_params)


@pytest.mark.parametrize("method, progress, tau", [("mocov2", 0.3, 0.99), ("byol", 0.5, 0.95)])
def test_momentum_update_moves_toward_the_online_weights(method, progress, tau):
    model = _model(method)  # SMALL: BYOL from 0.9 to 1.0, so 0.95 half-way
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    dual_loss(model(_views()), 0.5).backward()
    optimizer.step()
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    head_before = [p.clone() for p in model.branches["a"].momentum_projector.parameters()]
    assert model.momentum_at(progress) == pytest.approx(tau)
    model.update_momentum(progress)
    for old, new, online in zip(
        before, model.momentum_encoder.parameters(), model.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(new, tau * old + (1 - tau) * online)
    moved = zip(
        head_before,
        model.branches["a"].momentum_projector.parameters(),
        model.branches["a"].projector.parameters(),
        strict=True,
    )
    for old, new, online in moved:
        torch.testing.assert_close(new, tau * old + (1 - tau) * online)
    assert any(
        not torch.equal(o, n) for o, n in zip(before, model.momentum_encoder.parameters(), strict=True)
    )


@pytest.mark.parametrize("method", ["simclr", "vicreg"])
def test_methods_without_momentum_network(method):
    model = _model(method)
    assert model.momentum_encoder is None and model.momentum_at(0.5) is None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.update_momentum(0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_moco_enqueues_its_own_branch_keys_in_training_only():
    model = _model("mocov2")
    queue_a, queue_b = model.branches["a"].queue.clone(), model.branches["b"].queue.clone()
    model.eval()
    model(_views())
    assert torch.equal(model.branches["a"].queue, queue_a)
    model.train()
    model(_views(branches=("a",)))
    assert model.branches["a"].queue_pointer.item() == BATCH
    assert model.branches["b"].queue_pointer.item() == 0 and torch.equal(model.branches["b"].queue, queue_b)
    new_keys = model.branches["a"].queue[:BATCH]
    assert not torch.equal(new_keys, queue_a[:BATCH])
    torch.testing.assert_close(new_keys.norm(dim=1), torch.ones(BATCH))
    torch.testing.assert_close(model.branches["a"].queue[BATCH:], queue_a[BATCH:])


def test_dual_loss_weighting():
    la, lb = torch.tensor(2.0), torch.tensor(10.0)
    assert dual_loss({"a": la, "b": lb}, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 10)
    assert dual_loss({"a": la}, 1.0).item() == 2.0  # branch b absent: fine with weight 0
    assert dual_loss({"a": la, "b": torch.tensor(float("nan"))}, 1.0).item() == 2.0
    assert dual_loss({"b": lb}, 0.0).item() == 10.0
    with pytest.raises(ConfigError, match="'b'"):
        dual_loss({"a": la}, 0.5)
    with pytest.raises(ConfigError):
        dual_loss({"a": la, "b": lb}, 1.5)


def test_model_weights_and_active_branches():
    model = _model("simclr", branch_names=("dna", "all"))
    assert model.branch_weights(0.7) == {"dna": 0.7, "all": pytest.approx(0.3)}
    assert model.active_branches(1.0) == ("dna",)
    assert model.active_branches(0.0) == ("all",)
    losses = model(_views(branches=("dna",)))
    assert model.total_loss(losses, 1.0) is losses["dna"]


@pytest.mark.parametrize("method", METHODS)
def test_a_few_steps_reduce_the_loss(method):
    model = _model(method, seed=1)
    views = _views(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    initial_queues = _queues(model)
    initial = _loss_against(model, views, initial_queues)
    for step in range(8):
        optimizer.zero_grad()
        dual_loss(model(views), 0.5).backward()
        optimizer.step()
        model.update_momentum(step / 8)
    final = _loss_against(model, views, initial_queues)
    assert final < 0.9 * initial, (initial, final)


def test_state_dict_round_trip_restores_queues_and_losses(tmp_path):
    model = _model("mocov2", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        optimizer.zero_grad()
        dual_loss(model(_views(seed=step)), 0.5).backward()
        optimizer.step()
        model.update_momentum(step / 2)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    restored = _model("mocov2", seed=123)
    restored.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"])
    for name in ("a", "b"):
        assert torch.equal(restored.branches[name].queue, model.branches[name].queue)
        assert restored.branches[name].queue_pointer.item() == 2 * BATCH
    expected, got = model(_views(seed=5)), restored(_views(seed=5))
    for name in ("a", "b"):
        torch.testing.assert_close(got[name], expected[name])


@pytest.mark.parametrize("method", ["mocov2", "byol", "simclr"])
def test_cassle_projectors_use_the_augmentation_parameters(method):
    model = _model(method, condition_dim=4)
    views = _views()
    with pytest.raises(ConfigError, match="CASSLE"):
        model(views)
    generator = torch.Generator().manual_seed(0)
    params = {
        name: (torch.rand(BATCH, 4, generator=generator), torch.rand(BATCH, 4, generator=generator))
        for name in views
    }
    other = {name: (p1 + 1.0, p2 - 1.0) for name, (p1, p2) in params.items()}
    model.eval()  # no BatchNorm updates or enqueueing between the two measurements
    with torch.no_grad():
        first, second = model(views, params), model(views, other)
    assert not torch.allclose(first["a"], second["a"])
    model.train()
    dual_loss(model(views, params), 0.5).backward()
    assert model.branches["a"].projector.condition_embedding[0].weight.grad.abs().sum() > 0


def test_embed_returns_features_in_eval_mode_without_grad():
    model = _model("byol")
    images = torch.rand(3, CHANNELS, SIZE, SIZE)
    model.train()
    first = model.embed(images)
    assert first.shape == (3, model.feature_dim) and first.dtype == torch.float32
    assert not first.requires_grad
    assert model.encoder.training  # mode restored
    torch.testing.assert_close(model.embed(images[:1]), first[:1])  # eval BN: independent of the batch


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_autocast_gives_finite_float32_losses(method):
    model = _model(method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(_views())
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses.values())
    dual_loss(losses, 0.5).backward()
    assert torch.isfinite(model.encoder.body.conv1.weight.grad).all()


def test_compositions_of_different_sizes():
    model = _model("simclr")
    views = {**_views(branches=("a",)), **_views(branches=("b",), size=48)}
    assert set(model(views)) == {"a", "b"}


def test_build_options_and_errors(tmp_path):
    assert build_ssl_model("mocov2", "vgg13", 1, params=SMALL, num_samples=20).branches["a"].queue.shape == (
        10,
        32,
    )
    with pytest.raises(ConfigError, match="unknown training method 'dino': choose one of mocov2, simclr"):
        build_ssl_model("dino", "resnet18", 1)
    with pytest.raises(ConfigError, match="'gandl' is not an SSL method"):
        build_ssl_model("gandl", "resnet18", 1)
    with pytest.raises(ConfigError, match="branch_names"):
        build_ssl_model("simclr", "resnet18", 1, branch_names=("a", "a"))
    with pytest.raises(ConfigError, match="condition_dim"):
        build_ssl_model("simclr", "resnet18", 1, params=SMALL, condition_dim=0)
    torch.manual_seed(7)
    source = build_encoder("resnet18", CHANNELS)
    torch.save(source.state_dict(), tmp_path / "encoder.pt")
    model = _model("byol", encoder_weights=tmp_path / "encoder.pt")
    for key, value in source.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
        assert torch.equal(model.momentum_encoder.state_dict()[key], value)  # copied after loading
