"""Study 1: does training beat measuring the cells? BBBC021 crops, DMSO vs cycloheximide, five plates.

The default run (``examples/bbbc021_crops.yaml``: phenossl's default ``morphology`` composition, 20 epochs at
32 px, 8-16 minutes of training on 2 shared CPU cores) against what needs no training: CellProfiler's
measurements of each nucleus (``cp_measure``, phenossl's ``representation: cellprofiler``), each stain's mean intensity alone (on
these plates one stain's level separates the compounds better than anything else measured so far), the same
encoder untrained, and raw pixels; and against the compositions phenossl shipped before (``morphology-jitter``,
the paper's, which jitters the stain levels away) and the ``context`` pair. Three seeds for the rows a claim
rests on (the default, the previous default, the untrained encoder; the seed also moves K-Means).

Every representation is scored by ``phenossl.evaluate`` against the compound, in each of phenossl's clustering
spaces (``cosine``, the default, and ``standardize``), as clustered and with each plate standardised to its
own DMSO cells (``--controls``): K-Means AMI within each of the two plates holding both compounds (refitted
per plate, so no plate effect can help), pooled AMI, and 1-NN balanced accuracy leaving one plate out. A row's
figure is its best over those four spaces, so no representation is judged in a space that does not suit it.
The issue's target: the default run's within-plate AMI >= 1.25 x the cp_measure baseline's and >= the best
single stain's, and its 1-NN balanced accuracy >= cp_measure's (``results.target``).

    .venv/bin/python benchmarks/quality_bbbc021.py --device cpu --threads 2      # about 2 hours
    .venv/bin/python benchmarks/quality_bbbc021.py --smoke --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import (
    REPO_ROOT,
    StudyRecord,
    apply_threads,
    log,
    mean_sd,
    require_data,
    resolve_device,
    study_parser,
)

STUDY = "quality_bbbc021"
CHANNELS = ["DNA", "actin", "tubulin"]  # channel 0 is DAPI; 1 / 2 order is undocumented upstream
DEFAULT_RUN = REPO_ROOT / "examples" / "bbbc021_crops.yaml"  # "the default run": the shipped example
LABEL, WITHIN, CONTROLS = "compound", "plate", "compound=DMSO"
SPACES = ("cosine", "standardize")
SPACE_VARIANTS = tuple(f"{space}/{norm}" for space in SPACES for norm in ("as clustered", "to controls"))
MIXED_PLATE_MIN = 20  # a plate counts as "both compounds present" with at least this many cells of each
CROP_NOTE = (
    "The crops are 68 px and tight around the cell: the nucleus' equivalent diameter is ~33 px (classical "
    "segmentation of DAPI, the store's own masks). The `morphology` preset's centre crop is `auto`: about three "
    "nucleus diameters, capped at 1/sqrt(2) of the side so that a 360-degree rotation never shows the empty "
    "corners: 0.707 here (48 px). The paper's `morphology-jitter` keeps 0.5 (34 px, less than a nucleus), so "
    "its row uses 0.7 (`morphology-jitter crop 0.7`), the crop the previous version of this study argued for."
)


# --- the rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One trained row: the default run's training with another composition (None: the default's own)."""

    name: str
    group: str
    composition_a: str | None = None
    composition_b: str = "context"
    weight_a: float = 1.0
    crop: float | None = None  # override the centre crop fraction of composition_a
    seeds: int = 3


TRAINED = [
    RunSpec("phenossl default", "default"),
    RunSpec("morphology-jitter crop 0.7 (the previous default)", "compositions", "morphology-jitter", crop=0.7),
    RunSpec("context", "compositions", "context", seeds=1),
    RunSpec("context-jitter (the paper's)", "compositions", "context-jitter", seeds=1),
]


def composition(name: str, crop: float | None = None):
    from phenossl.augment.specs import load_composition

    comp = load_composition(name)
    if crop is None:
        return comp
    transforms = tuple(t.model_copy(update={"fraction": crop}) if t.kind == "center_crop" else t
                       for t in comp.transforms)
    return comp.model_copy(update={"name": f"{name} crop {crop:g}", "transforms": transforms})


def default_run(smoke: bool = False):
    """The shipped example's run configuration (the default run), trimmed to one short epoch for smoke runs."""
    from phenossl.config import load_config

    config = load_config(DEFAULT_RUN)
    if smoke:
        config.train.epochs, config.train.resolution, config.train.batch_size = 1, 32, 32
    return config


