"""benchmarks/speed_training.py --smoke: the real trainer vs the compute-only ceiling, one tiny case."""


def test_speed_training_study_measures_pipeline_ceiling_and_parts(run_benchmark):
    record = run_benchmark("speed_training.py", "--device", "cpu")
    (case,) = record["results"]["cases"]
    assert (case["method"], case["encoder"], case["resolution"]) == ("mocov2", "resnet18", 32)
    assert case["pipeline_cells_per_s"] > 0 and case["ceiling_cells_per_s"] > 0
    assert case["ratio"] == case["pipeline_cells_per_s"] / case["ceiling_cells_per_s"]
    profile = case["profile"]
    for part in ("load_s_per_step", "augment_s_per_step", "model_s_per_step", "pipeline_s_per_step"):
        assert profile[part] > 0, part
    assert record["machine"]["gpu"] is None and record["machine"]["device"] == "cpu"
