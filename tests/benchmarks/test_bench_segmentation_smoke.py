"""benchmarks/segmentation.py --smoke: the classical backend on one image of each ground-truth set."""

import pytest

pytestmark = pytest.mark.shared_data


def test_segmentation_study_scores_each_set_and_says_what_it_skipped(run_benchmark, shared_data):
    record = run_benchmark("segmentation.py", "--data", shared_data)
    results = record["results"]
    classical = results["backends"]["classical"]
    assert set(classical) == {"stardist-dsb2018", "ctc-Fluo-N2DH-GOWT1"}
    for scores in classical.values():
        pooled = scores["pooled"]["0.5"]
        assert pooled["n_images"] == 1 and 0.5 < pooled["f1"] <= 1 and 0 < pooled["average_precision"] <= 1
    assert "cellpose" in results["backends"] or "weights" in results["skipped"]["cellpose"]
