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


def render_without_results(tmp_path) -> str:
    """The page rendered from an empty results folder."""
    results = tmp_path / "results"
    results.mkdir()
    out = tmp_path / "benchmarks.md"
    render("--results", str(results), "--out", str(out))
    return out.read_text()


def test_report_says_how_to_produce_a_missing_result(tmp_path):
    text = render_without_results(tmp_path)
    assert "No result yet (quality_bbbc021.json): run `.venv/bin/python benchmarks/quality_bbbc021.py" in text
    assert "{{" not in text
    json.dumps(text)  # plain text


def test_report_notes_a_missing_result_once_per_section_and_marks_gpu_rows(tmp_path):
    text = render_without_results(tmp_path)
    section = text.split("Dose-response along the on-perturbation axis")[1].split("\n## ")[0]
    assert section.count("No result yet (dose_response_bbbc021.json)") == 1
    loan = text.split("### 3a'. GPU")[1].split("\n### ")[0]
    assert loan.count("No result yet (gpu/gpu_check_2026-12-04.log; needs a GPU)") == 1


def test_value_selectors_pick_one_list_element_by_its_fields():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import report

    results = {"r": {"cases": [{"method": "byol", "resolution": 96, "ratio": 0.5},
                               {"method": "byol", "resolution": 128, "ratio": 0.75},
                               {"method": "mocov2", "resolution": 96, "ratio": 1.0}]}}
    assert report.value(results, "r:cases.[method=byol,resolution=128].ratio|.0%") == "75%"
    assert report.value(results, "r:cases.[method=mocov2].ratio|.2f") == "1.00"
    for ambiguous_or_absent in ("method=byol", "method=simclr"):
        try:
            report.value(results, f"r:cases.[{ambiguous_or_absent}].ratio")
        except ValueError as error:
            assert "matches" in str(error)
        else:
            raise AssertionError(ambiguous_or_absent)
