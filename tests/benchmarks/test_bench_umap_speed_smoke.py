"""benchmarks/umap_speed.py --smoke: before/after first-layout timings, each in a fresh process, on 300 cells."""


def test_umap_speed_study_times_fresh_processes(run_benchmark):
    record = run_benchmark("umap_speed.py")
    (size,) = record["results"]
    rows = record["results"][size]["scenarios"]
    assert set(rows) == {"before_cold", "after_cold", "after_cached_warm_up"}
    for row in rows.values():
        assert row["first_layout_s"] > 0 and row["first_layout_cpu_s"] > 0 and row["finite"]
        assert row["peak_rss_mib"] > 0 and row["numba_cache_dir"]
    warmed = rows["after_cached_warm_up"]
    assert warmed["warm_up_s"] > 0 and warmed["second_equals_first"]
    # a fresh process with a filled cache gives the layout that compiling gave: the seed fixes it
    assert record["results"][size]["summary"]["after_same_layout_in_every_process"]
    assert record["settings"]["max_fit"] == 200
