"""benchmarks/clustering_1m.py: every row runs in its own process on the smoke size and reports time, peak owned
memory and its agreement with the groups the data were drawn from."""

import pytest


@pytest.mark.slow
def test_every_row_reports_time_memory_and_agreement(run_benchmark):
    record = run_benchmark("clustering_1m.py", timeout=600)
    rows = {row["row"]: row for row in record["results"]["rows"]}
    assert set(rows) == {"phenossl", "sklearn-all", "faiss", "phenossl-umap"}
    for name, row in rows.items():
        assert "error" not in row, row.get("error")
        assert row["n_cells"] == 2000 and row["peak_rss_anon_mib"] > 0
        if name != "phenossl-umap" and "skipped" not in row:
            assert row["ami_vs_groups"] > 0.8  # the groups are found
    assert rows["phenossl"]["nearest_listed"] > 0 and rows["phenossl-umap"]["finite"]
    assert "ami_vs_sklearn_all" in rows["phenossl"]
