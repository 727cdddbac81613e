"""benchmarks/ui_stalls.py: the stall probe driving a real viewer through every action on a tiny synthetic plate
(--smoke), and the pure parts (the synthetic plate, merging labels into the result file, the table)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ui_stalls


@pytest.mark.gui
@pytest.mark.slow  # a real viewer twice and a first UMAP (numba): ~40-60 s on 2 shared cores
def test_ui_stall_probe_measures_every_action(run_benchmark):
    record = run_benchmark("ui_stalls.py", "--scales", "100k")
    (entry,) = record["results"].values()  # one label: smoke
    scale = entry["scales"]["100k"]
    assert scale["cells"] == 400 and scale["plate"]["fields"] == 1
    assert scale["code"]["phenossl_file"].endswith("phenossl/__init__.py")
    actions = scale["actions"]
    assert list(actions) == list(ui_stalls.ACTIONS)
    for name, row in actions.items():
        assert row["error"] is None, (name, row["error"])
        assert row["ticks"] > 0 and row["max_stall_ms"] >= 0 and row["wall_s"] > 0, name
    umap = actions["umap_result"]
    assert [m for _, m in umap["signals"]].count("umap started") == 1 and "result_ms" in umap
    assert any(phase["after"] == "umap done" for phase in umap["phases"])


def test_synthetic_plate_has_the_asked_number_of_separate_discs():
    from scipy import ndimage

    stack = ui_stalls.synthetic_plate(1000, 128, spacing=12, radius=4)
    assert stack.shape == (10, 128, 128) and stack.dtype == np.uint16  # 10 x 10 discs per field
    counts = [ndimage.label(field > 300)[1] for field in stack]
    assert sum(counts) == 1000
    metadata = ui_stalls.synthetic_plate_metadata(len(stack), 128)["phenossl"]
    assert len(set(metadata["keys"])) == 10 and metadata["sites"][:5] == [1, 2, 3, 4, 1]


def _scale(stall_ms: float) -> dict:
    row = {"max_stall_ms": stall_ms, "max_stall_cpu_ms": stall_ms / 2, "wall_s": 1.0, "error": None}
    return {"cells": 10, "actions": {"segment": row}}


def test_results_are_merged_by_label_and_scale(tmp_path):
    path = tmp_path / "ui_stalls.json"
    context = {"study": "ui_stalls", "smoke": False}
    ui_stalls.write_json(path, ui_stalls.merged_record(path, "before", {"sample": _scale(900)}, {}, context))
    ui_stalls.write_json(path, ui_stalls.merged_record(path, "before", {"100k": _scale(2500)}, {}, context))
    record = ui_stalls.merged_record(path, "after", {"sample": _scale(50)}, {"sample": {"actions": {}}}, context)
    results = record["results"]
    assert set(results["before"]["scales"]) == {"sample", "100k"} and set(results["after"]["scales"]) == {"sample"}
    text = ui_stalls.table(results)
    assert "before sample" in text and "after sample" in text
    assert "| segment | 900 **!** (450) / 1.00 | 2500 **!** (1250) / 1.00 | 50 (25) / 1.00 |" in text


def test_stalls_are_split_at_the_result_signal():
    start = 100.0
    late = [(100.1, 0.05), (100.5, 0.3), (101.2, 0.9), (101.4, 0.01)]
    marks = [(0.2, "cluster started"), (1.0, "cluster done"), (1.1, "clustering_changed")]
    split = ui_stalls.result_split(late, marks, start, "clustering_changed")
    assert split == {"before_result_ms": 300.0, "result_ms": 900.0}
    phases = ui_stalls.phase_stalls(late, marks, start, start + 2)
    assert [(p["after"], p["max_stall_ms"]) for p in phases] == [
        ("start", 50.0), ("cluster started", 300.0), ("cluster done", 900.0)]


def test_repeats_are_combined_as_medians():
    runs = [_scale(stall) | {"plate": {"fields": 1}, "date": str(stall)} for stall in (300.0, 100.0, 200.0)]
    runs[1]["actions"]["segment"]["error"] = "timed out"
    entry = ui_stalls.combine_repeats(runs)
    row = entry["actions"]["segment"]
    assert row["max_stall_ms"] == 200.0 and row["max_stall_ms_runs"] == [300.0, 100.0, 200.0]
    assert row["max_stall_cpu_ms"] == 100.0 and row["error"] == "timed out"
    assert entry["n_repeats"] == 3 and entry["plate"] == {"fields": 1}
    assert [r["date"] for r in entry["repeats"]] == ["300.0", "100.0", "200.0"]
