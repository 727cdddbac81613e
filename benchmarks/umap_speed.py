"""Study 3d: how long the first UMAP layout takes in a fresh process, before and after the speed-ups.

A biologist's first layout of a session pays numba compiling umap-learn and pynndescent. Every measurement
here runs in its own new process (``--child``), so that nothing compiled earlier in this study helps it,
with NUMBA_CACHE_DIR pointing at a folder of this study's own:

- ``cold``: an empty numba cache (the first start on a machine, or after upgrading umap-learn);
- ``cached``: the cache the previous process of the same implementation filled (every later start);
- ``warm_up``: ``warm_up_umap`` first, as the napari plugin does in a worker when it starts (timed apart),
  then the layout; on an empty cache and on a filled one.

``before`` is phenossl's layout as it was (umap-learn called directly, fitted on up to 20k cells: its
small-data exact search or pynndescent, its transform); ``after`` is ``phenossl.cluster.umap_embedding`` now
(disk cache for all of umap-learn's compiled functions, a sample of at most 4095 cells, exact neighbours
from scikit-learn, the vectorised start of placed cells). Sizes: the sample plate's (544 cells; 512-d like
real embeddings), 100k cells at 64-d, and 100k at 512-d (``after`` only: ``--before-sizes``). Data are
seeded Gaussian blobs. Each child reports wall and CPU seconds, its peak resident memory, and a hash of the
layout (the same seed must give the same layout in every process).

    .venv/bin/python benchmarks/umap_speed.py
    .venv/bin/python benchmarks/umap_speed.py --smoke --out /tmp/u.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import StudyRecord, blob_embeddings, log, study_parser

STUDY = "umap_speed"
IMPLEMENTATIONS = ("before", "after")


def layout_before(features: np.ndarray, seed: int, max_fit: int = 20_000) -> np.ndarray:
    """phenossl's umap_embedding before this study (commit b533986): umap-learn as it comes, 20k fitted."""
    import warnings

    import umap

    from phenossl.cluster.kmeans import seeded_subsample

    n_cells = features.shape[0]
    fit_index = seeded_subsample(n_cells, max_fit, seed) if n_cells > max_fit else None
    n_fit = n_cells if fit_index is None else fit_index.size
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n_fit - 1), min_dist=0.1, random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*", category=UserWarning)
        if fit_index is None:
            return np.asarray(reducer.fit_transform(features), dtype=np.float32)
        reducer.fit(features[fit_index])
        xy = np.empty((n_cells, 2), dtype=np.float32)
        xy[fit_index] = reducer.embedding_
        rest = np.setdiff1d(np.arange(n_cells), fit_index, assume_unique=True)
        for start in range(0, rest.size, 50_000):
            chunk = rest[start : start + 50_000]
            xy[chunk] = reducer.transform(features[chunk])
    return xy


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would keep the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One fresh process: optionally the warm-up, then the first layout (and, if asked, a second one)."""
    started = time.perf_counter()
    from phenossl.cluster import projection

    features = blob_embeddings(args.cells, args.dims)
    result: dict[str, Any] = {"import_phenossl_s": time.perf_counter() - started}
    if args.warm_up:
        wall, cpu = time.perf_counter(), time.process_time()
        projection.warm_up_umap()
        result["warm_up_s"] = time.perf_counter() - wall
        result["warm_up_cpu_s"] = time.process_time() - cpu

    def layout() -> np.ndarray:
        if args.impl == "before":
            return layout_before(features, 0, args.before_max_fit)
        return projection.umap_embedding(features, seed=0, max_fit=args.max_fit)

    wall, cpu = time.perf_counter(), time.process_time()
    xy = layout()  # includes importing umap-learn (and, for "after", turning its disk cache on)
    result["first_layout_s"] = time.perf_counter() - wall
    result["first_layout_cpu_s"] = time.process_time() - cpu
    if args.again:
        wall = time.perf_counter()
        again = layout()
        result["second_layout_s"] = time.perf_counter() - wall
        result["second_equals_first"] = bool(np.array_equal(again, xy))
    result["finite"] = bool(np.isfinite(xy).all())
    result["layout_sha256"] = hashlib.sha256(np.ascontiguousarray(xy).tobytes()).hexdigest()[:16]
    result["numba_cache_dir"] = os.environ.get("NUMBA_CACHE_DIR")
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_child(impl: str, cells: int, dims: int, args: argparse.Namespace, cache_dir: Path, *,
              warm_up: bool = False, again: bool = False) -> dict[str, Any]:
    """The child's report, plus the wall time of the whole process (interpreter start included)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--impl", impl, "--cells", str(cells),
               "--dims", str(dims), "--max-fit", str(args.max_fit), "--before-max-fit", str(args.before_max_fit)]
    command += ["--warm-up"] * warm_up + ["--again"] * again
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"child {' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


