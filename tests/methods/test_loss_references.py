"""Each loss against a transcription of its original authors' code, on fixed random tensors (as lightly tests
its losses against the reference repositories): the check that a loss is the published one, not merely one
that decreases. The transcriptions keep the authors' variable names; TensorFlow and JAX calls are written
with their torch equivalents, line for line.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from phenossl.methods.byol import byol_loss, cosine_momentum
from phenossl.methods.gandl import discriminator_loss, generator_loss, r1_penalty
from phenossl.methods.moco import info_nce_loss
from phenossl.methods.simclr import nt_xent_loss
from phenossl.methods.vicreg import vicreg_loss


@pytest.fixture
def pair():
    generator = torch.Generator().manual_seed(2024)
    return torch.randn(16, 32, generator=generator), torch.randn(16, 32, generator=generator)


def test_moco_v2_matches_facebookresearch_moco(pair):
    """facebookresearch/moco, moco/builder.py, MoCo.forward (queue stored as (dim, K) columns there)."""
    q, k = (F.normalize(x, dim=1) for x in pair)
    queue = F.normalize(torch.randn(32, 64, generator=torch.Generator().manual_seed(1)), dim=0)
    T = 0.2
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1)
    logits /= T
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    reference = torch.nn.CrossEntropyLoss()(logits, labels)
    torch.testing.assert_close(info_nce_loss(*pair, queue.T, temperature=T), reference)


def test_simclr_matches_google_research_simclr(pair):
    """google-research/simclr, objective.py, add_contrastive_loss (TF1): LARGE_NUM masks a view's similarity to
    itself; loss = loss_a + loss_b, each a mean over the batch. Ours is the mean over all 2B views, half of it."""
    LARGE_NUM = 1e9
    temperature = 0.2
    hidden1, hidden2 = (F.normalize(x, dim=-1) for x in pair)
    batch_size = hidden1.shape[0]
    labels = F.one_hot(torch.arange(batch_size), batch_size * 2).float()
    masks = F.one_hot(torch.arange(batch_size), batch_size).float()
    logits_aa = hidden1 @ hidden1.T / temperature - masks * LARGE_NUM
    logits_bb = hidden2 @ hidden2.T / temperature - masks * LARGE_NUM
    logits_ab = hidden1 @ hidden2.T / temperature
    logits_ba = hidden2 @ hidden1.T / temperature

    def softmax_cross_entropy(onehot, logits):
        return -(onehot * F.log_softmax(logits, dim=1)).sum(1).mean()

    loss_a = softmax_cross_entropy(labels, torch.cat([logits_ab, logits_aa], 1))
    loss_b = softmax_cross_entropy(labels, torch.cat([logits_ba, logits_bb], 1))
    torch.testing.assert_close(nt_xent_loss(*pair, temperature), (loss_a + loss_b) / 2)


def test_byol_matches_deepmind_byol(pair):
    """deepmind/deepmind-research, byol/byol_experiment.py: regression_loss = -2 * <x/|x|, y/|y|> (the constant
    2 of the paper's ||x - y||^2 dropped); ours keeps it: 2 + regression_loss, averaged over the batch."""
    x, y = pair

    def regression_loss(x, y):
        normed_x, normed_y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        return -2.0 * torch.sum(normed_x * normed_y, dim=-1)

    torch.testing.assert_close(byol_loss(x, y), (2.0 + regression_loss(x, y)).mean())


def test_byol_momentum_matches_deepmind_byol():
    """byol/utils/schedules.py, target_ema: 1 - (1 - base_ema) * (cos(pi * step / max_steps) + 1) / 2."""
    base_ema, max_steps = 0.996, 1000
    for step in (0, 1, 250, 500, 999, 1000):
        reference = 1.0 - (1.0 - base_ema) * (math.cos(math.pi * step / max_steps) + 1.0) / 2.0
        assert cosine_momentum(base_ema, 1.0, step / max_steps) == pytest.approx(reference, abs=1e-12)


def test_vicreg_matches_facebookresearch_vicreg(pair):
    """facebookresearch/vicreg, main_vicreg.py, VICReg.forward (after the projector), with off_diagonal."""
    x, y = pair
    sim_coeff, std_coeff, cov_coeff = 25.0, 25.0, 1.0
    batch_size, num_features = x.shape

    def off_diagonal(x):
        n, m = x.shape
        assert n == m
        return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features) + off_diagonal(cov_y).pow_(2).sum().div(
        num_features
    )
    reference = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    torch.testing.assert_close(vicreg_loss(*pair, sim_coeff, std_coeff, cov_coeff), reference)


def test_vicreg_variance_term_is_active_on_these_tensors(pair):
    """The comparison above must exercise the hinge: a unit-variance batch would leave the variance term 0."""
    x, _ = pair
    assert torch.sqrt((0.5 * x).var(dim=0) + 1e-4).lt(1).any()
    assert vicreg_loss(0.5 * x, 0.5 * x, 0.0, 1.0, 0.0) > 0


def test_gan_losses_and_r1_match_stylegan2_ada():
    """NVlabs/stylegan2-ada-pytorch, training/loss.py, StyleGAN2Loss.accumulate_gradients: loss_Gmain =
    softplus(-gen_logits); loss_Dgen = softplus(gen_logits); loss_Dreal = softplus(-real_logits);
    r1_penalty = r1_grads.square().sum([1, 2, 3]), loss_Dr1 = r1_penalty * (r1_gamma / 2)."""
    generator = torch.Generator().manual_seed(5)
    real_img = torch.randn(6, 2, 8, 8, generator=generator)
    gen_logits = torch.randn(6, generator=generator)
    weight = torch.randn(2 * 8 * 8, generator=generator)

    def D(img):
        return torch.tanh(img.flatten(1) @ weight / 8)

    real_img_tmp = real_img.detach().requires_grad_(True)
    real_logits = D(real_img_tmp)
    loss_Gmain = F.softplus(-gen_logits)
    loss_Dgen = F.softplus(gen_logits)
    loss_Dreal = F.softplus(-real_logits)
    (r1_grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp], create_graph=True)
    r1 = r1_grads.square().sum([1, 2, 3])

    torch.testing.assert_close(generator_loss(gen_logits), loss_Gmain.mean())
    torch.testing.assert_close(discriminator_loss(real_logits, gen_logits), loss_Dreal.mean() + loss_Dgen.mean())
    torch.testing.assert_close(r1_penalty(real_logits, real_img_tmp), r1.mean())
