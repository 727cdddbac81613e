"""Adding a method is one module plus one registry line: a toy method registered from outside the package
is accepted by the configuration and trained by the trainer, with no other edit."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from phenossl.methods.branch import Branch
from phenossl.methods.params import SimCLRParams
from phenossl.methods.registry import MethodSpec, method_names, register_method, unregister_method


class AlignBranch(Branch):
    """A toy method: pull the two views' projections together (it would collapse; one step is all we need)."""

    def forward(self, features, momentum_features=None, conditions=(None, None)):
        z1, z2 = self.project_pair(features, conditions)
        return (2 - 2 * F.cosine_similarity(z1, z2, dim=1)).mean()


@pytest.fixture
def toy_method():
    module = types.ModuleType("phenossl_toy_method")
    module.AlignBranch = AlignBranch
    module.AlignParams = SimCLRParams
    sys.modules[module.__name__] = module
    register_method(MethodSpec("align", "toy: align the two views", "align",
                               branch="phenossl_toy_method:AlignBranch", params_class="phenossl_toy_method:AlignParams"))
    yield "align"
    unregister_method("align")
    del sys.modules[module.__name__]


def test_a_registered_toy_method_trains_one_step(toy_method, tiny_store, tiny_config, tmp_path):
    from phenossl.train import train
    from phenossl.train.checkpoint import load_checkpoint

    config = tiny_config(method=toy_method, epochs=1, batch_size=48, collapse_threshold=0.0)
    result = train(tiny_store, config, tmp_path / "run")
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.history["loss"].iloc[0]))
    state = load_checkpoint(result.checkpoint)
    assert state["train_config"]["method"] == "align"
    assert any(key.startswith("branches.a.projector.") for key in state["model"])
    assert toy_method in method_names()
