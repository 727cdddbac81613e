"""benchmarks/quality_bbbc021.py --smoke: the default run (one short epoch) and every baseline on 96 real crops."""

import math

import pytest

pytestmark = pytest.mark.shared_data


def test_quality_study_scores_the_default_run_against_measuring_the_cells(run_benchmark, shared_data):
    record = run_benchmark("quality_bbbc021.py", "--data", shared_data, timeout=600)
    summary = record["results"]["summary"]
    assert {"phenossl default", "CellProfiler (cp_measure)", "DNA mean intensity alone", "tubulin mean intensity alone",
            "the three stain means", "raw pixels (4x4 blocks)", "untrained encoder (random-init)"} <= set(summary)
    assert record["settings"]["train"]["composition_a"]["name"] == "morphology"  # the shipped example's run
    spaces = record["settings"]["spaces"]
    assert spaces == ["cosine/as clustered", "cosine/to controls", "standardize/as clustered",
                      "standardize/to controls"]
    for name, row in summary.items():
        assert row["seeds"] == [0], name
        for variant in spaces:
            for key in ("ami_within_mean", "ami_mean"):
                value = row["spaces"][variant][key]["mean"]
                assert isinstance(value, float) and math.isfinite(value), (name, variant, key)
            assert 0 <= row["spaces"][variant]["knn_balanced_accuracy"]["mean"] <= 1
            assert set(row["spaces"][variant]["per_plate"]) == {"Week4_27801", "Week4_27821"}
        best = row["best"]
        assert best["ami_within"]["mean"] == max(row["spaces"][v]["ami_within_mean"]["mean"] for v in spaces)
    # deterministic features and 1-NN (no seed): far above chance (0.5) on the 96-cell subset; a broken
    # measurement, label join or leave-one-plate-out split falls to chance
    assert summary["CellProfiler (cp_measure)"]["best"]["knn"]["mean"] > 0.6
    target = record["results"]["target"]
    assert set(target["checks"]) == {"within-plate AMI >= 1.25 x cp_measure's",
                                     "within-plate AMI >= the best single stain's",
                                     "1-NN balanced accuracy >= cp_measure's"}
    assert target["met"] == all(target["checks"].values())
    assert record["results"]["reports"]["cellprofiler"]["kept"] > 300
