"""benchmarks/store_read_speed.py --smoke: the memmap store and three zarr layouts of 600 small tiles, each read in
random batches and sequentially, warm and cold, with each zarr layout's times as ratios of the memmap's."""


def test_store_read_speed_study_times_every_layout(run_benchmark):
    record = run_benchmark("store_read_speed.py")
    layouts = record["results"]["layouts"]
    assert list(layouts) == ["memmap", "zarr_tile_chunks", "zarr_sharded", "zarr_zstd_chunks"]
    assert layouts["memmap"]["files"] == 1 and layouts["zarr_tile_chunks"]["files"] > 600
    for layout in layouts.values():
        for what in ("random_batch_s", "sequential_pass_s"):
            assert set(layout[what]) == {"warm", "cold"} and all(v > 0 for v in layout[what].values())
    ratios = record["results"]["ratio_to_memmap"]
    assert list(ratios) == ["zarr_tile_chunks", "zarr_sharded", "zarr_zstd_chunks"]
    assert all(value > 0 for ratio in ratios.values() for value in ratio.values())
