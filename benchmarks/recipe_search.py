"""Study: which training recipe makes self-supervised embeddings beat measuring the cells? (BBBC021 crops)

Every row trains phenossl's own trainer on the dev plates (../shared/data/bbbc021-crops, DMSO vs
cycloheximide, five plates), embeds every cell in several views (the main composition's centre crop, the
full tile, and their average over the 8 rotations / mirrors), and scores each embedding with
``phenossl.evaluate`` against the compound: K-Means AMI within each of the two plates that hold both
compounds, and 1-NN balanced accuracy leaving one plate out, in the space as clustered (global z-score)
and with each plate standardised to its own DMSO cells. Rows run in parallel worker processes under a
wall-clock budget, in priority order, so a short GPU loan still returns every row it reached.

    .venv/bin/python benchmarks/recipe_search.py --grid search --device cuda --workers 8 --budget 300
    .venv/bin/python benchmarks/recipe_search.py --grid paper --device cuda --budget 420
    .venv/bin/python benchmarks/recipe_search.py --grid cassle --seeds 3 --resolution 96 --epochs 60 --device cuda
    .venv/bin/python benchmarks/recipe_search.py --smoke --out /tmp/r.json
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from pathlib import Path

from bench_common import StudyRecord, log, resolve_device, study_parser

STUDY = "recipe_search"
LABEL, WITHIN, CONTROLS = "compound", "plate", "compound=DMSO"
VIEWS = (("auto", "none"), ("full", "none"), ("auto", "d4"))
SPACES = ("standardize", "cosine")  # phenossl's clustering spaces scored, each as clustered and to controls
CPU_EPOCH_SECONDS_64PX = 83  # measured: one epoch of MoCo v2 / ResNet18 at 64 px, batch 128, 2 CPU threads

# --- compositions --------------------------------------------------------------------------------------

ROT = {"kind": "rotation", "p": 1.0, "degrees": 180.0}
FLIP = {"kind": "flip", "p": 0.5}
BLUR = {"kind": "blur", "p": 0.5, "sigma": [0.1, 1.5]}
SCALE = {"kind": "affine", "p": 0.8, "translate": 0.05, "scale": [0.8, 1.25], "shear": 5.0}
JITTER = {"kind": "intensity", "p": 0.8, "brightness": 0.1, "contrast": 0.2, "gamma": [0.8, 1.25], "per_channel": True}
SHARED = {**JITTER, "per_channel": False}
WEAK = {**JITTER, "brightness": 0.03, "contrast": 0.05, "gamma": [0.95, 1.05]}


def crop(fraction: float) -> dict:
    return {"kind": "center_crop", "p": 1.0, "fraction": fraction}


def composition(name: str, *transforms: dict) -> dict:
    return {"name": name, "transforms": list(transforms)}


COMPOSITIONS = {
    "morphology-crop0.7": composition("morphology-crop0.7", ROT, crop(0.7), JITTER, FLIP),
    "geom": composition("geom", ROT, crop(0.7), FLIP),
    "geom+scale+blur": composition("geom+scale+blur", ROT, crop(0.7), SCALE, FLIP, BLUR),
    "geom+shared-jitter": composition("geom+shared-jitter", ROT, crop(0.7), SHARED, FLIP),
    "geom+shared-jitter+scale+blur": composition("geom+shared-jitter+scale+blur", ROT, crop(0.7), SCALE,
                                                 SHARED, FLIP, BLUR),
    "geom+weak-jitter+scale+blur": composition("geom+weak-jitter+scale+blur", ROT, crop(0.7), SCALE, WEAK,
                                               FLIP, BLUR),
    "geom+scale+blur crop0.85": composition("geom+scale+blur crop0.85", ROT, crop(0.85), SCALE, FLIP, BLUR),
    "geom+blur": composition("geom+blur", ROT, crop(0.7), FLIP, BLUR),
    "geom+scale": composition("geom+scale", ROT, crop(0.7), SCALE, FLIP),
    "geom+scale+blur no crop": composition("geom+scale+blur no crop", ROT, SCALE, FLIP, BLUR),
    "geom+scale+blur crop0.5": composition("geom+scale+blur crop0.5", ROT, crop(0.5), SCALE, FLIP, BLUR),
    "context without jitter": composition("context without jitter", FLIP, {**ROT, "multiples_of_90": True},
                                          {"kind": "affine", "p": 0.5, "translate": 0.1, "scale": [0.9, 1.1],
                                           "shear": 10.0},
                                          {"kind": "random_crop", "p": 1.0, "scale": [0.2, 1.0]}, BLUR),
    "jitter+scale+blur": composition("jitter+scale+blur", ROT, crop(0.7), SCALE, JITTER, FLIP, BLUR),
    "full+geom+crop+blur": composition("full+geom+crop+blur", ROT, FLIP,
                                       {"kind": "random_crop", "p": 1.0, "scale": [0.4, 1.0]}, BLUR),
}


def preset(name: str) -> dict:
    from phenossl.augment.specs import load_composition

    return load_composition(name).model_dump(mode="json")


# --- the grids ------------------------------------------------------------------------------------------


def row(name: str, group: str, composition_a: str, *, seed: int = 0, representation: str = "ssl", **train) -> dict:
    return {"name": name, "group": group, "seed": seed, "representation": representation,
            "composition_a": composition_a, "train": train}


def search_grid(seeds: int) -> list[dict]:
    """Broad first: compositions at the CPU budget (20 epochs at 64 px), then one axis at a time around the
    likely winner, then random-init rows for reference. Seed 0 of every row before any seed 1."""
    base = {"resolution": 64, "epochs": 20, "batch_size": 128}
    rows = [row("random-init resnet18 64px", "baselines", "geom+scale+blur", representation="random-init", **base)]
    for name in COMPOSITIONS:
        rows.append(row(f"{name} 64px e20", "compositions", name, **base))
    rows.append(row("context 64px e20", "compositions", "context", **base))
    # CASSLE: the projector sees the augmentation's parameters, so the backbone need not forget what they
    # changed (stain levels under an intensity jitter)
    rows.append(row("morphology-crop0.7 cassle 64px e20", "cassle", "morphology-crop0.7", cassle=True, **base))
    rows.append(row("jitter+scale+blur cassle 64px e20", "cassle", "jitter+scale+blur", cassle=True, **base))
    rows.append(row("jitter+scale+blur 64px e20", "cassle", "jitter+scale+blur", **base))
    for name in ("geom+scale+blur", "geom+shared-jitter+scale+blur"):
        rows += [
            row(f"{name} 64px e60", "epochs", name, **{**base, "epochs": 60}),
            row(f"{name} 64px e5", "epochs", name, **{**base, "epochs": 5}),
            row(f"{name} 32px e60", "resolution", name, **{**base, "resolution": 32, "epochs": 60}),
            row(f"{name} 96px e20", "resolution", name, **{**base, "resolution": 96}),
            row(f"{name} 32px small-stem e10", "stem", name, **{**base, "resolution": 32, "epochs": 10,
                                                                 "stem": "small"}),
            row(f"{name} 64px T0.1", "loss", name, **base, temperature=0.1),
            row(f"{name} 64px T0.5", "loss", name, **base, temperature=0.5),
            row(f"{name} 64px lr3e-4", "optimiser", name, **{**base, "lr": 3e-4}),
            row(f"{name} 64px lr3e-3", "optimiser", name, **{**base, "lr": 3e-3}),
            row(f"{name} 64px batch256", "optimiser", name, **{**base, "batch_size": 256}),
            row(f"{name} simclr 64px", "methods", name, **{**base, "method": "simclr"}),
            row(f"{name} + context w=0.5", "dual", name, **base, composition_b="context", weight_a=0.5),
            row(f"{name} + context w=0.75", "dual", name, **base, composition_b="context", weight_a=0.75),
        ]
    rows.append(row("geom+scale+blur + morphology-crop0.7 w=0.5", "dual", "geom+scale+blur",
                    composition_b="morphology-crop0.7", weight_a=0.5, **base))
    rows.append(row("random-init resnet18 32px small-stem", "baselines", "geom+scale+blur",
                    representation="random-init", **{**base, "resolution": 32, "stem": "small"}))
    return [{**r, "seed": seed} for seed in range(seeds) for r in rows]


def cpu_grid(seeds: int, resolution: int, epochs: int) -> list[dict]:
    """What a laptop can afford (one row: at most 30 min on 2 cores): the compositions that keep stain levels
    (no intensity jitter) against the presets that jitter them, each transform left out once, the training
    length, a dual loss, SimCLR. Seed 0 of every row first, then the first row's other seeds."""
    base = {"resolution": resolution, "epochs": epochs, "batch_size": 128}
    tag = f"{resolution}px e{epochs}"
    rows = [row(f"geom+scale+blur {tag}", "recipe", "geom+scale+blur", **base)]
    for name in ("geom", "geom+blur", "geom+scale", "geom+scale+blur no crop", "geom+scale+blur crop0.5",
                 "geom+shared-jitter+scale+blur", "morphology-crop0.7", "context", "context without jitter"):
        rows.append(row(f"{name} {tag}", "compositions", name, **base))
    for more in (epochs // 2, epochs * 2):
        rows.append(row(f"geom+scale+blur {resolution}px e{more}", "epochs", "geom+scale+blur",
                        **{**base, "epochs": more}))
    rows += [
        row(f"geom+scale+blur + context without jitter w=0.5 {tag}", "dual", "geom+scale+blur",
            composition_b="context without jitter", weight_a=0.5, **base),
        row(f"geom+scale+blur simclr {tag}", "methods", "geom+scale+blur", **{**base, "method": "simclr"}),
        row(f"random-init resnet18 {resolution}px", "baselines", "geom+scale+blur", representation="random-init",
            **base),
    ]
    return [{**r, "seed": 0} for r in rows] + [{**rows[0], "seed": s} for s in range(1, seeds)] + \
        [{**rows[-1], "seed": s} for s in range(1, seeds)]


def paper_grid(seeds: int, epochs: int) -> list[dict]:
    """The paper's grid at 96 px, long training: context, morphology, dual loss at three weights, every
    method and both encoders, random-init rows; key rows (context, morphology-crop0.7, dual w=0.5) with
    ``seeds`` seeds, the others once."""
    base = {"resolution": 96, "epochs": epochs, "batch_size": 256}
    key = [row("context", "paper", "context", **base),
           row("morphology-crop0.7", "paper", "morphology-crop0.7", **base),
           row("dual w=0.5", "paper", "morphology-crop0.7", composition_b="context", weight_a=0.5, **base)]
    others = [row(f"dual w={w}", "paper", "morphology-crop0.7", composition_b="context", weight_a=w, **base)
              for w in (0.25, 0.75)]
    others += [row(f"{m} morphology-crop0.7", "methods", "morphology-crop0.7", method=m, **base)
               for m in ("simclr", "byol", "vicreg", "gandl")]
    others += [row("vgg13 morphology-crop0.7", "encoders", "morphology-crop0.7", encoder="vgg13", **base)]
    baselines = [row(f"random-init {e}", "baselines", "morphology-crop0.7", representation="random-init",
                     encoder=e, **base) for e in ("resnet18", "vgg13")]
    rows = [{**r, "seed": 0} for r in key + others + baselines]
    return rows + [{**r, "seed": seed} for seed in range(1, seeds) for r in key]


def cassle_grid(seeds: int, resolution: int, epochs: int) -> list[dict]:
    """Issue 13: does CASSLE help on real cells? The paper's three setups (context, morphology, the dual loss at
    w=0.5), each with and without the projector conditioned on the augmentation parameters, ``seeds`` seeds each;
    seed 0 of every row first."""
    base = {"resolution": resolution, "epochs": epochs, "batch_size": 256 if resolution >= 96 else 128}
    setups = [("context", "context", {}), ("morphology-crop0.7", "morphology-crop0.7", {}),
              ("dual w=0.5", "morphology-crop0.7", {"composition_b": "context", "weight_a": 0.5})]
    rows = [row(f"{name}{' cassle' if cassle else ''} {resolution}px e{epochs}", "cassle", composition,
                **base, **extra, **({"cassle": True} if cassle else {}))
            for name, composition, extra in setups for cassle in (False, True)]
    return [{**r, "seed": seed} for seed in range(seeds) for r in rows]


def smoke_grid() -> list[dict]:
    base = {"resolution": 32, "epochs": 1, "batch_size": 32}
    return [row("smoke geom+scale+blur", "smoke", "geom+scale+blur", **base),
            row("smoke random-init", "smoke", "geom+scale+blur", representation="random-init", **base)]


# --- one row --------------------------------------------------------------------------------------------


def composition_by_name(name: str) -> dict:
    return COMPOSITIONS[name] if name in COMPOSITIONS else preset(name)


def train_config(job: dict, device: str):
    from phenossl.config import TrainConfig
    from phenossl.methods.params import MethodParams

    train = dict(job["train"])
    temperature = train.pop("temperature", None)
    params = MethodParams()
    if temperature is not None:
        params.moco.temperature = temperature
        params.simclr.temperature = temperature
    composition_b = train.pop("composition_b", "context")
    return TrainConfig(composition_a=composition_by_name(job["composition_a"]),
                       composition_b=composition_by_name(composition_b), method_params=params, device=device,
                       **train)


def run_job(job: dict, store_path: str, work: str, device: str, threads: int) -> dict:
    """Train (or build, for random-init) one row, embed it in every view, score every embedding."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from phenossl.embed import embed_tiles, embedding_view, load_trained_model
    from phenossl.tiles.store import TileStore
    from phenossl.train import train

    record = {key: job[key] for key in ("name", "group", "seed", "representation", "composition_a")}
    record["train"] = job["train"]
    try:
        store = TileStore(store_path)
        config = train_config(job, device)
        run_dir = Path(work) / f"{_slug(job['name'])}-seed{job['seed']}"
        start = time.perf_counter()
        if job["representation"] == "random-init":
            from phenossl.methods.build import build_model

            torch.manual_seed(job["seed"])
            model, _ = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells)
            model.to(device).eval()
        else:
            result = train(store, config, run_dir, seed=job["seed"])
            record["final_loss"] = float(result.history["loss"].iloc[-1])
            record["cells_per_s"] = float(result.history["images_per_s"].median())
            model, config = load_trained_model(result.checkpoint, device=device)
        record["train_seconds"] = round(time.perf_counter() - start, 1)
        tiles = np.asarray(store.tiles)
        record["views"] = {}
        for view, average in job.get("views", VIEWS):
            embeddings = embed_tiles(model, tiles, embedding_view(config, view, average), batch_size=512)
            record["views"][f"{view}/{average}"] = score_spaces(embeddings, store.cells)
        record["status"] = "ok"
    except Exception as exc:  # a collapse or a failure is a result of the row, not the end of the study
        record["status"] = type(exc).__name__
        record["error"] = str(exc)[:500]
        record["traceback"] = traceback.format_exc()[-2000:]
    record["seconds"] = round(time.perf_counter() - start, 1) if "start" in locals() else None
    return record


def score_spaces(embeddings, cells) -> dict[str, dict]:
    """phenossl.evaluate's figures in every clustering space, as clustered and standardised to the controls:
    ``{"<space>/as clustered": row, "<space>/to controls": row}``."""
    from phenossl.evaluate import EvaluationSettings, evaluate_embeddings

    scores = {}
    for space in SPACES:
        settings = EvaluationSettings(label=LABEL, within=WITHIN, controls=CONTROLS, seeds=3, preprocessing=space)
        for to_controls in (False, True):
            result = evaluate_embeddings(embeddings, cells, settings, to_controls=to_controls)
            scores[f"{space}/{'to controls' if to_controls else 'as clustered'}"] = result.as_row()
    return scores


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


# --- main ------------------------------------------------------------------------------------------------


def previous_rows(partial: Path | None) -> list[dict]:
    """Rows a stopped study already finished (its --partial file), kept and not run again."""
    if partial is None or not partial.is_file():
        return []
    return [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]


def _worker(args: tuple) -> dict:
    return run_job(*args)


def run_grid(jobs: list[dict], store_path: Path, work: Path, device: str, workers: int, threads: int,
             budget: float, partial: Path | None) -> tuple[list[dict], list[dict]]:
    """Run ``jobs`` in ``workers`` processes until ``budget`` seconds have passed; rows not finished by then are
    returned as skipped. Each finished row is appended to ``partial`` (JSON lines) as it arrives."""
    deadline = time.monotonic() + budget
    context = multiprocessing.get_context("spawn")
    done: list[dict] = []
    pool = context.Pool(workers, maxtasksperchild=1)
    try:
        pending = [pool.apply_async(_worker, ((job, str(store_path), str(work), device, threads),)) for job in jobs]
        for index, handle in enumerate(pending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                record = handle.get(timeout=remaining)
            except multiprocessing.TimeoutError:
                break
            done.append(record)
            if partial is not None:
                with partial.open("a") as stream:
                    stream.write(json.dumps(record, default=float) + "\n")
            log(f"[{len(done)}/{len(jobs)}] {record['name']} seed {record['seed']}: {record['status']} "
                f"{_summary(record)}")
    finally:
        pool.terminate()
        pool.join()
    finished = {(r["name"], r["seed"]) for r in done}
    skipped = [{"name": j["name"], "seed": j["seed"]} for j in jobs if (j["name"], j["seed"]) not in finished]
    return done, skipped


def _summary(record: dict) -> str:
    if record["status"] != "ok":
        return record.get("error", "")[:200]
    best = max(((v, s, r["ami_within_mean"], r["knn_balanced_accuracy"]) for v, spaces in record["views"].items()
                for s, r in spaces.items()), key=lambda t: t[2])
    return f"{record.get('train_seconds')} s; best within-plate AMI {best[2]:.3f} ({best[0]}, {best[1]}), 1-NN {best[3]:.3f}"


def main(argv: list[str] | None = None) -> dict:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("search", "cpu", "paper", "cassle"), default="search")
    parser.add_argument("--resolution", type=int, default=32, help="the CPU grid's resolution")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="epochs (paper grid: 100; CPU grid: 20)")
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)))
    parser.add_argument("--budget", type=float, default=3600.0, help="wall-clock seconds for the rows")
    parser.add_argument("--partial", type=Path, default=None,
                        help="append each finished row here (JSON lines); rows already in it are not run again")
    parser.add_argument("--rows", default=None, help="only these rows of the grid (names separated by ';')")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 100 if args.grid == "paper" else 20
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv, result_name=f"{STUDY}_{args.grid}" if not args.smoke else STUDY)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from quality_bbbc021 import crops_store

    store = crops_store(args.data, args.cache_dir, 96 if args.smoke else None)
    grids = {"search": lambda: search_grid(args.seeds), "paper": lambda: paper_grid(args.seeds, args.epochs),
             "cpu": lambda: cpu_grid(args.seeds, args.resolution, args.epochs),
             "cassle": lambda: cassle_grid(args.seeds, args.resolution, args.epochs)}
    jobs = smoke_grid() if args.smoke else grids[args.grid]()
    if args.rows:
        wanted = [name.strip() for name in args.rows.split(";")]
        unknown = [name for name in wanted if name not in {job["name"] for job in jobs}]
        if unknown:
            raise SystemExit(f"--rows names rows the grid does not have: {unknown}")
        jobs = [job for job in jobs if job["name"] in wanted]
    earlier = previous_rows(args.partial)
    jobs = [job for job in jobs if (job["name"], job["seed"]) not in {(r["name"], r["seed"]) for r in earlier}]
    cpus = os.cpu_count() or 2
    threads = args.threads or max(1, cpus // args.workers)
    log(f"{len(jobs)} rows on {device} with {args.workers} workers x {threads} threads, budget {args.budget:.0f} s")
    done, skipped = run_grid(jobs, store.path, args.cache_dir / "recipe-runs", str(device), args.workers, threads,
                             args.budget, args.partial)
    settings = {"grid": "smoke" if args.smoke else args.grid, "n_cells": store.n_cells, "views": VIEWS,
                "label": LABEL, "within": WITHIN, "controls": CONTROLS, "workers": args.workers,
                "threads_per_worker": threads, "budget_seconds": args.budget,
                "cpu_epoch_seconds_64px": CPU_EPOCH_SECONDS_64PX,
                "compositions": {**COMPOSITIONS, "context": preset("context")}}
    return record.finish(settings, {"rows": earlier + done, "skipped": skipped})


if __name__ == "__main__":
    main()
