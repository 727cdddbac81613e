"""Study 3d: million-cell clustering in bounded memory: phenossl's K-Means (k = 20) on 1M x 512 embeddings against
scikit-learn's K-Means on all cells and faiss's, with the 100k rows beside them; nearest-to-centroid cells and
the UMAP layout (fitted on a seeded sample, the other cells placed on it) of the product path.

The embeddings are synthetic (20 Gaussian groups in 512 dimensions whose centres are close next to the noise, so
that the methods can differ), written once as a memory-mapped .npy (2 GiB at 1M cells), as ``embeddings.npy`` is in
a run folder. Each row runs in a fresh process that samples its own /proc/self/status (``MemorySampler`` of
study 3c) and reports its wall time and its peak owned memory (``RssAnon``; the memory-mapped file's pages are
page cache, see study 3c):

- ``phenossl``: ``EmbeddingSpace`` (z-score) + ``space.cluster(20)``: the product path (labels, centroids,
  distances, nearest cells), timed apart from preparing the space;
- ``sklearn-all``: ``sklearn.cluster.KMeans(n_init=1)`` fitted on every cell of the same z-scored space;
- ``faiss``: ``faiss.Kmeans`` (its default: trained on a sample of 256 cells per centroid, then every cell
  assigned), when faiss is installed;
- ``phenossl-umap``: the product's UMAP layout of every cell.

Quality: AMI of each row's labels against the groups the data were drawn from, and against ``sklearn-all``'s.

    .venv/bin/python benchmarks/clustering_1m.py                      # 100k and 1M cells (~5 GiB free disk)
    .venv/bin/python benchmarks/clustering_1m.py --smoke --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import StudyRecord, log, study_parser
from memory_100k import MemorySampler

STUDY = "clustering_1m"
ROWS = ("phenossl", "sklearn-all", "faiss", "phenossl-umap")
DIMS, GROUPS, K = 512, 20, 20
CHUNK = 65_536


def write_embeddings(path: Path, n_cells: int, seed: int = 0) -> None:
    """``n_cells`` x 512 float32 rows from 20 Gaussian groups (unit noise, centres 0.35 sd apart per dimension),
    written in chunks to a .npy (never all in memory), and the group of each row beside it."""
    if path.is_file() and path.with_suffix(".groups.npy").is_file():
        return
    rng = np.random.default_rng(seed)
    centres = (rng.standard_normal((GROUPS, DIMS)) * 0.35).astype(np.float32)
    groups = rng.integers(0, GROUPS, n_cells)
    tmp = path.with_suffix(".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_cells, DIMS))
    for start in range(0, n_cells, CHUNK):
        stop = min(n_cells, start + CHUNK)
        out[start:stop] = centres[groups[start:stop]] + rng.standard_normal((stop - start, DIMS), dtype=np.float32)
    out.flush()
    del out
    np.save(path.with_suffix(".groups.npy"), groups)
    tmp.replace(path)


def row_phenossl(path: Path, work: Path) -> dict[str, Any]:
    from phenossl.cluster import EmbeddingSpace

    start = time.perf_counter()
    space = EmbeddingSpace(np.load(path, mmap_mode="r"))
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    clustering = space.cluster(K, seed=0)
    seconds = time.perf_counter() - start
    np.save(work / "labels-phenossl.npy", clustering.labels)
    listed = sum(len(v) for v in clustering.nearest.values())
    return {"seconds": {"prepare": prepared, "cluster": seconds}, "nearest_listed": listed}


def _standardised(path: Path) -> np.ndarray:
    from phenossl.cluster import EmbeddingSpace

    return np.asarray(EmbeddingSpace(np.load(path, mmap_mode="r")).features)


def row_sklearn_all(path: Path, work: Path) -> dict[str, Any]:
    from sklearn.cluster import KMeans

    features = _standardised(path)
    start = time.perf_counter()
    model = KMeans(n_clusters=K, n_init=1, algorithm="lloyd", random_state=0).fit(features)
    seconds = time.perf_counter() - start
    np.save(work / "labels-sklearn-all.npy", model.labels_)
    return {"seconds": {"cluster": seconds}, "iterations": int(model.n_iter_)}


def row_faiss(path: Path, work: Path) -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"skipped": "faiss is not installed (pip install faiss-cpu)"}
    features = _standardised(path)
    start = time.perf_counter()
    kmeans = faiss.Kmeans(DIMS, K, niter=20, seed=1, verbose=False)
    kmeans.train(features)
    labels = np.concatenate([kmeans.index.search(features[s : s + CHUNK], 1)[1][:, 0]
                             for s in range(0, len(features), CHUNK)])
    seconds = time.perf_counter() - start
    np.save(work / "labels-faiss.npy", labels)
    return {"seconds": {"cluster": seconds}, "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads()}


def row_phenossl_umap(path: Path, work: Path) -> dict[str, Any]:
    from phenossl.cluster import EmbeddingSpace

    space = EmbeddingSpace(np.load(path, mmap_mode="r"))
    start = time.perf_counter()
    layout = space.umap(seed=0)
    return {"seconds": {"umap": time.perf_counter() - start}, "finite": bool(np.isfinite(layout).all())}


ROW_FUNCTIONS = {"phenossl": row_phenossl, "sklearn-all": row_sklearn_all, "faiss": row_faiss,
                 "phenossl-umap": row_phenossl_umap}


def measure_row(row: str, path: Path, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with MemorySampler() as sampler:
        details = ROW_FUNCTIONS[row](path, work)
    return {"row": row, "wall_seconds": time.perf_counter() - start,
            "peak_rss_anon_mib": sampler.peaks["RssAnon"], "peak_rss_file_mib": sampler.peaks["RssFile"],
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **details}


def run_row(row: str, path: Path, work: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--row", row, "--path", str(path), "--work", str(work)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"row": row, "error": completed.stderr[-2000:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def agreement(work: Path, groups: np.ndarray, row: str) -> dict[str, float]:
    from sklearn.metrics import adjusted_mutual_info_score as ami

    labels_file = work / f"labels-{row}.npy"
    if not labels_file.is_file():
        return {}
    labels = np.load(labels_file)
    out = {"ami_vs_groups": float(ami(groups, labels))}
    reference = work / "labels-sklearn-all.npy"
    if reference.is_file() and row != "sklearn-all":
        out["ami_vs_sklearn_all"] = float(ami(np.load(reference), labels))
    return out


def main(argv: list[str] | None = None) -> dict | None:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--cells", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:  # a child: one row, its JSON on the last line
        print(json.dumps(measure_row(args.row, args.path, args.work), default=float))
        return None
    record = StudyRecord(STUDY, args, None, argv)
    sizes = [2000] if args.smoke else [int(n) for n in args.cells.split(",")]
    rows = args.rows.split(",")
    results = []
    for n_cells in sizes:
        work = args.cache_dir / f"clustering-{n_cells}"
        work.mkdir(parents=True, exist_ok=True)
        path = work / "embeddings.npy"
        write_embeddings(path, n_cells)
        groups = np.load(path.with_suffix(".groups.npy"))
        for row in sorted(rows, key=lambda r: r != "sklearn-all"):  # the reference first
            result = {"n_cells": n_cells, **run_row(row, path, work)}
            result.update(agreement(work, groups, row))
            log(f"{n_cells} cells, {row}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
                if k not in ("row", "n_cells", "error")) + (f" ERROR {result['error'][-300:]}" if "error" in result
                                                            else ""))
            results.append(result)
    settings = {"dims": DIMS, "k": K, "groups": GROUPS, "sizes": sizes, "rows": rows,
                "data": "synthetic: 20 Gaussian groups, unit noise, centres N(0, 0.35^2) per dimension, float32 .npy"}
    return record.finish(settings, {"rows": results})


if __name__ == "__main__":
    main()
