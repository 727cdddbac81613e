"""Study 1: do the paper's findings hold on real cells? BBBC021 crops, DMSO vs cycloheximide.

Protocol (Bendidi et al. 2024): train an SSL encoder with a given augmentation composition, embed every
cell, K-Means with k = 2 on the (standardised) embeddings, AMI of the clusters against the compound;
several seeds, mean +- sd. Because three of the five plates hold only DMSO, a clustering that
separates plates also scores against compound, so we also report:

- AMI against the plate (pooled), and AMI against compound *per plate* on the two plates that hold both
  compounds (K-Means refitted on that plate's cells alone: no plate effect can help there);
- 1-nearest-neighbour treatment accuracy with leave-one-plate-out (each plate's cells are labelled by
  their nearest cell on the *other* plates), plus balanced accuracy (DMSO is 72 % of the cells).

Rows: the `context` and `morphology` compositions, a morphology variant whose centre crop suits 68 px
crops (see CROP_NOTE), the dual loss w * L_morphology + (1 - w) * L_context at w = 0.25 / 0.5 / 0.75,
an ablation adding transforms one at a time, other methods and encoders, and baselines that need no
SSL training (hand-crafted CellProfiler-style features, raw pixels, randomly initialised encoders,
ImageNet encoders when their weights are on this machine).

    .venv/bin/python benchmarks/quality_bbbc021.py                 # the CPU grid (hours)
    .venv/bin/python benchmarks/quality_bbbc021.py --grid full     # every method x encoder (GPU) -> *_full.json
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
from bench_common import StudyRecord, apply_threads, log, mean_sd, require_data, resolve_device, study_parser

STUDY = "quality_bbbc021"
CHANNELS = ["DNA", "actin", "tubulin"]  # channel 0 is DAPI; 1 / 2 order is undocumented upstream
MIXED_PLATE_MIN = 20  # a plate counts as "both compounds present" with at least this many cells of each
CROP_NOTE = (
    "The crops are 68 px and tight around the cell: the nucleus' equivalent diameter is ~36 px (10-90 %: "
    "30-47 px, Otsu on DAPI). The morphology preset's centre crop of 0.5 (made for 196 px tiles, where it "
    "keeps 98 px around the nucleus) keeps 34 px here, less than a median nucleus: views show the nucleus' "
    "inside only, no nuclear border and no cytoplasm. We add 'morphology-crop0.7' (0.7 x 68 = 48 px, the "
    "largest fraction <= 1/sqrt(2) that never shows the empty corners of a 360-degree rotation) and use it "
    "in the dual loss and the ablation; the preset is kept as a row. This choice was made from the cell size, "
    "before any result."
)


# --- compositions ------------------------------------------------------------------------------------


def with_center_crop(composition, fraction: float, name: str):
    """A copy of ``composition`` whose centre crop keeps ``fraction`` of the side."""
    transforms = tuple(t.model_copy(update={"fraction": fraction}) if t.kind == "center_crop" else t
                       for t in composition.transforms)
    return composition.model_copy(update={"name": name, "transforms": transforms})


def prefix(composition, n: int, name: str):
    """The first ``n`` transforms of ``composition``: the ablation adds them one at a time."""
    return composition.model_copy(update={"name": name, "transforms": composition.transforms[:n]})


def without(composition, kind: str, name: str):
    return composition.model_copy(
        update={"name": name, "transforms": tuple(t for t in composition.transforms if t.kind != kind)})


def build_compositions() -> dict:
    """Every composition a row may use, by name (the morphology preset's order: rotation, centre crop,
    intensity, flips, so its prefixes are the paper's Figure-8 style ablation)."""
    from phenossl.augment.specs import load_composition

    context = load_composition("context")
    morphology = load_composition("morphology")
    morph70 = with_center_crop(morphology, 0.7, "morphology-crop0.7")
    kinds = [t.kind for t in morph70.transforms]
    assert kinds == ["rotation", "center_crop", "intensity", "flip"], kinds
    return {
        "context": context,
        "morphology": morphology,
        "morphology-crop0.7": morph70,
        "none": prefix(morph70, 0, "none"),
        "rotation": prefix(morph70, 1, "rotation"),
        "rotation+crop0.7": prefix(morph70, 2, "rotation+crop0.7"),
        "rotation+crop0.7+intensity": prefix(morph70, 3, "rotation+crop0.7+intensity"),
        "context-no-random-crop": without(context, "random_crop", "context-no-random-crop"),
    }


# --- the grid ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One table row: what is trained. Weight 1 trains composition_a alone."""

    name: str
    group: str
    composition_a: str
    composition_b: str = "context"
    weight_a: float = 1.0
    method: str = "mocov2"
    encoder: str = "resnet18"


MAIN = [
    RunSpec("context", "compositions", "context"),
    RunSpec("morphology (preset, crop 0.5)", "compositions", "morphology"),
    RunSpec("morphology-crop0.7", "compositions", "morphology-crop0.7"),
    RunSpec("dual w=0.25", "compositions", "morphology-crop0.7", "context", 0.25),
    RunSpec("dual w=0.5", "compositions", "morphology-crop0.7", "context", 0.5),
    RunSpec("dual w=0.75", "compositions", "morphology-crop0.7", "context", 0.75),
]
ABLATION = [
    RunSpec("none", "ablation", "none"),
    RunSpec("+rotation", "ablation", "rotation"),
    RunSpec("+centre crop 0.7", "ablation", "rotation+crop0.7"),
    RunSpec("+intensity", "ablation", "rotation+crop0.7+intensity"),
    # "+flips" is morphology-crop0.7 itself (a MAIN row)
    RunSpec("context without random crop", "ablation", "context-no-random-crop"),
    # "+random crop" is context itself (a MAIN row)
]
METHOD_ROWS = [RunSpec(f"{m} morphology-crop0.7", "methods", "morphology-crop0.7", method=m)
               for m in ("simclr", "byol", "vicreg")]
ENCODER_ROWS = [RunSpec("vgg13 morphology-crop0.7", "encoders", "morphology-crop0.7", encoder="vgg13")]


KEY_ROWS = ("context", "morphology-crop0.7", "dual w=0.5")  # every seed on a CPU; other rows get --extra-seeds


def grid_jobs(grid: str, main_seeds: int, extra_seeds: int) -> list[tuple[RunSpec, int]]:
    """(row, seed) in the order they run: every main row once before any second seed, so a study stopped
    early still has every row."""
    if grid == "smoke":
        return [(MAIN[4], 0)]  # the dual loss (both branches); every other row runs the same code
    if grid == "full":
        main = [RunSpec(f"{s.name} [{m}/{e}]", s.group, s.composition_a, s.composition_b, s.weight_a, m, e)
                for m in ("mocov2", "simclr", "byol", "vicreg", "gandl") for e in ("resnet18", "vgg13") for s in MAIN]
        return [(s, seed) for seed in range(main_seeds) for s in main + ABLATION]
    jobs = [(s, seed) for seed in range(main_seeds) for s in MAIN if s.name in KEY_ROWS or seed < extra_seeds]
    return jobs + [(s, seed) for seed in range(extra_seeds) for s in ABLATION + METHOD_ROWS + ENCODER_ROWS]


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
    if (store_path / "store.yaml").is_file():
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


# --- evaluation ------------------------------------------------------------------------------------------


def mixed_plates(cells: pd.DataFrame) -> list[str]:
    """Plates holding at least MIXED_PLATE_MIN cells of each compound."""
    counts = cells.groupby(["plate", "compound"]).size().unstack(fill_value=0)
    least = min(MIXED_PLATE_MIN, max(2, len(cells) // 50))  # smoke subsets are small
    return sorted(str(p) for p, row in counts.iterrows() if (row >= least).all())


def evaluate(embeddings: np.ndarray, cells: pd.DataFrame, seed: int) -> dict[str, Any]:
    """K-Means (k = 2) AMI pooled and per mixed plate, and leave-one-plate-out 1-NN, on one embedding."""
    from phenossl.cluster import EmbeddingSpace, ami
    from phenossl.cluster.kmeans import cluster_features

    space = EmbeddingSpace(embeddings, preprocessing="standardize")
    features = space.features
    compound, plate = cells["compound"].to_numpy(), cells["plate"].to_numpy()
    labels = space.cluster(2, seed=seed).labels
    metrics: dict[str, Any] = {"ami_compound": ami(compound, labels), "ami_plate": ami(plate, labels)}
    per_plate = {}
    for name in mixed_plates(cells):
        mask = plate == name
        plate_labels = cluster_features(np.ascontiguousarray(features[mask]), 2, seed=seed).labels
        per_plate[name] = ami(compound[mask], plate_labels)
    metrics["ami_compound_per_plate"] = per_plate
    metrics["ami_compound_within_plate_mean"] = float(np.mean(list(per_plate.values()))) if per_plate else None
    metrics.update(nearest_neighbour_lopo(features, compound, plate))
    return metrics


def nearest_neighbour_lopo(features: np.ndarray, compound: np.ndarray, plate: np.ndarray) -> dict[str, Any]:
    """1-NN compound prediction, each plate predicted from the other plates only (no plate can answer for
    the treatment). Accuracy and balanced accuracy over all held-out cells, and balanced accuracy on each
    plate that holds both compounds."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    predicted = np.empty(compound.shape, dtype=object)
    for name in np.unique(plate):
        test = plate == name
        classifier = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(features[~test], compound[~test])
        predicted[test] = classifier.predict(features[test])
    per_plate = {}
    for name in np.unique(plate):
        mask = plate == name
        if len(set(compound[mask])) > 1:
            per_plate[str(name)] = float(balanced_accuracy_score(compound[mask], predicted[mask]))
    return {
        "knn_accuracy": float(np.mean(predicted == compound)),
        "knn_balanced_accuracy": float(balanced_accuracy_score(compound, predicted)),
        "knn_balanced_accuracy_per_plate": per_plate,
    }


# --- SSL runs -------------------------------------------------------------------------------------------


def train_config(spec: RunSpec, compositions: dict, settings: dict, device):
    from phenossl.config import TrainConfig

    return TrainConfig(
        method=spec.method, encoder=spec.encoder,
        composition_a=compositions[spec.composition_a], composition_b=compositions[spec.composition_b],
        weight_a=spec.weight_a, epochs=settings["epochs"], batch_size=settings["batch_size"],
        resolution=settings["resolution"], lr=settings["lr"], device=str(device),
    )


def view_name(config, view: str) -> str:
    """What the encoder saw at embedding time, in words (the product's 'auto' depends on the weights)."""
    from phenossl.train.trainer import main_composition

    if view == "full":
        return "full tile"
    crops = [t.fraction for t in main_composition(config).transforms if t.kind == "center_crop" and t.p >= 0.5]
    return f"centre crop {np.prod(crops):g}" if crops else "full tile"


def embed_views(model, config, tiles, views=("auto", "full")) -> dict[str, np.ndarray]:
    from phenossl.embed import embed_tiles, embedding_view

    return {view: embed_tiles(model, tiles, embedding_view(config, view), batch_size=256) for view in views}


def run_ssl(spec: RunSpec, seed: int, store, compositions: dict, settings: dict, work: Path, device) -> dict:
    """Train one row with one seed, embed every cell two ways, evaluate. A collapse or divergence is a result."""
    from phenossl.embed import load_trained_model
    from phenossl.errors import CollapseError, DivergedError
    from phenossl.train import train

    config = train_config(spec, compositions, settings, device)
    run_dir = work / f"{_slug(spec.name)}-seed{seed}"
    record: dict[str, Any] = {**asdict(spec), "seed": seed}
    start = time.perf_counter()
    try:
        result = train(store, config, run_dir, seed=seed)
    except (CollapseError, DivergedError) as error:
        record.update(status=type(error).__name__, error=str(error).split(". ")[0],
                      train_seconds=round(time.perf_counter() - start, 1))
        return record
    record["train_seconds"] = round(time.perf_counter() - start, 1)
    record["final_loss"] = float(result.history["loss"].iloc[-1])
    model, config = load_trained_model(result.checkpoint, device=str(device))
    start = time.perf_counter()
    embeddings = embed_views(model, config, store.tiles)
    record["embed_seconds"] = round(time.perf_counter() - start, 1)
    record["status"] = "ok"
    record["views"] = {view: {"view": view_name(config, view), **evaluate(emb, store.cells, seed)}
                       for view, emb in embeddings.items()}
    return record


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


# --- baselines ---------------------------------------------------------------------------------------------


def handcrafted_features(tiles: np.ndarray) -> np.ndarray:
    """CellProfiler-style features per cell: nucleus shape (regionprops on an Otsu mask of DNA, the object
    under the tile centre or nearest it) and per-channel intensity statistics (whole tile, in and out of
    the nucleus)."""
    rows = [cell_features(np.asarray(tiles[i], dtype=np.float32)) for i in range(len(tiles))]
    return np.asarray(rows, dtype=np.float32)


SHAPE_PROPS = ("area", "perimeter", "eccentricity", "solidity", "extent", "axis_major_length",
               "axis_minor_length")


def cell_features(tile: np.ndarray) -> list[float]:
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    dna = tile[0]
    mask = nucleus_mask(dna, threshold_otsu, label, ndi)
    features: list[float] = []
    if mask.any():
        props = regionprops(mask.astype(np.uint8))[0]
        shape = [float(getattr(props, name)) for name in SHAPE_PROPS]
        shape.append(shape[1] ** 2 / (4 * np.pi * max(shape[0], 1.0)))  # 1 for a disc: irregularity
    else:
        shape = [0.0] * (len(SHAPE_PROPS) + 1)
    features += shape
    for channel in tile:
        inside = channel[mask].mean() if mask.any() else 0.0
        outside = channel[~mask].mean() if (~mask).any() else 0.0
        features += [channel.mean(), channel.std(), *np.percentile(channel, [10, 50, 90]), inside, outside]
    return features


def nucleus_mask(dna: np.ndarray, threshold_otsu, label, ndi) -> np.ndarray:
    """The Otsu foreground object under the tile centre, else the one whose centroid is nearest it."""
    if dna.max() <= dna.min():
        return np.zeros(dna.shape, dtype=bool)
    objects = label(ndi.binary_fill_holes(dna > threshold_otsu(dna)))
    centre = (dna.shape[0] // 2, dna.shape[1] // 2)
    chosen = objects[centre]
    if chosen == 0 and objects.max() > 0:
        centroids = ndi.center_of_mass(np.ones_like(dna), objects, range(1, objects.max() + 1))
        distances = [np.hypot(y - centre[0], x - centre[1]) for y, x in centroids]
        chosen = int(np.argmin(distances)) + 1
    return objects == chosen if chosen else np.zeros(dna.shape, dtype=bool)


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


def random_encoder_embeddings(encoder: str, seed: int, store, compositions: dict, settings: dict, device,
                              weights: Path | None = None) -> dict[str, np.ndarray]:
    """Embeddings from an untrained encoder (random, or ImageNet weights), through the same views as the
    trained ones: the full tile and the morphology-crop0.7 centre crop."""
    import torch

    from phenossl.train.trainer import build_model

    torch.manual_seed(seed)
    spec = RunSpec("baseline", "baselines", "morphology-crop0.7", encoder=encoder)
    config = train_config(spec, compositions, settings, device)
    model, _ = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells)
    if weights is not None:
        from phenossl.models import load_encoder_weights

        load_encoder_weights(model.encoder, weights)
    model.to(device).eval()
    return embed_views(model, config, store.tiles)


def run_baselines(store, compositions: dict, settings: dict, seeds: list[int], device,
                  encoders: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """Every baseline row (one record per seed: the seed drives K-Means, and the init of random encoders)."""
    from phenossl.models.encoders import find_local_imagenet_weights

    records, skipped = [], []
    start = time.perf_counter()
    features = {"hand-crafted (CellProfiler-style)": handcrafted_features(store.tiles),
                "raw pixels (4x4 blocks)": raw_pixel_features(store.tiles)}
    log(f"hand-crafted and raw-pixel features in {time.perf_counter() - start:.0f} s")
    for name, matrix in features.items():
        for seed in seeds:
            records.append({"name": name, "group": "baselines", "seed": seed, "status": "ok",
                            "n_features": int(matrix.shape[1]),
                            "views": {"auto": {"view": "whole tile", **evaluate(matrix, store.cells, seed)}}})
    for encoder in encoders:
        for seed in seeds:
            embeddings = random_encoder_embeddings(encoder, seed, store, compositions, settings, device)
            records.append(_encoder_record(f"random-init {encoder}", seed, embeddings, store))
        weights = find_local_imagenet_weights(encoder)
        if weights is None:
            skipped.append(f"ImageNet-initialised {encoder}: no local weights (looked for torchvision's file "
                           "in torch.hub's cache; phenossl never downloads). Put the .pth file there to add it.")
            continue
        for seed in seeds[:1]:  # deterministic encoder: the seed only moves K-Means
            embeddings = random_encoder_embeddings(encoder, seed, store, compositions, settings, device, weights)
            records.append(_encoder_record(f"ImageNet {encoder}", seed, embeddings, store))
    return records, skipped


def _encoder_record(name: str, seed: int, embeddings: dict[str, np.ndarray], store) -> dict:
    views = {"auto": "centre crop 0.7", "full": "full tile"}
    return {"name": name, "group": "baselines", "seed": seed, "status": "ok",
            "views": {view: {"view": views[view], **evaluate(emb, store.cells, seed)}
                      for view, emb in embeddings.items()}}


# --- summary -------------------------------------------------------------------------------------------------

SUMMARY_METRICS = ("ami_compound", "ami_plate", "ami_compound_within_plate_mean", "knn_accuracy",
                   "knn_balanced_accuracy")


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per row and view: mean +- sd over seeds of each headline metric, and the per-plate values."""
    rows: dict[str, dict] = {}
    for record in records:
        row = rows.setdefault(record["name"], {"group": record["group"], "seeds": [], "failed": [], "views": {}})
        if record["status"] != "ok":
            row["failed"].append({"seed": record["seed"], "status": record["status"]})
            continue
        row["seeds"].append(record["seed"])
        for view, metrics in record["views"].items():
            row["views"].setdefault(view, {"view": metrics["view"], "values": []})["values"].append(metrics)
    for row in rows.values():
        for view in row["views"].values():
            values = view.pop("values")
            for metric in SUMMARY_METRICS:
                view[metric] = mean_sd([v[metric] for v in values if v.get(metric) is not None])
            for key in ("ami_compound_per_plate", "knn_balanced_accuracy_per_plate"):
                plates = sorted({p for v in values for p in v[key]})
                view[key] = {p: mean_sd([v[key][p] for v in values if p in v[key]]) for p in plates}
    for name, row in rows.items():
        seconds = [r["train_seconds"] for r in records if r["name"] == name and r.get("train_seconds")]
        row["train_seconds_mean"] = round(float(np.mean(seconds)), 1) if seconds else None
    return rows


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("cpu", "full"), default="cpu",
                        help="cpu: MoCo v2 / ResNet18 for every composition, a few other methods and VGG13 once; "
                             "full: every composition x method x encoder (meant for a GPU)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds of the key rows (context, morphology-crop0.7, dual w=0.5; every main row with "
                             "--grid full)")
    parser.add_argument("--extra-seeds", type=int, default=1, help="seeds of the other rows (CPU grid)")
    parser.add_argument("--max-cells", type=int, default=None, help="train on a stratified subset (smoke)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the runs already finished with the same settings (kept in the cache)")
    return parser.parse_args(argv)


def study_settings(args: argparse.Namespace) -> dict[str, Any]:
    smoke = args.smoke
    epochs = args.epochs or (1 if smoke else 2 if args.grid == "cpu" else 30)
    return {
        "grid": "smoke" if smoke else args.grid,
        "epochs": epochs,
        "resolution": args.resolution or (32 if smoke else 32 if args.grid == "cpu" else 64),
        "batch_size": args.batch_size or (32 if smoke else 64 if args.grid == "cpu" else 128),
        "lr": args.lr,
        "optimizer": "adamw, 1 warm-up epoch then cosine (phenossl defaults)",
        "main_seeds": 1 if smoke else args.seeds,
        "extra_seeds": 1 if smoke else args.extra_seeds,
        "max_cells": args.max_cells or (96 if smoke else None),
        "kmeans": "k = 2 on standardised embeddings (phenossl EmbeddingSpace), seeded with the run's seed",
        "knn": "1-NN (Euclidean, standardised embeddings), leave-one-plate-out",
        "views": {"auto": "phenossl's embedding view: the main composition's centre crop (none for context)",
                  "full": "the whole tile resized to the training resolution"},
        "crop_note": CROP_NOTE,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    name = STUDY if args.grid == "cpu" else f"{STUDY}_full"
    record = StudyRecord(STUDY, args, device, argv, result_name=name)
    settings = study_settings(args)
    compositions = build_compositions()
    cache = args.cache_dir
    store = crops_store(args.data, cache, settings["max_cells"])
    settings.update(n_cells=store.n_cells, tile_size=store.tile_size, store=str(store.path),
                    cells_per_plate_compound={f"{p} / {c}": int(n) for (p, c), n in
                                              store.cells.groupby(["plate", "compound"]).size().items()},
                    mixed_plates=mixed_plates(store.cells),
                    compositions={name: comp.model_dump(mode="json") for name, comp in compositions.items()})
    log(f"{store.n_cells} cells, settings: epochs {settings['epochs']}, {settings['resolution']} px, "
        f"batch {settings['batch_size']}, device {device}")

    partial = PartialResults(cache / f"{STUDY}-partial-{_settings_key(settings)}.jsonl", args.resume)
    baseline_seeds = list(range(settings["main_seeds"]))
    encoders = ("resnet18",) if args.smoke else ("resnet18", "vgg13")
    if partial.baselines is None:
        baselines, skipped = run_baselines(store, compositions, settings, baseline_seeds, device, encoders)
        partial.save_baselines(baselines, skipped)
    else:
        baselines, skipped = partial.baselines, partial.skipped
    runs = []
    work = cache / "quality-runs"
    jobs = grid_jobs(settings["grid"], settings["main_seeds"], settings["extra_seeds"])
    for index, (spec, seed) in enumerate(jobs, start=1):
        done = partial.run(spec.name, seed)
        if done is None:
            log(f"[{index}/{len(jobs)}] {spec.name} seed {seed}")
            done = run_ssl(spec, seed, store, compositions, settings, work, device)
            partial.save_run(done)
            _log_run(done)
        runs.append(done)
    results = {"runs": runs, "baselines": baselines, "skipped": skipped,
               "summary": summarise(runs + baselines),
               "train_seconds_total": round(sum(r.get("train_seconds", 0) for r in runs), 1)}
    notes = [CROP_NOTE, *skipped]
    if device.type == "cpu" and settings["grid"] == "cpu":
        notes.append("CPU grid: MoCo v2 / ResNet18 for every composition; SimCLR, BYOL, VICReg and VGG13 on "
                     "morphology-crop0.7 only. The full method x encoder grid (--grid full) needs a GPU.")
    return record.finish(settings, results, notes)


def _log_run(record: dict) -> None:
    if record["status"] != "ok":
        log(f"    {record['status']}: {record.get('error', '')}")
        return
    auto = record["views"]["auto"]
    log(f"    {record['train_seconds']:.0f} s; AMI compound {auto['ami_compound']:.3f} plate {auto['ami_plate']:.3f}"
        f" within-plate {auto['ami_compound_within_plate_mean'] or float('nan'):.3f}; "
        f"1-NN bal. acc. {auto['knn_balanced_accuracy']:.3f}")


def _settings_key(settings: dict) -> str:
    keys = ("grid", "epochs", "resolution", "batch_size", "lr", "max_cells", "n_cells")
    return hashlib.sha1(json.dumps({k: settings[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:10]


class PartialResults:
    """Finished runs appended to a JSON-lines file, so a study stopped after hours resumes (--resume)."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.runs: dict[tuple[str, int], dict] = {}
        self.baselines: list[dict] | None = None
        self.skipped: list[str] = []
        if resume and path.is_file():
            for line in path.read_text().splitlines():
                item = json.loads(line)
                if item["kind"] == "baselines":
                    self.baselines, self.skipped = item["records"], item["skipped"]
                else:
                    self.runs[(item["record"]["name"], item["record"]["seed"])] = item["record"]
            log(f"resuming: {len(self.runs)} runs already done ({path})")
        elif path.exists():
            path.unlink()

    def run(self, name: str, seed: int) -> dict | None:
        return self.runs.get((name, seed))

    def save_run(self, record: dict) -> None:
        self._append({"kind": "run", "record": record})

    def save_baselines(self, records: list[dict], skipped: list[str]) -> None:
        self._append({"kind": "baselines", "records": records, "skipped": skipped})

    def _append(self, item: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(item, default=float) + "\n")


if __name__ == "__main__":
    main()
