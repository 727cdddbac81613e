"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    """Real microscopy data beside the checkout (../shared/data) or where PHENOSSL_SHARED_DATA points."""
    env = os.environ.get("PHENOSSL_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real data folder; skips the test (saying why) where it is absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set PHENOSSL_SHARED_DATA to its folder to run this test)")
    return path


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
