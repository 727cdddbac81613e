"""benchmarks/report_bbbc021.py: the example's morphology, context and dual runs made with phenossl's pipeline on
400 crops, each reported, two pairs compared, end to end."""

import pytest


@pytest.mark.shared_data
def test_three_runs_are_reported_and_two_pairs_compared(run_benchmark, shared_data):
    record = run_benchmark("report_bbbc021.py", "--data", shared_data, timeout=900)
    runs, comparisons = record["results"]["runs"], record["results"]["comparisons"]
    assert set(runs) == {"morphology", "context", "dual"}
    for run in runs.values():
        variables = {row["variable"]: row for row in run["table"]}
        assert {"compound", "concentration_uM", "nucleus_area", "plate"} <= set(variables)
        assert variables["neighbours"]["n_cells"] == 0  # crops have no field: density is not available
        assert run["reading"].startswith("The clusters ")
    assert set(comparisons) == {"context -> morphology", "morphology -> dual"}
    assert any(line.startswith("composition A (context -> morphology)")
               for line in comparisons["context -> morphology"]["differences"])
    assert comparisons["morphology -> dual"]["differences"][0].startswith("train.weight_a 1 -> 0.5")
    for comparison in comparisons.values():
        assert sum(sum(row.values()) for row in comparison["contingency"].values()) == comparison["n_cells"]
