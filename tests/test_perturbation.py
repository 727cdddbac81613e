"""The on-perturbation axis: doses land where they should between control (0) and reference (1)."""

import numpy as np
import pandas as pd
import pytest

from phenossl.errors import ConfigError, InputError
from phenossl.perturbation import dose_response, fit_axis, parse_selector, select_cells


def _dosed_cells(seed=0, n_per_dose=400, dims=32):
    """Cells whose embedding moves along one direction in proportion to the dose (plus a dose-independent
    nuisance direction and noise): the axis must recover the dose from control and top dose alone."""
    rng = np.random.default_rng(seed)
    effect, nuisance = rng.normal(size=(2, dims))
    doses = np.repeat([0.0, 0.25, 0.5, 1.0], n_per_dose)
    compound = np.where(doses == 0, "DMSO", "drug")
    plate = rng.integers(2, size=doses.size)
    features = (doses[:, None] * effect + plate[:, None] * nuisance * 0.5
                + rng.normal(scale=0.7, size=(doses.size, dims)))
    cells = pd.DataFrame({"compound": compound, "concentration": doses, "plate": plate})
    return features, cells


def test_intermediate_doses_score_in_proportion_and_the_curve_is_monotone():
    features, cells = _dosed_cells()
    control = select_cells(cells, {"compound": "DMSO"}, "control")
    reference = select_cells(cells, {"compound": "drug", "concentration": "1"}, "reference")
    axis = fit_axis(features, control, reference)
    table = dose_response(axis.score(features), cells, ["compound", "concentration"])
    assert list(table["concentration"]) == [0.0, 0.25, 0.5, 1.0]  # control first, doses in numeric order
    assert np.allclose(table["mean"], [0.0, 0.25, 0.5, 1.0], atol=0.06)
    assert np.all(np.diff(table["mean"]) > 0)
    assert (table["n_cells"] == 400).all() and np.allclose(table["sem"], table["sd"] / 20)


def test_selectors_read_the_cli_syntax_and_match_numbers_written_either_way():
    assert parse_selector("compound=DMSO, concentration=50") == {"compound": "DMSO", "concentration": "50"}
    cells = pd.DataFrame({"compound": ["DMSO", "x", "x"], "concentration": [0.0, 50.0, 5.0]})
    assert select_cells(cells, {"concentration": "50"}, "reference").tolist() == [False, True, False]
    assert select_cells(cells, {"concentration": 50.0, "compound": "x"}, "reference").tolist() == [False, True, False]
    with pytest.raises(ConfigError, match="COLUMN=VALUE"):
        parse_selector("compound")


def test_bad_selections_say_what_is_there():
    features, cells = _dosed_cells(n_per_dose=20)
    with pytest.raises(InputError, match="does not have"):
        select_cells(cells, {"treatment": "DMSO"}, "control")
    with pytest.raises(InputError, match=r"No cell matches the reference selection.*'drug'"):
        select_cells(cells, {"compound": "Drug"}, "reference")
    everyone = np.ones(len(cells), dtype=bool)
    with pytest.raises(ConfigError, match="both control and reference"):
        fit_axis(features, everyone, everyone)
    same = np.zeros_like(features)
    with pytest.raises(InputError, match="same average embedding"):
        fit_axis(same, cells["compound"].eq("DMSO").to_numpy(), cells["compound"].eq("drug").to_numpy())
