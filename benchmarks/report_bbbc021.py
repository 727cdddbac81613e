"""Study 13a: what do the clusters of the dev plates' morphology, context and dual runs follow? (BBBC021 crops)

Three runs of the shipped example (``examples/bbbc021_crops.yaml``: MoCo v2 / ResNet18, 20 epochs at 32 px,
k = 2, cosine space standardised to each plate's DMSO cells), made with ``phenossl run``'s own pipeline and
differing only in the training compositions: ``morphology`` (the default), ``context``, and the dual loss
(w = 0.5, morphology + context). Each run gets ``phenossl report`` (what its clusters and its embedding follow:
the crops have no field, so density and border distance are reported as not available; nucleus area, stain
levels, plate / well / site, compound and dose are scored), and two pairs get ``phenossl compare``: context ->
morphology, and morphology -> dual. Run folders are kept in the cache and reused when their configuration is
unchanged; the reports' PNGs are copied to docs/images.

    .venv/bin/python benchmarks/report_bbbc021.py --threads 1
    .venv/bin/python benchmarks/report_bbbc021.py --smoke --out /tmp/r.json   # 1 epoch, 400 cells
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench_common import (
    REPO_ROOT,
    StudyRecord,
    apply_threads,
    log,
    require_data,
    resolve_device,
    study_parser,
)
from quality_bbbc021 import DEFAULT_RUN, write_subset

STUDY = "report_bbbc021"
RUNS = {  # name -> train settings over the default run's
    "morphology": {},
    "context": {"composition_a": "context"},
    "dual": {"composition_a": "morphology", "composition_b": "context", "weight_a": 0.5},
}
PAIRS = (("context", "morphology"), ("morphology", "dual"))
LABEL_COLUMNS = ["compound", "concentration_uM"]
IMAGES = REPO_ROOT / "docs" / "images"


def run_config(name: str, data: Path, work: Path, device, smoke: bool):
    from phenossl.config import apply_overrides, load_config

    config = load_config(DEFAULT_RUN)
    crops, table = require_data(data, "bbbc021-crops") / "crops.npz", data / "bbbc021-crops" / "cells.csv"
    if smoke:
        crops, table = write_subset(crops, table, work / "subset-400", 400)
    overrides = [f"train.{key}={value}" for key, value in RUNS[name].items()]
    overrides += [f"train.device={device}", f"output.dir={work / name}", f"name=bbbc021-{name}"]
    if smoke:
        overrides += ["train.epochs=1"]
    config = apply_overrides(config, overrides)
    config.input.paths, config.input.crops_csv = [crops], table
    config.cluster.label_columns = LABEL_COLUMNS
    return config


def made_already(config) -> bool:
    """The run folder holds a finished run made with this very configuration (reused, not trained again)."""
    from phenossl.pipeline import RunPaths, load_run_config

    paths = RunPaths(config.run_dir())
    if not (paths.config.is_file() and paths.clusters.is_file()):
        return False
    saved = load_run_config(paths).model_dump(mode="json")
    wanted = config.model_dump(mode="json")
    for dump in (saved, wanted):
        dump.pop("output", None)
        dump["train"].pop("device", None)
    return saved == wanted


def main(argv: list[str] | None = None) -> dict:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv)
    from phenossl.pipeline import run_pipeline
    from phenossl.report import run_report
    from phenossl.report.compare_run import compare_run_folders

    work = args.cache_dir / ("report-runs-smoke" if args.smoke else "report-runs")
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"runs": {}, "comparisons": {}}
    folders = {}
    for name in RUNS:
        config = run_config(name, args.data, work, device, args.smoke)
        folders[name] = config.run_dir()
        start = time.perf_counter()
        reused = made_already(config)
        if not reused:
            config.output.overwrite = True
            run_pipeline(config)
        seconds = round(time.perf_counter() - start, 1)
        report = run_report(folders[name], overwrite=True)
        log(f"{name}: {report.reading}")
        results["runs"][name] = {"seconds": seconds, "reused": reused, "reading": report.reading,
                                 "title": report.title, "table": report.table.to_dict(orient="records")}
        if not args.smoke:
            shutil.copyfile(folders[name] / "report.png", IMAGES / f"report_bbbc021_{name}.png")
    for a, b in PAIRS:
        diff = compare_run_folders(folders[a], folders[b], out=work / "comparisons", overwrite=True)
        log(f"{b} vs {a}: {diff.reading}")
        results["comparisons"][f"{a} -> {b}"] = {
            "reading": diff.reading, "ami": diff.comparison.ami, "n_changed": diff.comparison.n_changed,
            "n_cells": diff.comparison.n_cells, "differences": diff.differences,
            "contingency": {str(k): {str(c): int(v) for c, v in row.items()}
                            for k, row in diff.contingency.to_dict(orient="index").items()},
            "variables": diff.variables.to_dict(orient="records")}
        if not args.smoke:
            shutil.copyfile(diff.written[2], IMAGES / f"compare_bbbc021_{a}_{b}.png")
    settings = {"default_run": str(DEFAULT_RUN.relative_to(REPO_ROOT)), "runs": RUNS, "pairs": PAIRS,
                "label_columns": LABEL_COLUMNS, "smoke": args.smoke}
    return record.finish(settings, results)


if __name__ == "__main__":
    main()
