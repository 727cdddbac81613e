"""Study 3d: reading tiles from the memory-mapped store against the same tiles in zarr (issue 15's store format).

phenossl's tile store is one memory-mapped ``tiles.npy`` (float16, cells x C x S x S). Many writers at once or
object storage would need a chunked format instead: zarr, the format of OME-Zarr fields. This study writes the
same tiles (a store made by ``TileStoreWriter``) into zarr 3 arrays of three layouts and times, in one run, the
two ways phenossl reads a store:

- **random batches**: a training batch, 256 random cells (sorted, as ``TileBatches`` reads them), read into
  memory; a new seeded draw per repetition, the same draws for every layout;
- **sequential**: every cell in blocks of 256 in order, as embedding reads them.

Each is measured *warm* (the files in the page cache: read once just before) and *cold* (each file's pages
dropped from the page cache with ``posix_fadvise(DONTNEED)`` before each repetition, and the memmap reopened:
reads come from the disk, as for a store larger than the memory). Results are seconds per batch / per pass and
each zarr layout's time as a ratio of the memmap's (> 1: zarr slower).

Layouts: ``zarr_tile_chunks`` (one uncompressed tile per chunk, one file each: the fastest random access zarr
offers, but one object per cell), ``zarr_sharded`` (zarr 3 shards of 256 tiles, one uncompressed tile per inner
chunk: few objects, still one tile per read), ``zarr_zstd_chunks`` (one tile per chunk, zarr's default zstd
compression). The tiles are synthetic: a nucleus-like blob on Poisson noise from integer counts (as a camera
gives), normalised and stored as float16, so that compression behaves roughly as on real tiles.

    .venv/bin/python benchmarks/store_read_speed.py                    # 8,192 cells of 3 x 196 x 196 (1.9 GB per layout)
    .venv/bin/python benchmarks/store_read_speed.py --smoke --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import StudyRecord, apply_threads, log, median, study_parser

STUDY = "store_read_speed"
BATCH = 256
LAYOUTS = ("memmap", "zarr_tile_chunks", "zarr_sharded", "zarr_zstd_chunks")


def synthetic_tiles(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, C, S, S) float32 tiles: a blob (the nucleus) over Poisson noise of integer counts, / 4000."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    blob = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * (size / 8) ** 2))
    counts = rng.poisson(200 + 2500 * blob * rng.uniform(0.5, 1.5, (n, channels, 1, 1)))
    return counts.astype(np.float32) / 4000


def write_memmap_store(path: Path, args: argparse.Namespace) -> np.ndarray:
    """The store as phenossl writes it (TileStoreWriter, 256 tiles at a time); its tiles, memory-mapped."""
    import pandas as pd

    from phenossl.tiles.store import TileStore, TileStoreWriter

    base = synthetic_tiles(BATCH, args.channels, args.tile_size)
    writer = TileStoreWriter(path, args.cells, [f"ch{i}" for i in range(args.channels)], args.tile_size,
                             overwrite=True)
    for index, start in enumerate(range(0, args.cells, BATCH)):
        count = min(BATCH, args.cells - start)
        writer.append(np.roll(base, index, axis=0)[:count] * (0.8 + 0.4 * (index % 13) / 13))
    return TileStore(writer.finish(pd.DataFrame({"label": np.arange(args.cells)}), {"source": "benchmark"}).path).tiles


def write_zarr(path: Path, layout: str, tiles: np.ndarray):
    import zarr

    n, channels, size, _ = tiles.shape
    options: dict[str, Any] = {"chunks": (1, channels, size, size), "compressors": None}
    if layout == "zarr_sharded":
        options["shards"] = (BATCH, channels, size, size)
    elif layout == "zarr_zstd_chunks":
        options.pop("compressors")  # zarr 3's default: zstd
    array = zarr.create_array(store=str(path), shape=tiles.shape, dtype=tiles.dtype, overwrite=True, **options)
    for start in range(0, n, BATCH):
        array[start : start + BATCH] = np.asarray(tiles[start : start + BATCH])
    return array


def data_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]


def drop_from_page_cache(files: list[Path]) -> None:
    """Ask the kernel to forget the cached pages of ``files`` (clean pages: nothing is lost)."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Layout:
    """One layout's files and how to read rows from it."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.files = data_files(path)
        self.array = None
        self.reopen()

    def reopen(self) -> None:
        self.array = None  # the memmap's mapping is dropped before its pages are
        if self.name == "memmap":
            self.array = np.load(self.path, mmap_mode="r")
        else:
            import zarr

            self.array = zarr.open_array(str(self.path), mode="r")

    def rows(self, rows: np.ndarray) -> np.ndarray:
        if self.name == "memmap":
            return np.asarray(self.array[rows])  # fancy indexing copies: the rows are read
        return self.array.oindex[rows]

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.array(self.array[start:stop])  # a copy: a memmap's slice alone reads nothing

    def cold(self) -> None:
        self.array = None
        drop_from_page_cache(self.files)
        self.reopen()


def sequential_pass(layout: Layout, n: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        layout.block(first, min(n, first + BATCH))
    return time.perf_counter() - start


def measure(layout: Layout, draws: list[np.ndarray], n: int, passes: int) -> dict[str, Any]:
    result: dict[str, Any] = {"files": len(layout.files),
                              "bytes_on_disk": int(sum(f.stat().st_size for f in layout.files))}
    sequential_pass(layout, n)  # warm: every page in the cache
    warm = []
    for rows in draws:
        start = time.perf_counter()
        layout.rows(rows)
        warm.append(time.perf_counter() - start)
    cold = []
    for rows in draws:
        layout.cold()
        start = time.perf_counter()
        layout.rows(rows)
        cold.append(time.perf_counter() - start)
    result["random_batch_s"] = {"warm": median(warm), "cold": median(cold)}
    sequential_warm = [sequential_pass(layout, n) for _ in range(passes)]
    sequential_cold = []
    for _ in range(passes):
        layout.cold()
        sequential_cold.append(sequential_pass(layout, n))
    result["sequential_pass_s"] = {"warm": median(sequential_warm), "cold": median(sequential_cold)}
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--cells", type=int, default=8192)
    parser.add_argument("--tile-size", type=int, default=196)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batches", type=int, default=15, help="random batches timed per layout, warm and cold")
    parser.add_argument("--passes", type=int, default=2, help="sequential passes timed per layout, warm and cold")
    parser.add_argument("--keep", action="store_true", help="keep the store and the zarr arrays in --cache-dir")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cells, args.tile_size, args.batches, args.passes = 600, 32, 2, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    record = StudyRecord(STUDY, args, None, argv)
    work = args.cache_dir / f"store-read-{args.cells}x{args.channels}x{args.tile_size}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    draws = [np.sort(rng.choice(args.cells, size=min(BATCH, args.cells), replace=False)) for _ in range(args.batches)]
    layouts, writes = {}, {}
    try:
        log(f"writing {args.cells} tiles of {args.channels} x {args.tile_size} px")
        start = time.perf_counter()
        tiles = write_memmap_store(work / "store", args)
        writes["memmap"] = time.perf_counter() - start
        for name in LAYOUTS[1:]:
            start = time.perf_counter()
            write_zarr(work / f"{name}.zarr", name, tiles)
            writes[name] = time.perf_counter() - start
            log(f"  {name}: written in {writes[name]:.1f} s")
        del tiles
        paths = {"memmap": work / "store" / "tiles.npy", **{name: work / f"{name}.zarr" for name in LAYOUTS[1:]}}
        for name in LAYOUTS:
            layout = Layout(name, paths[name])
            layouts[name] = measure(layout, draws, args.cells, args.passes)
            layouts[name]["write_s"] = writes[name]
            layout.array = None
            r = layouts[name]
            log(f"  {name}: random batch warm {r['random_batch_s']['warm'] * 1000:.1f} ms, cold "
                f"{r['random_batch_s']['cold'] * 1000:.1f} ms; sequential pass warm {r['sequential_pass_s']['warm']:.2f} s, "
                f"cold {r['sequential_pass_s']['cold']:.2f} s")
            drop_from_page_cache(layout.files)  # the next layout starts from a cache without this one
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = layouts["memmap"]
    ratios = {name: {f"{what}_{state}": layouts[name][what][state] / base[what][state]
                     for what in ("random_batch_s", "sequential_pass_s") for state in ("warm", "cold")}
              for name in LAYOUTS[1:]}
    tile_bytes = args.channels * args.tile_size**2 * 2
    settings = {"cells": args.cells, "tile_size": args.tile_size, "channels": args.channels, "dtype": "float16",
                "layout_gib": args.cells * tile_bytes / 2**30, "batch": BATCH, "random_batches": args.batches,
                "sequential_passes": args.passes, "zarr": __import__("zarr").__version__,
                "cold": "posix_fadvise(DONTNEED) on every file of the layout before each repetition",
                "write_s": "memmap: TileStoreWriter, making the synthetic tiles included (a roll and a scaling per "
                           "256 tiles); zarr: copying them from the memmap"}
    notes = ["Ratios are zarr time / memmap time for the same reads in the same run (> 1: zarr is slower).",
             ("Median of the repetitions. Cold reads come from this machine's virtual disk; a parallel file system "
              "or object storage changes the cold numbers, mostly against the layouts with more files."),
             "The machine may be shared (see the load average): compare the ratios, not the absolute times."]
    return record.finish(settings, {"layouts": layouts, "ratio_to_memmap": ratios}, notes)


if __name__ == "__main__":
    main()
