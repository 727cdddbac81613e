"""benchmarks/quality_bbbc021.py --smoke: one dual-loss run and the baselines on 96 real crops."""

import pytest

pytestmark = pytest.mark.shared_data


def test_quality_study_runs_and_reports_every_metric(run_benchmark, shared_data):
    record = run_benchmark("quality_bbbc021.py", "--data", shared_data)
    summary = record["results"]["summary"]
    assert {"dual w=0.5", "hand-crafted (CellProfiler-style)", "raw pixels (4x4 blocks)",
            "random-init resnet18"} <= set(summary)
    dual = summary["dual w=0.5"]
    assert dual["seeds"] == [0] and set(dual["views"]) == {"auto", "full"}
    auto = dual["views"]["auto"]
    assert auto["view"] == "centre crop 0.7"
    for key in ("ami_compound", "ami_plate", "ami_compound_within_plate_mean", "knn_accuracy",
                "knn_balanced_accuracy"):
        assert -1 <= auto[key]["mean"] <= 1, key
    assert set(auto["ami_compound_per_plate"]) == set(record["settings"]["mixed_plates"]) == {
        "Week4_27801", "Week4_27821"}
    assert any("ImageNet" in line for line in record["results"]["skipped"]) or any(
        name.startswith("ImageNet") for name in summary)
