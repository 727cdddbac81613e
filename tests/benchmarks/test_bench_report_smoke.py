"""benchmarks/report.py: renders the committed results, and says what is missing when a result is absent."""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def render(*args):
    completed = subprocess.run([sys.executable, "benchmarks/report.py", *args], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_report_renders_every_placeholder_of_the_committed_results(tmp_path):
    out = tmp_path / "benchmarks.md"
    render("--out", str(out))
    text = out.read_text()
    assert "{{" not in text and "}}" not in text
    assert "# Benchmarks" in text


def test_report_says_how_to_produce_a_missing_result(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    out = tmp_path / "benchmarks.md"
    render("--results", str(results), "--out", str(out))
    text = out.read_text()
    assert "No result yet (quality_bbbc021.json): run `.venv/bin/python benchmarks/quality_bbbc021.py" in text
    assert "{{" not in text
    json.dumps(text)  # plain text
