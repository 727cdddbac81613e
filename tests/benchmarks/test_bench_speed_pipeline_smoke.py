"""benchmarks/speed_pipeline.py --smoke: segmentation, tiling and reclustering timings on a crop of the field."""

import pytest

pytestmark = pytest.mark.shared_data


def test_speed_pipeline_study_times_every_stage(run_benchmark, shared_data):
    record = run_benchmark("speed_pipeline.py", "--data", shared_data)
    results = record["results"]
    classical = results["segmentation"]["backends"]["classical"]
    assert classical["fields_per_s"] > 0 and classical["nuclei"] > 10
    assert "cellpose" in results["segmentation"]["backends"]  # measured, or skipped saying why
    assert results["tiling"]["cut_tiles"]["cells_per_s"] > 0
    assert results["tiling"]["build_store_given_labels"]["cells"] == results["tiling"]["nuclei_per_field"]
    (size,) = results["recluster"]
    assert results["recluster"][size]["k"]["10"]["median_s"] > 0
