"""y-aware's loss against a transcription of the authors' code (Duplums/yAwareContrastiveLearning, losses.py,
GeneralizedSupervisedNTXenLoss.forward), its limits, and its label transform."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics.pairwise import rbf_kernel

from phenossl.errors import ConfigError
from phenossl.methods.params import MethodParams, YAwareParams
from phenossl.methods.simclr import nt_xent_loss
from phenossl.methods.yaware import YAwareBranch, kernel_weights, yaware_loss


def generalized_supervised_nt_xent(z_i, z_j, labels, temperature, sigma, per_row=False):
    """The reference's forward, line for line (kernel='rbf': sklearn's rbf_kernel with gamma = 1 / (2 sigma^2)).
    ``per_row``: its normalisation written as the paper's equation (each anchor's weights sum to 1) instead of
    ``weights /= weights.sum(axis=1)``, which numpy broadcasts along the last axis (column j / row j's sum)."""
    INF = 1e8
    N = len(z_i)
    z_i = F.normalize(z_i, p=2, dim=-1)
    z_j = F.normalize(z_j, p=2, dim=-1)
    sim_zii = (z_i @ z_i.T) / temperature
    sim_zjj = (z_j @ z_j.T) / temperature
    sim_zij = (z_i @ z_j.T) / temperature
    sim_zii = sim_zii - INF * torch.eye(N)
    sim_zjj = sim_zjj - INF * torch.eye(N)
    all_labels = labels.view(N, -1).repeat(2, 1).detach().cpu().numpy()
    weights = rbf_kernel(all_labels, all_labels, gamma=1.0 / (2 * sigma**2))
    weights = weights * (1 - np.eye(2 * N))
    if per_row:
        weights /= weights.sum(axis=1, keepdims=True)
    else:
        weights /= weights.sum(axis=1)
    sim_Z = torch.cat([torch.cat([sim_zii, sim_zij], dim=1), torch.cat([sim_zij.T, sim_zjj], dim=1)], dim=0)
    log_sim_Z = F.log_softmax(sim_Z, dim=1)
    loss = -1.0 / N * (torch.from_numpy(weights).float() * log_sim_Z).sum()
    return loss


@pytest.fixture
def pair():
    generator = torch.Generator().manual_seed(2024)
    return torch.randn(12, 16, generator=generator), torch.randn(12, 16, generator=generator)


DOSES = torch.tensor([0.0, 0.1, 0.1, 0.3, 1.0, 1.0, 1.0, 3.0, 10.0, 10.0, 30.0, 0.3])


def test_matches_the_reference_with_its_normalisation_per_anchor(pair):
    """Ours is the reference with each row of weights normalised (the paper's equation), halved: the reference
    sums the 2B rows and divides by B, ours is the mean over the 2B views like nt_xent_loss."""
    for sigma in (0.3, 1.0, 5.0):
        reference = generalized_supervised_nt_xent(*pair, DOSES, 0.1, sigma, per_row=True)
        torch.testing.assert_close(yaware_loss(*pair, DOSES, 0.1, sigma), reference / 2)


def test_equals_the_literal_reference_when_every_row_sums_alike(pair):
    """The literal ``weights /= weights.sum(axis=1)`` divides entry (i, j) by row j's sum; when all rows have the
    same sum (here: two labels, six cells each) the two normalisations agree, so ours is the reference, halved."""
    balanced = torch.tensor([0.0] * 6 + [1.0] * 6)
    reference = generalized_supervised_nt_xent(*pair, balanced, 0.2, 0.7)
    torch.testing.assert_close(yaware_loss(*pair, balanced, 0.2, 0.7), reference / 2)
    unbalanced = generalized_supervised_nt_xent(*pair, DOSES, 0.1, 1.0)
    assert not torch.isclose(unbalanced / 2, yaware_loss(*pair, DOSES, 0.1, 1.0))  # the difference is real


def test_sigma_to_zero_with_distinct_labels_is_nt_xent(pair):
    """The reference's comment: with the rbf kernel and sigma -> 0 the classical NT-Xent is retrieved. That holds
    when all labels are distinct (the only positive left is the other view of the same cell)."""
    distinct = torch.arange(12, dtype=torch.float32)
    torch.testing.assert_close(yaware_loss(*pair, distinct, 0.2, 1e-3), nt_xent_loss(*pair, 0.2))
    reference = generalized_supervised_nt_xent(*pair, distinct, 0.2, 1e-3)
    torch.testing.assert_close(yaware_loss(*pair, distinct, 0.2, 1e-3), reference / 2)


def test_sigma_to_zero_with_repeated_labels_is_supcon(pair):
    """With repeated labels and sigma -> 0, the positives of a view are all other views with its label, each
    weighted 1 / |P(i)|: SupCon's L_out (Khosla et al. 2020), averaged over the 2B views."""
    labels = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 5.0])
    z = F.normalize(torch.cat(pair), dim=1)
    all_labels = labels.repeat(2)
    logits = (z @ z.T / 0.2).masked_fill(torch.eye(24, dtype=torch.bool), float("-inf"))
    log_prob = F.log_softmax(logits, dim=1)
    positives = (all_labels[:, None] == all_labels[None, :]) & ~torch.eye(24, dtype=torch.bool)
    supcon = -torch.stack([log_prob[i][positives[i]].mean() for i in range(24)]).mean()
    torch.testing.assert_close(yaware_loss(*pair, labels, 0.2, 1e-3), supcon)


def test_kernel_weights_are_row_stochastic_and_zero_on_the_diagonal():
    weights = kernel_weights(DOSES, 1.0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(24))
    assert torch.all(weights.diagonal() == 0)
    assert weights[0, 12] > weights[0, 4]  # a cell's other view outweighs a cell at another dose


def test_half_precision_inputs_give_a_float32_loss(pair):
    loss = yaware_loss(pair[0].half(), pair[1].half(), DOSES, 0.1, 1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_a_label_per_cell_is_required(pair):
    with pytest.raises(ConfigError, match="one label per cell: got 3 labels for 12 cells"):
        yaware_loss(*pair, DOSES[:3])


def test_the_branch_is_simclrs_projector_and_needs_targets(pair):
    branch = YAwareBranch(16, MethodParams().yaware)
    assert branch.takes_targets
    loss = branch(pair, targets=DOSES)
    loss.backward()
    assert branch.projector[0].weight.grad is not None
    with pytest.raises(ConfigError, match="train.label_column"):
        branch(pair)


def test_log10_places_zero_doses_one_decade_below_the_lowest_dose():
    params = YAwareParams(label_transform="log10")
    np.testing.assert_allclose(params.transform_labels(np.array([0.0, 0.1, 1.0, 10.0])), [-2.0, -1.0, 0.0, 1.0])
    np.testing.assert_array_equal(YAwareParams().transform_labels(np.array([0.0, 2.0])), [0.0, 2.0])
    with pytest.raises(ConfigError, match="negative values"):
        params.transform_labels(np.array([-1.0, 1.0]))
    with pytest.raises(ConfigError, match="no positive value"):
        params.transform_labels(np.array([0.0, 0.0]))
