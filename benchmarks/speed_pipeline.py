"""Study 3b: the speed of the stages around training: segmentation, tiling, reclustering.

- Segmentation: fields per second of each backend that can run here, on the real 1024 x 1280 BBBC021
  DAPI field (classical always; cellpose only with local weights).
- Tiling: cells per second of ``cut_tiles`` alone (196 px tiles around every nucleus of the field), and of
  ``build_store_from_fields`` with the labels given (normalisation percentiles, two passes, float16 memmap
  writes: the whole tiling stage without segmentation) on 3-channel copies of the field.
- Reclustering: seconds for ``EmbeddingSpace.cluster`` at k = 10 and 20 on 10k and 100k cells of 512-d
  embeddings (what the user waits for when changing k), and the one-off ``EmbeddingSpace`` preparation.

Every timing is the median of several repeats in one process; the load average is recorded.

    .venv/bin/python benchmarks/speed_pipeline.py
    .venv/bin/python benchmarks/speed_pipeline.py --smoke --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import StudyRecord, apply_threads, blob_embeddings, log, median, require_data, study_parser

STUDY = "speed_pipeline"


def repeat_timing(fn, repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls (after ``warmup`` untimed ones: imports, caches) and the last result."""
    for _ in range(warmup):
        fn()
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def read_dapi_field(data_dir: Path, crop: int | None):
    """The real BBBC021 DAPI field through phenossl's reader (optionally its top-left crop x crop corner)."""
    from phenossl.io import discover_fields, read_field

    folder = require_data(data_dir, "bbbc021-fullfield-dapi")
    start = time.perf_counter()
    field = read_field(discover_fields(folder, channel_names={"w1": "DNA"})[0])
    read_seconds = time.perf_counter() - start
    image = field.image[0]
    return (image if crop is None else image[:crop, :crop]), read_seconds


def segmentation_speed(image: np.ndarray, repeats: int, device: str) -> dict[str, Any]:
    """Fields per second per backend; a backend without local weights is skipped, saying why."""
    from phenossl.errors import PhenosslError
    from phenossl.segment import segment_nuclei
    from phenossl.segment.cellpose_backend import DEFAULT_MODEL, resolve_weights

    results: dict[str, Any] = {}
    seconds, labels = repeat_timing(lambda: segment_nuclei(image, backend="classical"), repeats)
    results["classical"] = {"seconds": seconds, "fields_per_s": 1 / median(seconds), "nuclei": int(labels.max())}
    try:
        resolve_weights(DEFAULT_MODEL)
    except PhenosslError as error:
        results["cellpose"] = {"skipped": f"no local Cellpose weights: {str(error).splitlines()[0][:200]}"}
    else:
        segment_nuclei(image, backend="cellpose", device=device)  # loads the model once (cached)
        seconds, cp_labels = repeat_timing(lambda: segment_nuclei(image, backend="cellpose", device=device), repeats)
        results["cellpose"] = {"seconds": seconds, "fields_per_s": 1 / median(seconds),
                               "nuclei": int(cp_labels.max()), "device": device}
    return {"backends": results, "labels": labels}


