"""Method hyper-parameters: papers' defaults, unknown keys rejected, queue fitted to the dataset."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from phenossl.methods.params import MethodParams


def test_defaults():
    params = MethodParams()
    assert params.moco.temperature == 0.2 and params.moco.momentum == 0.99 and params.moco.queue_size == 4096
    assert params.simclr.temperature == 0.2
    assert (params.byol.momentum, params.byol.final_momentum) == (0.996, 1.0)
    assert (params.vicreg.sim_coeff, params.vicreg.var_coeff, params.vicreg.cov_coeff) == (25.0, 25.0, 1.0)
    assert params.for_method("vicreg") is params.vicreg


def test_round_trip_through_a_dict():
    params = MethodParams.model_validate({"moco": {"queue_size": 512}, "byol": {"momentum": 0.99}})
    assert MethodParams.model_validate(params.model_dump()) == params


@pytest.mark.parametrize(
    "bad",
    [
        {"moco": {"queue_sise": 10}},
        {"dino": {}},
        {"moco": {"temperature": 0}},
        {"byol": {"momentum": 0.999, "final_momentum": 0.99}},
        {"vicreg": {"sim_coeff": -1}},
    ],
)
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        MethodParams.model_validate(bad)


def test_queue_fits_the_dataset():
    params = MethodParams()
    assert params.for_dataset(100_000).moco.queue_size == 4096
    small = params.for_dataset(600)
    assert small.moco.queue_size == 300
    assert params.moco.queue_size == 4096  # the original is untouched
    assert params.for_dataset(1).moco.queue_size == 1


def test_importing_params_does_not_import_torch():
    code = "import sys, phenossl.methods.params; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
