"""benchmarks/memory_100k.py --smoke: every stage on 600 small tiles, the first in its own process."""


def test_memory_study_reports_peaks_for_every_stage(run_benchmark):
    record = run_benchmark("memory_100k.py")
    stages = record["results"]["stages"]
    assert list(stages) == ["write_store", "stream_batches", "embed", "cluster_umap"]
    assert stages["write_store"]["own_process"] is True
    assert stages["stream_batches"]["details"]["cells_read"] == 600 // 256 * 256
    assert stages["embed"]["details"]["embeddings_shape"] == [600, 512]
    for stage in stages.values():
        assert 0 < stage["peak_rss_anon_mib"] <= stage["peak_rss_mib"] <= stage["ru_maxrss_mib"] + 1
