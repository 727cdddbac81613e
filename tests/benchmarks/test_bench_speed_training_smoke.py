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


def test_speed_training_before_after_rows_run_every_feed_on_a_cpu(run_benchmark):
    """--ablation on: the GPU before / after rows' code paths (phenossl's trainer with its switches, and the
    benchmark's unpinned and per-sample-CPU feeds), on a CPU where only the code path means something."""
    record = run_benchmark("speed_training.py", "--device", "cpu", "--ablation", "on", "--skip-grid")
    assert record["results"]["cases"] == []
    rows = record["results"]["ablation"]
    assert [r["feed"] for r in rows] == ["trainer", "unpinned", "cpu_per_sample"]
    assert rows[0]["variant"].startswith("after") and rows[-1]["variant"].startswith("before")
    assert (rows[-1]["amp"], rows[-1]["channels_last"], rows[-1]["cache_on_device"]) == (False, False, "never")
    assert rows[0]["vs_defaults"] == 1.0
    for row in rows:
        assert row["pipeline_cells_per_s"] > 0 and row["ceiling_cells_per_s"] > 0
        assert row["ratio"] == row["pipeline_cells_per_s"] / row["ceiling_cells_per_s"]
    assert any("--ablation on" in note for note in record["notes"])