def train_config(spec: RunSpec, base, device):
    update: dict[str, Any] = {"device": str(device)}
    if spec.composition_a is not None:
        update.update(composition_a=composition(spec.composition_a, spec.crop),
                      composition_b=composition(spec.composition_b), weight_a=spec.weight_a)
    return base.train.model_copy(update=update)


# --- data ----------------------------------------------------------------------------------------------


def stratified_subset(cells: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` cells keeping every (plate, compound) group's share (smoke runs)."""
    rng = np.random.default_rng(seed)
    picked = []
    for _, group in cells.groupby(["plate", "compound"]):
        take = max(8, round(n * len(group) / len(cells)))
        picked.append(rng.choice(group.index.to_numpy(), size=min(take, len(group)), replace=False))
    return np.sort(np.concatenate(picked))


def crops_store(data_dir: Path, cache_dir: Path, max_cells: int | None):
    """The tile store of the crops, built once with phenossl's own importer and reused from the cache."""
    from phenossl.config import InputConfig, TileConfig
    from phenossl.tiles.build import build_store_from_crops
    from phenossl.tiles.store import TileStore

    folder = require_data(data_dir, "bbbc021-crops")
    crops, table = folder / "crops.npz", folder / "cells.csv"
    stamp = f"{crops.stat().st_size}-{crops.stat().st_mtime_ns}-{max_cells}"
    store_path = cache_dir / f"bbbc021-crops-store-{hashlib.sha1(stamp.encode()).hexdigest()[:10]}"
    if (store_path / "store.yaml").is_file() and (store_path / "masks.npy").is_file():
        return TileStore(store_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if max_cells is not None:
        crops, table = write_subset(crops, table, cache_dir / f"bbbc021-subset-{max_cells}", max_cells)
    log(f"building the tile store {store_path}")
    config = InputConfig(kind="crops", paths=[crops], crops_csv=table, channel_names=CHANNELS)
    return build_store_from_crops(config, store_path, tiles=TileConfig(percentiles=(0.5, 99.5)), overwrite=True)


def write_subset(crops: Path, table: Path, folder: Path, n: int) -> tuple[Path, Path]:
    """A stratified subset of the crops as .npy + CSV, so that the small store goes through the same importer."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = pd.read_csv(table)
    index = stratified_subset(cells, n, seed=0)
    with np.load(crops) as archive:
        np.save(folder / "crops.npy", archive["crops"][index])
    subset = cells.iloc[index].drop(columns=["crop_index"]).reset_index(drop=True)
    subset.to_csv(folder / "cells.csv", index=False)
    return folder / "crops.npy", folder / "cells.csv"


def mixed_plates(cells: pd.DataFrame) -> list[str]:
    """Plates holding at least MIXED_PLATE_MIN cells of each compound."""
    counts = cells.groupby(["plate", "compound"]).size().unstack(fill_value=0)
    least = min(MIXED_PLATE_MIN, max(2, len(cells) // 50))  # smoke subsets are small
    return sorted(str(p) for p, row in counts.iterrows() if (row >= least).all())


# --- evaluation ------------------------------------------------------------------------------------------


def evaluate(embeddings: np.ndarray, cells: pd.DataFrame, seeds: int = 5) -> dict[str, dict]:
    """phenossl.evaluate's figures in every space variant: ``{"cosine/as clustered": {...}, ...}``."""
    from phenossl.evaluate import EvaluationSettings, evaluate_embeddings

    out = {}
    for space in SPACES:
        settings = EvaluationSettings(label=LABEL, within=WITHIN, controls=CONTROLS, seeds=seeds, preprocessing=space)
        for to_controls in (False, True):
            result = evaluate_embeddings(embeddings, cells, settings, to_controls=to_controls)
            out[f"{space}/{'to controls' if to_controls else 'as clustered'}"] = result.as_row()
    return out


# --- representations that need no training ----------------------------------------------------------------


def cellprofiler_features(store, workers: int = 2) -> tuple[np.ndarray, dict]:
    """phenossl's ``representation: cellprofiler``: cp_measure on each tile's central-nucleus mask (15 min on 2
    cores for these cells), kept beside the benchmark's tile store so the dose-response study measures once."""
    from phenossl.measure import measure_store

    cache = store.path.with_name(store.path.name + "-cellprofiler.npz")
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if len(saved["features"]) == store.n_cells:
            return saved["features"], json.loads(str(saved["report"]))
    measurements = measure_store(store, workers=workers)
    features, _names, report = measurements.features()
    report = {**measurements.report, **report}
    partial = cache.with_name(cache.name + ".partial.npz")
    np.savez(partial, features=features, report=json.dumps(report))
    partial.replace(cache)  # whole or absent: a study stopped mid-write never leaves a cache that loads wrong
    return features, report


def stain_means(tiles: np.ndarray) -> np.ndarray:
    """(N, C) mean intensity of each stain over the whole tile (the normalised store), chunked."""
    return np.concatenate([np.asarray(tiles[s : s + 1024], dtype=np.float32).mean(axis=(2, 3))
                           for s in range(0, len(tiles), 1024)])


def raw_pixel_features(tiles: np.ndarray, block: int = 4) -> np.ndarray:
    """The tile itself, averaged over block x block pixels: what K-Means finds with no representation."""
    n, c, s, _ = tiles.shape
    cut = s - s % block
    out = []
    for start in range(0, n, 512):
        chunk = np.asarray(tiles[start:start + 512, :, :cut, :cut], dtype=np.float32)
        out.append(chunk.reshape(len(chunk), c, cut // block, block, cut // block, block).mean(axis=(3, 5))
                   .reshape(len(chunk), -1))
    return np.concatenate(out)


def embed(model, config, tiles, view: str, average: str = "none") -> np.ndarray:
    from phenossl.embed import embed_tiles, embedding_view

    return embed_tiles(model, tiles, embedding_view(config, view, average), batch_size=256)


def untrained_embeddings(store, base, seed: int, device) -> np.ndarray:
    """The default run's encoder, untrained (phenossl's ``representation: random-init``), seen the same way."""
    import torch

    from phenossl.methods.build import build_model
    from phenossl.train.trainer import resolve_for_store

    torch.manual_seed(seed)
    config = resolve_for_store(base.train.model_copy(update={"device": str(device)}), store)
    model, _ = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells)
    model.to(device).eval()
    return embed(model, config, store.tiles, base.embed.view, base.embed.average)


def baselines(store, base, seeds: int, device, workers: int) -> tuple[list[dict], dict]:
    """One record per baseline row (deterministic features: one record, K-Means seeds inside evaluate)."""
    records = []
    start = time.perf_counter()
    cp, cp_report = cellprofiler_features(store, workers)
    log(f"CellProfiler features {cp.shape} in {time.perf_counter() - start:.0f} s")
    features = {"CellProfiler (cp_measure)": cp}
    means = stain_means(store.tiles)
    for index, name in enumerate(store.channel_names):
        features[f"{name} mean intensity alone"] = means[:, [index]]
    features["the three stain means"] = means
    features["raw pixels (4x4 blocks)"] = raw_pixel_features(store.tiles)
    for name, matrix in features.items():
        group = "stains" if "mean" in name else "baselines"
        records.append({"name": name, "group": group, "seed": 0, "status": "ok", "n_features": int(matrix.shape[1]),
                        "scores": evaluate(matrix, store.cells)})
    for seed in range(seeds):
        records.append({"name": "untrained encoder (random-init)", "group": "baselines", "seed": seed,
                        "status": "ok", "scores": evaluate(untrained_embeddings(store, base, seed, device), store.cells)})
    return records, {"cellprofiler": cp_report}


# --- trained rows ------------------------------------------------------------------------------------------


def run_trained(spec: RunSpec, seed: int, store, base, work: Path, device) -> dict:
    """Train one row with one seed as the default run would, embed every cell its way, evaluate."""
    from phenossl.embed import load_trained_model
    from phenossl.errors import CollapseError, DivergedError

    config = train_config(spec, base, device)
    record: dict[str, Any] = {**asdict(spec), "seed": seed}
    start = time.perf_counter()
    try:
        checkpoint, history, reused = train_or_reuse(store, config, run_folder(work, spec, seed), seed)
    except (CollapseError, DivergedError) as error:
        record.update(status=type(error).__name__, error=str(error).split(". ")[0],
                      train_seconds=round(time.perf_counter() - start, 1))
        return record
    record["train_seconds"] = history.get("train_seconds") if reused else round(time.perf_counter() - start, 1)
    record["final_loss"] = history["final_loss"]
    model, trained = load_trained_model(checkpoint, device=str(device))
    record["composition"] = trained.composition_a.model_dump(mode="json")  # 'auto' crops resolved
    record["scores"] = evaluate(embed(model, trained, store.tiles, base.embed.view, base.embed.average), store.cells)
    record["status"] = "ok"
    return record


def train_or_reuse(store, config, run_dir: Path, seed: int) -> tuple[Path, dict, bool]:
    """Train ``config`` with ``seed`` into ``run_dir``, or reuse the checkpoint already there when it was made with
    exactly this configuration, seed and store (phenossl's training is reproducible on a CPU: the same model
    again), so the dose-response study can score the models this study trained. Returns (checkpoint,
    {final_loss, train_seconds}, reused)."""
    from phenossl.train import train
    from phenossl.train.checkpoint import load_checkpoint
    from phenossl.train.trainer import resolve_for_store

    done = run_dir / "trained.json"
    wanted = {"train_config": resolve_for_store(config, store).model_dump(mode="json"), "seed": seed,
              "store": str(store.path), "n_cells": store.n_cells}
    wanted["train_config"].pop("device")
    if done.is_file() and (run_dir / "checkpoint.pt").is_file():
        saved = json.loads(done.read_text())
        if saved["settings"] == wanted and load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == config.epochs - 1:
            log(f"    reusing {run_dir} (trained with the same settings)")
            return run_dir / "checkpoint.pt", saved, True
    start = time.perf_counter()
    result = train(store, config, run_dir, seed=seed)
    summary = {"final_loss": float(result.history["loss"].iloc[-1]),
               "train_seconds": round(time.perf_counter() - start, 1), "settings": wanted}
    done.write_text(json.dumps(summary))
    return result.checkpoint, summary, False


def run_folder(work: Path, spec: RunSpec, seed: int) -> Path:
    """Where a trained row's model is kept (the dose-response study finds the same models here)."""
    return work / f"{_slug(spec.name)}-seed{seed}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


# --- summary -------------------------------------------------------------------------------------------------

FIGURES = ("ami_within_mean", "knn_balanced_accuracy", "ami_mean")


def summarise(records: list[dict], plates: list[str]) -> dict[str, dict]:
    """Per row: mean +- sd over seeds of each figure in each space variant, the per-plate AMI, and the row's
    best (the space variant with the highest mean within-plate AMI; 1-NN: its own best variant)."""
    rows: dict[str, dict] = {}
    for record in records:
        row = rows.setdefault(record["name"], {"group": record["group"], "seeds": [], "failed": [], "values": []})
        if record["status"] != "ok":
            row["failed"].append({"seed": record["seed"], "status": record["status"]})
            continue
        row["seeds"].append(record["seed"])
        row["values"].append(record["scores"])
    for name, row in rows.items():
        values = row.pop("values")
        row["spaces"] = {
            variant: {**{f: mean_sd([v[variant][f] for v in values]) for f in FIGURES},
                      "per_plate": {p: mean_sd([v[variant].get(f"ami_within[{p}]") for v in values]) for p in plates}}
            for variant in SPACE_VARIANTS} if values else {}
        if values:
            best = max(SPACE_VARIANTS, key=lambda v: row["spaces"][v]["ami_within_mean"]["mean"])
            knn_best = max(SPACE_VARIANTS, key=lambda v: row["spaces"][v]["knn_balanced_accuracy"]["mean"])
            row["best"] = {"space": best, "ami_within": row["spaces"][best]["ami_within_mean"],
                           "knn_space": knn_best, "knn": row["spaces"][knn_best]["knn_balanced_accuracy"]}
        seconds = [r["train_seconds"] for r in records if r["name"] == name and r.get("train_seconds")]
        row["train_seconds_mean"] = round(float(np.mean(seconds)), 1) if seconds else None
    return rows


def target(summary: dict) -> dict:
    """The issue's target, from the rows' best figures: the default run against cp_measure and the stains."""
    default = summary["phenossl default"]["best"]
    cp = summary["CellProfiler (cp_measure)"]["best"]
    stains = {k: v["best"]["ami_within"]["mean"] for k, v in summary.items() if v["group"] == "stains" and "best" in v}
    best_stain = max(stains, key=stains.get)
    checks = {
        "within-plate AMI >= 1.25 x cp_measure's": default["ami_within"]["mean"] >= 1.25 * cp["ami_within"]["mean"],
        "within-plate AMI >= the best single stain's": default["ami_within"]["mean"] >= stains[best_stain],
        "1-NN balanced accuracy >= cp_measure's": default["knn"]["mean"] >= cp["knn"]["mean"],
    }
    return {"default_ami_within": default["ami_within"]["mean"], "cp_ami_within": cp["ami_within"]["mean"],
            "ratio_to_cp": default["ami_within"]["mean"] / cp["ami_within"]["mean"],
            "best_stain": best_stain, "best_stain_ami_within": stains[best_stain],
            "default_knn": default["knn"]["mean"], "cp_knn": cp["knn"]["mean"],
            "checks": checks, "met": all(checks.values())}


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the rows a claim rests on")
    parser.add_argument("--workers", type=int, default=2, help="processes measuring the CellProfiler features")
    parser.add_argument("--max-cells", type=int, default=None, help="a stratified subset (smoke)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows already finished with the same settings (kept in the cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv)
    base = default_run(args.smoke)
    max_cells = args.max_cells or (96 if args.smoke else None)
    store = crops_store(args.data, args.cache_dir, max_cells)
    plates = mixed_plates(store.cells)
    seeds = 1 if args.smoke else args.seeds
    settings = {
        "default_run": str(DEFAULT_RUN.relative_to(REPO_ROOT)), "train": base.train.model_dump(mode="json"),
        "embed": base.embed.model_dump(mode="json"), "n_cells": store.n_cells, "tile_size": store.tile_size,
        "nucleus_diameter_px": store.nucleus_diameter, "max_cells": max_cells, "seeds": seeds,
        "label": LABEL, "within": WITHIN, "controls": CONTROLS, "spaces": list(SPACE_VARIANTS),
        "kmeans": "k = 2 (the number of compounds), phenossl.evaluate: 5 K-Means seeds per embedding",
        "knn": "1-NN, leave one plate out, balanced accuracy",
        "cells_per_plate_compound": {f"{p} / {c}": int(n) for (p, c), n in
                                     store.cells.groupby(["plate", "compound"]).size().items()},
        "mixed_plates": plates, "crop_note": CROP_NOTE,
    }
    log(f"{store.n_cells} cells; default run {base.train.epochs} epochs at {base.train.resolution} px on {device}")
    partial = PartialResults(args.cache_dir / f"{STUDY}-partial-{_settings_key(settings)}.jsonl", args.resume)
    if partial.baselines is None:
        baseline_records, reports = baselines(store, base, seeds, device, args.workers)
        partial.save_baselines(baseline_records, reports)
    else:
        baseline_records, reports = partial.baselines, partial.reports
    runs = []
    specs = TRAINED[:1] if args.smoke else TRAINED
    jobs = [(spec, seed) for seed in range(seeds) for spec in specs if seed < min(spec.seeds, seeds)]
    for index, (spec, seed) in enumerate(jobs, start=1):
        done = partial.run(spec.name, seed)
        if done is None:
            log(f"[{index}/{len(jobs)}] {spec.name} seed {seed}")
            done = run_trained(spec, seed, store, base, args.cache_dir / "quality-runs", device)
            partial.save_run(done)
            _log_run(done)
        runs.append(done)
    summary = summarise(runs + baseline_records, plates)
    results = {"runs": runs, "baselines": baseline_records, "reports": reports, "summary": summary,
               "target": target(summary),
               "train_seconds_total": round(sum(r.get("train_seconds", 0) for r in runs), 1)}
    return record.finish(settings, results, [CROP_NOTE])


def _log_run(record: dict) -> None:
    if record["status"] != "ok":
        log(f"    {record['status']}: {record.get('error', '')}")
        return
    best = max(record["scores"].items(), key=lambda kv: kv[1]["ami_within_mean"])
    log(f"    {record['train_seconds']:.0f} s; best within-plate AMI {best[1]['ami_within_mean']:.3f} ({best[0]}), "
        f"1-NN {best[1]['knn_balanced_accuracy']:.3f}")


def _settings_key(settings: dict) -> str:
    keys = ("train", "embed", "max_cells", "n_cells")
    return hashlib.sha1(json.dumps({k: settings[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:10]


class PartialResults:
    """Finished rows appended to a JSON-lines file, so a study stopped after hours resumes (--resume)."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.runs: dict[tuple[str, int], dict] = {}
        self.baselines: list[dict] | None = None
        self.reports: dict = {}
        if resume and path.is_file():
            for line in path.read_text().splitlines():
                item = json.loads(line)
                if item["kind"] == "baselines":
                    self.baselines, self.reports = item["records"], item["reports"]
                else:
                    self.runs[(item["record"]["name"], item["record"]["seed"])] = item["record"]
            log(f"resuming: {len(self.runs)} runs already done ({path})")
        elif path.exists():
            path.unlink()

    def run(self, name: str, seed: int) -> dict | None:
        return self.runs.get((name, seed))

    def save_run(self, record: dict) -> None:
        self._append({"kind": "run", "record": record})

    def save_baselines(self, records: list[dict], reports: dict) -> None:
        self._append({"kind": "baselines", "records": records, "reports": reports})

    def _append(self, item: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(item, default=float) + "\n")


if __name__ == "__main__":
    main()
