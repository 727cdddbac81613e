"""How much the UMAP layout loses by being fitted on a sample: trustworthiness on real cells.

Above ``UMAP_MAX_FIT`` cells phenossl fits UMAP on a seeded sample and places the other cells with
umap-learn's transform (fast, cacheable numba code; see umap_speed.py). This study scores the 2-D layout of
the BBBC021 crops' CellProfiler measurements (standardised, 50 principal components) both ways with
scikit-learn's trustworthiness (how many of each cell's 2-D neighbours are true neighbours; 1 = all).

    .venv/bin/python benchmarks/umap_quality.py            # reuses quality_bbbc021.py's cached measurements
    .venv/bin/python benchmarks/umap_quality.py --smoke --out /tmp/q.json
"""

from __future__ import annotations

import time

import numpy as np
from bench_common import StudyRecord, apply_threads, blob_embeddings, log, study_parser

STUDY = "umap_quality"
NEIGHBOURS = 15


def real_features(args) -> tuple[np.ndarray, str]:
    """The crops' cp_measure features, measured (15 min) or read from quality_bbbc021.py's cache."""
    from quality_bbbc021 import cellprofiler_features, crops_store

    store = crops_store(args.data, args.cache_dir, None)
    features, _ = cellprofiler_features(store)
    return features, f"BBBC021 crops ({store.n_cells} cells), cp_measure features"


def prepared(features: np.ndarray, components: int = 50) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = np.nan_to_num(np.asarray(features, dtype=np.float64))
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    return PCA(min(components, x.shape[1]), random_state=0).fit_transform(x).astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    from sklearn.manifold import trustworthiness

    from phenossl.cluster.projection import UMAP_MAX_FIT, umap_embedding

    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    apply_threads(args)
    record = StudyRecord(STUDY, args, None, argv)
    if args.smoke:
        features, source, max_fit = blob_embeddings(500, 20, n_groups=8), "synthetic blobs (smoke)", 200
    else:
        features, source = real_features(args)
        max_fit = UMAP_MAX_FIT
    x = prepared(features)
    rows = {}
    for name, fit in (("fitted on a sample", max_fit), ("fitted on every cell", len(x))):
        started = time.perf_counter()
        layout = umap_embedding(x, seed=0, max_fit=fit)
        seconds = time.perf_counter() - started
        score = float(trustworthiness(x, layout, n_neighbors=NEIGHBOURS))
        rows[name] = {"max_fit": int(fit), "seconds": round(seconds, 2), "trustworthiness": round(score, 4)}
        log(f"{name} ({fit} cells): trustworthiness {score:.4f} in {seconds:.1f} s")
    settings = {"source": source, "cells": len(x), "dims": int(x.shape[1]), "neighbours": NEIGHBOURS, "seed": 0}
    return record.finish(settings, rows)


if __name__ == "__main__":
    main()