def tiling_speed(image: np.ndarray, labels: np.ndarray, tile_size: int, n_fields: int, repeats: int,
                 scratch: Path) -> dict[str, Any]:
    """Cells per second of cut_tiles alone and of the whole tiling stage with given labels."""
    from phenossl.config import InputConfig, SegmentConfig, TileConfig
    from phenossl.tiles.build import FieldInput, build_store_from_fields
    from phenossl.tiles.extract import cut_tiles, nucleus_table

    field = np.repeat(image[None].astype(np.float32), 3, axis=0)  # DNA, as three channels (real pixels)
    nuclei = nucleus_table(labels)
    cut_seconds, cut = repeat_timing(lambda: cut_tiles(field, nuclei, size=tile_size, border="pad"), repeats)
    fields = [FieldInput.from_array(f"field{i}", field, ["DNA", "c2", "c3"], labels=labels) for i in range(n_fields)]

    def build():
        return build_store_from_fields(fields, scratch / "tiling-store", input_config=InputConfig(nuclear_channel=0),
                                       segmentation=SegmentConfig(), tiles=TileConfig(size=tile_size, border="pad"),
                                       overwrite=True)

    build_seconds, store = repeat_timing(build, repeats)
    n_cells = store.n_cells
    shutil.rmtree(scratch / "tiling-store", ignore_errors=True)
    return {
        "tile_size": tile_size, "channels": 3, "nuclei_per_field": len(nuclei),
        "cut_tiles": {"seconds": cut_seconds, "cells": len(cut.tiles),
                      "cells_per_s": len(cut.tiles) / median(cut_seconds)},
        "build_store_given_labels": {"seconds": build_seconds, "fields": n_fields, "cells": n_cells,
                                     "cells_per_s": n_cells / median(build_seconds)},
    }


def recluster_latency(sizes: list[int], dims: int, ks: list[int], repeats: int) -> dict[str, Any]:
    """Seconds to prepare the EmbeddingSpace once, then to recluster at each k (median of repeats, seeds vary)."""
    from phenossl.cluster import EmbeddingSpace

    results = {}
    for n_cells in sizes:
        embeddings = blob_embeddings(n_cells, dims)
        prepare_seconds, space = repeat_timing(lambda: EmbeddingSpace(embeddings), 1)
        space.cluster(ks[0], seed=0)  # untimed: first-call imports and thread pools
        per_k = {}
        for k in ks:
            seconds = []
            for seed in range(repeats):
                start = time.perf_counter()
                space.cluster(k, seed=seed)
                seconds.append(time.perf_counter() - start)
            per_k[str(k)] = {"seconds": seconds, "median_s": median(seconds)}
            log(f"recluster {n_cells} x {dims}, k={k}: {median(seconds):.2f} s")
        results[str(n_cells)] = {"dims": dims, "prepare_s": prepare_seconds[0], "k": per_k}
        del space, embeddings
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --smoke)")
    parser.add_argument("--tile-size", type=int, default=196)
    parser.add_argument("--tiling-fields", type=int, default=4, help="copies of the field in the tiling-stage run")
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 20])
    parser.add_argument("--dims", type=int, default=512)
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.tile_size, args.tiling_fields = 1, 64, 1
        args.sizes, args.ks, args.dims = [2000], [10], 64
    args.repeats = args.repeats or 5
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    record = StudyRecord(STUDY, args, None, argv)
    image, read_seconds = read_dapi_field(args.data, 512 if args.smoke else None)
    log(f"field {image.shape} read in {read_seconds:.2f} s")
    segmentation = segmentation_speed(image, args.repeats, args.device)
    labels = segmentation.pop("labels")
    log(f"segmentation: {segmentation['backends']['classical']['fields_per_s']:.2f} fields/s (classical)")
    scratch = args.cache_dir / "speed-pipeline-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    tiling = tiling_speed(image, labels, args.tile_size, args.tiling_fields, args.repeats, scratch)
    log(f"tiling: cut_tiles {tiling['cut_tiles']['cells_per_s']:.0f} cells/s, whole stage "
        f"{tiling['build_store_given_labels']['cells_per_s']:.0f} cells/s")
    recluster = recluster_latency(args.sizes, args.dims, args.ks, args.repeats)
    settings = {"repeats": args.repeats, "field_shape": list(image.shape), "field_read_s": read_seconds,
                "tile_size": args.tile_size, "tiling_fields": args.tiling_fields,
                "recluster": {"sizes": args.sizes, "dims": args.dims, "ks": args.ks,
                              "embeddings": "synthetic Gaussian blobs (30 groups), float32"}}
    notes = [v["skipped"] for v in segmentation["backends"].values() if "skipped" in v]
    return record.finish(settings, {"segmentation": segmentation, "tiling": tiling, "recluster": recluster}, notes)


if __name__ == "__main__":
    main()
