"""benchmarks/umap_quality.py --smoke: both layouts are scored, the sampled one on fewer cells."""


def test_umap_quality_study_scores_the_sampled_and_the_full_layout(run_benchmark):
    record = run_benchmark("umap_quality.py")
    rows = record["results"]
    sampled, full = rows["fitted on a sample"], rows["fitted on every cell"]
    assert sampled["max_fit"] < full["max_fit"] == record["settings"]["cells"]
    for row in (sampled, full):
        assert 0.5 < row["trustworthiness"] <= 1  # blobs stay neighbours in 2-D
