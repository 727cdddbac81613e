"""Study 3c: does memory stay bounded at 100k cells? Peak resident memory of each stage, each in its own process.

A 100k-cell store of 3 x 196 x 196 float16 tiles is 23 GB on disk: more than this machine's memory. Each
stage runs in a fresh subprocess that samples its own /proc/self/status every 10 ms and reports, at the end,
its peaks and ``resource.getrusage``'s ``ru_maxrss``:

1. ``write_store``: TileStoreWriter fed 256 tiles at a time (as the tiling stage does);
2. ``stream_batches``: one training epoch of shuffled batches from the memmap through phenossl's loader
   (``TileBatches``), each batch turned into two morphology views as the trainer does (no model: its memory
   does not depend on the number of cells);
3. ``embed``: ``embed_store`` (the product's embedding entry point) of every cell with a randomly
   initialised ResNet18, written to a memory-mapped .npy;
4. ``cluster_umap``: ``EmbeddingSpace`` of the 100k x 512 embeddings, K-Means at k = 10 and 20, UMAP.

Two kinds of resident memory are told apart. ``RssAnon`` is memory the process owns (arrays, tensors,
model): what must stay bounded. ``RssFile`` is file pages (the memmap) that the process has touched and the
kernel keeps mapped while memory is free: page cache, dropped under pressure, so it can grow up to the free
memory without anything running out. ``ru_maxrss`` (and psutil's RSS) count both.

    .venv/bin/python benchmarks/memory_100k.py                 # needs ~25 GB free in --cache-dir
    .venv/bin/python benchmarks/memory_100k.py --tile-size 96  # ~5.5 GB, when disk is tight
    .venv/bin/python benchmarks/memory_100k.py --smoke --out /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import StudyRecord, apply_threads, log, study_parser

STUDY = "memory_100k"
STAGES = ("write_store", "stream_batches", "embed", "cluster_umap")
CHUNK = 256
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


class MemorySampler:
    """Peaks of this process's VmRSS / RssAnon / RssFile (MiB), read from /proc/self/status in a thread, and
    of the resident pages of the data files it maps (tiles.npy, embeddings.npy; from /proc/self/smaps, less
    often: RssFile also counts shared libraries, hundreds of MiB for torch)."""

    def __init__(self, interval: float = 0.01, smaps_every: int = 25):
        self.interval = interval
        self.smaps_every = smaps_every
        self.peaks = {name: 0.0 for name in (*STATUS_FIELDS, "data_files")}
        self._ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for name, value in read_status().items():
            self.peaks[name] = max(self.peaks[name], value)
        if self._ticks % self.smaps_every == 0:
            self.peaks["data_files"] = max(self.peaks["data_files"], data_file_rss())
        self._ticks += 1


DATA_FILES = ("tiles.npy", "embeddings.npy")


def data_file_rss() -> float:
    """MiB of this process's resident pages that map the store's tiles or the embeddings (Linux)."""
    total_kb, counting = 0, False
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                first = line.split(maxsplit=1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    counting = line.rstrip().endswith(DATA_FILES)
                elif counting and first == "Rss:":
                    total_kb += int(line.split()[1])
    except OSError:
        return 0.0
    return total_kb / 1024


def read_status() -> dict[str, float]:
    """{field: MiB} from /proc/self/status (Linux); psutil's RSS elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        import psutil

        return {"VmRSS": psutil.Process().memory_info().rss / 2**20}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in STATUS_FIELDS:
            values[name] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values


# --- stages (each runs in its own process) ------------------------------------------------------------------------


def stage_write_store(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the store 256 tiles at a time; tiles are a random chunk, rescaled per chunk (cheap, all different)."""
    import pandas as pd

    from phenossl.tiles.store import TileStoreWriter

    rng = np.random.default_rng(0)
    base = rng.random((CHUNK, args.channels, args.tile_size, args.tile_size), dtype=np.float32)
    chunk = np.empty_like(base)
    writer = TileStoreWriter(work / "store", args.cells, [f"ch{i}" for i in range(args.channels)], args.tile_size,
                             overwrite=True)
    for index, start in enumerate(range(0, args.cells, CHUNK)):
        count = min(CHUNK, args.cells - start)
        np.multiply(base, 0.5 + (index % 97) / 97, out=chunk)
        writer.append(chunk[:count])
    store = writer.finish(pd.DataFrame({"label": np.arange(args.cells)}), {"source": "synthetic (memory benchmark)"})
    del writer
    return {"store_bytes": int(store.tiles.nbytes)}


def stage_stream_batches(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One shuffled epoch through phenossl's loader, two morphology views per batch (as the trainer makes them)."""
    import torch

    from phenossl.augment.pipeline import Augmenter
    from phenossl.augment.specs import load_composition
    from phenossl.tiles.store import TileStore
    from phenossl.train.loader import TileBatches

    store = TileStore(work / "store")
    batches = TileBatches(store.tiles, args.batch_size, torch.device("cpu"), seed=0)
    augment = Augmenter(load_composition("morphology"), args.resolution)
    generator = torch.Generator().manual_seed(0)
    n_batches = 0
    for batch in batches.epoch(0):
        x = batch.float()
        augment(x, generator), augment(x, generator)
        n_batches += 1
    return {"batches": n_batches, "batch_size": batches.batch_size, "cells_read": n_batches * batches.batch_size}


def stage_embed(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """embed_store with a randomly initialised ResNet18 saved as a phenossl checkpoint."""
    import torch

    from phenossl.config import TrainConfig
    from phenossl.embed import embed_store
    from phenossl.tiles.store import TileStore
    from phenossl.train.checkpoint import save_checkpoint
    from phenossl.methods.build import build_model

    store = TileStore(work / "store")
    config = TrainConfig(method="mocov2", encoder="resnet18", resolution=args.resolution, device="cpu")
    torch.manual_seed(0)
    model, _ = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells)
    checkpoint = work / "checkpoint.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "train_config": config.model_dump(mode="json"),
                                 "in_channels": len(store.channel_names), "num_samples": store.n_cells})
    del model
    embeddings = embed_store(store, checkpoint, work / "embeddings.npy", batch_size=args.batch_size, device="cpu")
    return {"embeddings_shape": list(embeddings.shape), "embeddings_bytes": int(embeddings.nbytes)}


