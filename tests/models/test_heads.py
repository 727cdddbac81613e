"""Projector MLPs and CASSLE's conditioned projector."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phenossl.errors import ConfigError
from phenossl.models.heads import ConditionedProjector, mlp, project


def test_mlp_layers_and_shapes():
    head = mlp(16, 32, 8)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(4, 16)).shape == (4, 8)
    three = mlp(16, 32, 8, num_layers=3, batch_norm=False, last_bn=True)
    assert [type(m) for m in three] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert [type(m) for m in mlp(16, 32, 8, num_layers=1)] == [nn.Linear]
    with pytest.raises(ConfigError):
        mlp(16, 32, 8, num_layers=0)


def test_conditioned_projector_uses_the_augmentation_parameters():
    torch.manual_seed(0)
    head = ConditionedProjector(in_dim=16, condition_dim=3, hidden_dim=32, out_dim=8).eval()
    features = torch.randn(4, 16)
    params = torch.rand(4, 3)
    same = head(features, params)
    assert same.shape == (4, 8)
    assert torch.equal(same, head(features, params.clone()))
    assert not torch.allclose(same, head(features, params + 0.5))
    head.train()
    head(features, params).sum().backward()
    assert head.condition_embedding[0].weight.grad.abs().sum() > 0


def test_conditioned_projector_checks_the_parameter_shape():
    head = ConditionedProjector(16, 3, 32, 8)
    with pytest.raises(ConfigError, match=r"\(4, 3\)"):
        head(torch.randn(4, 16), torch.rand(4, 2))
    with pytest.raises(ConfigError, match="CASSLE"):
        project(head, torch.randn(4, 16), None)
    plain = mlp(16, 32, 8)
    assert project(plain, torch.randn(4, 16), torch.rand(4, 3)).shape == (4, 8)  # plain heads ignore it
