"""Run a benchmark script's --smoke mode in a subprocess, as a user would, and read its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_benchmark(tmp_path):
    """run_benchmark("segmentation.py", "--data", path) -> the result record written with --smoke."""

    def run(script: str, *args: str, timeout: float = 300) -> dict:
        out = tmp_path / f"{Path(script).stem}.json"
        command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--smoke", "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"), *map(str, args)]
        completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        assert completed.returncode == 0, f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}"
        record = json.loads(out.read_text())
        assert record["smoke"] is True and f"benchmarks/{script} --smoke" in record["command"]
        for key in ("date", "machine", "load_average_start", "settings", "results"):
            assert key in record, key
        return record

    return run
