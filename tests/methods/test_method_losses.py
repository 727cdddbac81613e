"""Each SSL loss on small hand-made inputs whose value is known."""

from __future__ import annotations

import math

import pytest
import torch

from phenossl.methods.byol import byol_loss, cosine_momentum
from phenossl.methods.moco import enqueue, info_nce_loss
from phenossl.methods.simclr import nt_xent_loss
from phenossl.methods.vicreg import covariance_loss, invariance_loss, variance_loss, vicreg_loss

T = 0.2
E = torch.eye(4)
QUEUE = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)


def test_info_nce_is_zero_with_identical_query_and_key_and_no_negatives():
    q = torch.randn(6, 8)
    assert info_nce_loss(q, q.clone(), torch.empty(0, 8), T).item() == pytest.approx(0.0, abs=1e-6)
    assert info_nce_loss(q, q.clone(), None, T).item() == pytest.approx(0.0, abs=1e-6)


def test_info_nce_with_one_orthogonal_negative():
    q = E[:2] * 3.0  # normalised inside
    queue = E[2:3]  # orthogonal to both queries
    expected = math.log(1 + math.exp(-1 / T))
    assert info_nce_loss(q, E[:2], queue, T).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_prefers_the_key_over_a_negative_equal_to_it():
    q = E[:1]
    assert info_nce_loss(q, q, q, T).item() == pytest.approx(math.log(2), rel=1e-5)


def test_nt_xent_known_value_and_scale_invariance():
    z = E[:2]
    expected = math.log(1 + 2 * math.exp(-1 / T))  # positive at cos 1, two negatives at cos 0
    assert nt_xent_loss(z, z.clone(), T).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent_loss(5 * z, 0.1 * z, T).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_is_symmetric():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    assert nt_xent_loss(z1, z2).item() == pytest.approx(nt_xent_loss(z2, z1).item(), rel=1e-5)


def test_byol_loss_values():
    p = torch.randn(4, 8)
    assert byol_loss(p, 2 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-6)
    assert byol_loss(E[:2], E[2:]).item() == pytest.approx(2.0, rel=1e-6)


def test_byol_loss_sends_no_gradient_to_the_target():
    p = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8, requires_grad=True)
    byol_loss(p, t).backward()
    assert p.grad is not None and t.grad is None


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.996, 1.0, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 1.0, 2.0) == pytest.approx(1.0)  # clamped


def test_vicreg_terms_on_well_spread_and_collapsed_embeddings():
    generator = torch.Generator().manual_seed(0)
    spread = torch.randint(0, 2, (256, 16), generator=generator).float() * 4 - 2  # +-2: std ~2 per dimension
    assert variance_loss(spread).item() == 0.0
    collapsed = torch.ones(8, 16)
    assert variance_loss(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    assert invariance_loss(spread, spread).item() == 0.0
    # columns of a Hadamard matrix: centred and mutually orthogonal, so no covariance at all
    hadamard = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float)
    assert covariance_loss(hadamard[:, 1:]).item() == pytest.approx(0.0, abs=1e-7)
    correlated = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # cov = [[2, 2], [2, 2]]: off-diagonal 2
    assert covariance_loss(correlated).item() == pytest.approx((2**2 + 2**2) / 2)
    assert vicreg_loss(collapsed, collapsed).item() == pytest.approx(25 * (1 - math.sqrt(1e-4)), rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        lambda a, b: info_nce_loss(a, b, QUEUE, 0.2),
        lambda a, b: nt_xent_loss(a, b, 0.2),
        byol_loss,
        lambda a, b: vicreg_loss(a, b),
    ],
    ids=["info_nce", "nt_xent", "byol", "vicreg"],
)
def test_losses_compute_in_float32_under_autocast(loss):
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    reference = loss(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(a.bfloat16(), b.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=2e-2, atol=2e-2)


def test_enqueue_wraps_around():
    queue, pointer = torch.zeros(5, 2), torch.zeros((), dtype=torch.long)
    a = torch.arange(6.0).reshape(3, 2)
    b = torch.arange(10.0, 16.0).reshape(3, 2)
    enqueue(queue, pointer, a)
    assert pointer.item() == 3
    enqueue(queue, pointer, b)
    assert pointer.item() == 1
    torch.testing.assert_close(queue, torch.stack([b[2], a[1], a[2], b[0], b[1]]))
    c = torch.arange(100.0, 114.0).reshape(7, 2)  # more keys than the queue holds: the last 5 are kept
    enqueue(queue, pointer, c)
    assert pointer.item() == 1
    torch.testing.assert_close(queue, torch.stack([c[6], c[2], c[3], c[4], c[5]]))