def scenarios(smoke: bool) -> list[tuple[str, str, dict[str, bool]]]:
    """(name, implementation, options) in the order they run; a "cached" one reuses the cache its "cold"
    partner just filled."""
    if smoke:
        return [("before_cold", "before", {}), ("after_cold", "after", {}),
                ("after_cached_warm_up", "after", {"warm_up": True, "again": True})]
    return [
        ("before_cold", "before", {}),
        ("before_cached", "before", {"again": True}),
        ("after_cold", "after", {}),
        ("after_cached", "after", {}),
        ("after_cached_warm_up", "after", {"warm_up": True, "again": True}),
        ("after_cold_warm_up", "after", {"warm_up": True}),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--sizes", nargs="+", default=["544x512", "100000x64", "100000x512"],
                        help="CELLSxDIMS of each data set (default: the sample plate's size, and 100k cells)")
    parser.add_argument("--before-sizes", nargs="*", default=["544x512", "100000x64"],
                        help="the sizes that also get the 'before' rows (slow: minutes each at 100k)")
    parser.add_argument("--max-fit", type=int, default=None, help="cells fitted before the rest are placed "
                        "(default: phenossl's UMAP_MAX_FIT)")
    parser.add_argument("--before-max-fit", type=int, default=20_000, help="the same, for 'before' (20000 then)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dims", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_fit is None:
        from phenossl.cluster.projection import UMAP_MAX_FIT

        args.max_fit = UMAP_MAX_FIT
    if args.smoke and not args.child:
        args.sizes, args.before_sizes = ["300x8"], ["300x8"]
        args.max_fit = args.before_max_fit = 200  # 200 fitted, 100 placed: both paths, no 4096-cell search
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.threads:  # children inherit it: numba, OpenMP and BLAS threads
        for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return None
    record = StudyRecord(STUDY, args, None, argv)
    results: dict[str, Any] = {}
    scratch = args.cache_dir / "umap-speed-numba"
    for size in args.sizes:
        cells, dims = (int(part) for part in size.split("x"))
        rows = {}
        for name, impl, options in scenarios(args.smoke):
            if impl == "before" and size not in args.before_sizes:
                continue
            cache = scratch / f"{size}-{impl}" / ("cold-warm-up" if name == "after_cold_warm_up" else "shared")
            if name.endswith("cold") or name == "after_cold_warm_up":
                shutil.rmtree(cache, ignore_errors=True)  # an empty cache: nothing compiled before
            cache.mkdir(parents=True, exist_ok=True)
            rows[name] = run_child(impl, cells, dims, args, cache, **options)
            rows[name]["load_average"] = list(os.getloadavg())
            r = rows[name]
            warm = f"warm-up {r['warm_up_s']:.1f} s, then " if "warm_up_s" in r else ""
            log(f"{size} {name}: {warm}first layout {r['first_layout_s']:.1f} s ({r['first_layout_cpu_s']:.1f} s CPU), "
                f"process {r['process_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB")
        def ratio(before: str, after: str, key: str, rows: dict = rows) -> float | None:
            return rows[before][key] / rows[after][key] if before in rows and after in rows else None

        summary = {f"speedup_{kind}_{key}": ratio(f"before_{kind}", f"after_{kind}", key)
                   for kind in ("cold", "cached") for key in ("first_layout_s", "first_layout_cpu_s")}
        summary["after_same_layout_in_every_process"] = (
            len({row["layout_sha256"] for name, row in rows.items() if name.startswith("after")}) == 1)
        results[size] = {"scenarios": rows, "summary": summary}
        log(f"{size}: {summary}")
    shutil.rmtree(scratch, ignore_errors=True)
    settings = {"sizes": args.sizes, "before_sizes": args.before_sizes, "max_fit": args.max_fit,
                "before_max_fit": args.before_max_fit, "seed": 0, "n_neighbors": 15, "min_dist": 0.1,
                "data": "seeded Gaussian blobs (30 groups), float32",
                "scenarios": [name for name, _, _ in scenarios(args.smoke)],
                "threads": args.threads or "machine default (seeded UMAP is single-threaded anyway)"}
    notes = [("Each row is one fresh process; 'first_layout_s' includes importing umap-learn. The machine is shared: "
              "compare CPU seconds when the load average is high."),
             "'warm_up_s' is spent in a background worker while the user segments and trains, not waited for."]
    return record.finish(settings, results, notes)


if __name__ == "__main__":
    main()