def stage_cluster_umap(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """EmbeddingSpace + K-Means (k = 10, 20) + UMAP on the memory-mapped embeddings, timed step by step."""
    from phenossl.cluster import EmbeddingSpace

    embeddings = np.load(work / "embeddings.npy", mmap_mode="r")
    seconds = {}
    start = time.perf_counter()
    space = EmbeddingSpace(embeddings)
    seconds["prepare"] = time.perf_counter() - start
    for k in (10, 20):
        start = time.perf_counter()
        space.cluster(k, seed=0)
        seconds[f"kmeans_k{k}"] = time.perf_counter() - start
    if not args.smoke:  # UMAP's first call compiles with numba for ~30 s
        start = time.perf_counter()
        space.umap(seed=0)
        seconds["umap"] = time.perf_counter() - start
    return {"seconds": seconds, "n_cells": space.n_cells, "dims": space.n_dims}


STAGE_FUNCTIONS = {"write_store": stage_write_store, "stream_batches": stage_stream_batches,
                   "embed": stage_embed, "cluster_umap": stage_cluster_umap}


def measure_stage(stage: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage under the sampler: its time, memory peaks and details."""
    start = time.perf_counter()
    with MemorySampler() as sampler:
        details = STAGE_FUNCTIONS[stage](work, args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "stage": stage, "seconds": time.perf_counter() - start,
        "peak_rss_anon_mib": sampler.peaks["RssAnon"], "peak_rss_file_mib": sampler.peaks["RssFile"],
        "peak_data_file_rss_mib": sampler.peaks["data_files"], "peak_rss_mib": sampler.peaks["VmRSS"],
        "ru_maxrss_mib": usage.ru_maxrss / 1024, "details": details,
    }


# --- parent ----------------------------------------------------------------------------------------------------------


def run_stage_in_subprocess(stage: str, work: Path, argv: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--work", str(work), *argv]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def check_disk(work: Path, needed: int) -> None:
    free = shutil.disk_usage(work).free
    if free < needed * 1.1 + 2 * 2**30:
        raise SystemExit(f"{work} has {free / 2**30:.1f} GiB free; the store needs {needed / 2**30:.1f} GiB. "
                         "Free some space, point --cache-dir elsewhere, or use a smaller --tile-size (and say so).")


def stage_argv(args: argparse.Namespace) -> list[str]:
    """The settings a child needs, as command-line options."""
    return ["--cells", str(args.cells), "--tile-size", str(args.tile_size), "--channels", str(args.channels),
            "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
            *(["--threads", str(args.threads)] if args.threads else [])]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--tile-size", type=int, default=196)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32,
                        help="view size for streaming and embedding (32 keeps the CPU embedding pass to minutes; "
                             "memory per batch grows with it but not with the number of cells)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep-store", action="store_true", help="do not delete the store and embeddings at the end")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke and args.stage is None:
        args.cells, args.tile_size = 600, 48
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    apply_threads(args)
    if args.stage is not None:  # child process: one stage, one JSON line
        print(json.dumps(measure_stage(args.stage, args.work, args)))
        return None
    record = StudyRecord(STUDY, args, None, argv)
    work = args.cache_dir / f"memory-{args.cells}x{args.channels}x{args.tile_size}"
    work.mkdir(parents=True, exist_ok=True)
    store_bytes = args.cells * args.channels * args.tile_size**2 * 2
    check_disk(work, store_bytes)
    stages = {}
    try:
        for stage in STAGES:
            log(f"stage {stage} ({args.cells} cells, {args.tile_size} px)")
            in_process = args.smoke and stage != STAGES[0]  # smoke: one subprocess is enough to test the path
            stages[stage] = (measure_stage(stage, work, args) if in_process
                             else run_stage_in_subprocess(stage, work, stage_argv(args)))
            stages[stage]["own_process"] = not in_process
            s = stages[stage]
            log(f"    {s['seconds']:.0f} s; peak anon {s['peak_rss_anon_mib']:.0f} MiB, data files "
                f"{s['peak_data_file_rss_mib']:.0f} MiB, all file pages {s['peak_rss_file_mib']:.0f} MiB, "
                f"ru_maxrss {s['ru_maxrss_mib']:.0f} MiB")
    finally:
        if not args.keep_store:
            shutil.rmtree(work, ignore_errors=True)
    settings = {"cells": args.cells, "tile_size": args.tile_size, "channels": args.channels, "dtype": "float16",
                "store_gib": store_bytes / 2**30, "embeddings_mib": args.cells * 512 * 4 / 2**20,
                "view_resolution": args.resolution, "batch_size": args.batch_size,
                "sampling": "/proc/self/status every 10 ms in each stage's own process"}
    notes = [f"Store of {store_bytes / 2**30:.1f} GiB on disk in {work} (deleted afterwards)."]
    return record.finish(settings, {"stages": stages}, notes)


if __name__ == "__main__":
    main()
