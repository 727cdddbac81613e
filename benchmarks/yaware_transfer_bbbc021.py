"""Study 13c: does y-aware contrastive learning with the dose help on a plate it never saw? (BBBC021 crops)

y-aware (Dufumier et al. 2021) counts other cells as positives in proportion to a Gaussian kernel on a
continuous label, here log10 of the cycloheximide dose (DMSO's 0 uM one decade below the smallest dose).
Nothing of the scored plate may leak into training: each row trains on the cells of ONE plate (with its
doses, for y-aware; without labels, for SimCLR and MoCo v2) and scores the OTHER plate, both ways between the
two plates that hold both compounds (Week4_27801: 0, 5, 15, 50 uM; Week4_27821: 0, 15, 50 uM):

- clustering: phenossl.evaluate on the scored plate's cells (K-Means, k = 2, AMI against the compound), in the
  space as clustered and standardised to the plate's DMSO cells;
- dose-response: the on-perturbation axis fitted on the training plate (DMSO -> 50 uM, its own standardisation)
  and applied unchanged to the scored plate (Spearman's rho of the score against the dose, monotone means);
- the rows that need no training, scored the same way: CellProfiler's measurements (cp_measure), each stain's
  mean intensity alone (on these plates one stain's level separates the compounds well), and the default run's
  encoder untrained (random-init, one row per seed).

Each training plate's cells form their own tile store, cut from the study's store (same normalisation). Every
trained row is the default run's training (``examples/bbbc021_crops.yaml``: ResNet18, ``morphology``, 32 px)
with another method, seeds 0..n-1.

    .venv/bin/python benchmarks/yaware_transfer_bbbc021.py --epochs 10 --seeds 3 --threads 1
    .venv/bin/python benchmarks/yaware_transfer_bbbc021.py --smoke --out /tmp/y.json   # 96 cells, 1 epoch, 1 seed

``--reuse-trained RESULT.json`` takes the trained rows of an earlier record made with the same training
settings (same methods, seeds, epochs, train and embed settings; checked, refused otherwise) instead of training
them again, and recomputes every untrained row: the record says so in ``settings.trained_rows_from``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import StudyRecord, apply_threads, log, resolve_device, study_parser
from dose_response_bbbc021 import DOSE_COLUMN, PLATES, check_groups, held_out_curve
from quality_bbbc021 import (
    cellprofiler_features,
    crops_store,
    default_run,
    embed,
    stain_means,
    untrained_embeddings,
)

STUDY = "yaware_transfer_bbbc021"
LABEL, CONTROLS = "compound", "compound=DMSO"
METHODS = ("simclr", "mocov2", "yaware")
SIGMA, TRANSFORM = 0.5, "log10"  # half a decade of dose: 15 and 50 uM are near positives, 0 and 50 uM are not


def plate_store(store, plate: str, cache_dir: Path):
    """The cells of one plate as their own tile store (the study store's tiles, masks and rows, unchanged)."""
    from phenossl.tiles.store import TileStore, TileStoreWriter

    rows = np.flatnonzero(store.cells["plate"].astype(str).to_numpy() == plate)
    path = cache_dir / f"{store.path.name}-plate-{plate}"
    if (path / "store.yaml").is_file() and TileStore(path).n_cells == rows.size:
        return TileStore(path)
    writer = TileStoreWriter(path, rows.size, store.channel_names, store.tile_size, overwrite=True)
    masks = store.masks
    writer.append(np.asarray(store.tiles[rows]), None if masks is None else np.asarray(masks[rows]))
    info = {key: value for key, value in store.info.items()
            if key not in ("n_cells", "channel_names", "tile_size", "dtype")}
    return writer.finish(store.cells.iloc[rows].drop(columns=["cell_id"]).reset_index(drop=True),
                         {**info, "cut_from": str(store.path), "plate": plate})


def train_config(base, method: str, epochs: int, device):
    from phenossl.methods.params import MethodParams

    params = MethodParams()
    params.yaware.sigma, params.yaware.label_transform = SIGMA, TRANSFORM
    update: dict[str, Any] = {"method": method, "epochs": epochs, "device": str(device), "method_params": params,
                              "label_column": DOSE_COLUMN if method == "yaware" else None}
    return base.train.model_copy(update=update)


def scores(embeddings: np.ndarray, cells: pd.DataFrame, fit_plate: str, test_plate: str) -> dict[str, Any]:
    """The scored plate's clustering (both spaces) and its held-out dose-response curve."""
    from phenossl.evaluate import EvaluationSettings, evaluate_embeddings

    on_test = cells["plate"].astype(str).to_numpy() == test_plate
    test_cells = cells[on_test].reset_index(drop=True)
    settings = EvaluationSettings(label=LABEL, controls=CONTROLS, seeds=3, preprocessing="standardize")
    clustering = {}
    for to_controls in (False, True):
        row = evaluate_embeddings(embeddings[on_test], test_cells, settings, to_controls=to_controls).as_row()
        clustering["to controls" if to_controls else "as clustered"] = {
            key: row[key] for key in ("k", "ami_mean", "ami_sd", "silhouette") if key in row}
    return {"clustering": clustering, "dose_response": held_out_curve(embeddings, cells, fit_plate, test_plate)}


def trained_embeddings(store, plate_stores, base, method, seed, epochs, device, work: Path, fit_plate: str):
    """Train ``method`` on ``fit_plate``'s store, embed the cells of both mixed plates (rows of ``store``)."""
    import torch

    from phenossl.embed import load_trained_model
    from phenossl.train import train

    torch.manual_seed(seed)
    config = train_config(base, method, epochs, device)
    run_dir = work / f"{method}-{fit_plate}-e{epochs}-seed{seed}"
    start = time.perf_counter()
    result = train(plate_stores[fit_plate], config, run_dir, seed=seed)
    train_seconds = time.perf_counter() - start
    model, trained = load_trained_model(result.checkpoint, device=str(device))
    embeddings = embed(model, trained, store.tiles, base.embed.view, base.embed.average)
    return embeddings, {"train_seconds": round(train_seconds, 1),
                        "final_loss": float(result.history["loss"].iloc[-1]),
                        "trained_cells": plate_stores[fit_plate].n_cells}


def untrained_rows(store, base, seeds: int, device, directions) -> list[dict]:
    """The rows no training makes: cp_measure, each stain's mean alone, the untrained encoder (per seed)."""
    cells = store.cells
    features, _ = cellprofiler_features(store)
    representations = [("CellProfiler (cp_measure)", 0, features)]
    means = stain_means(store.tiles)
    representations += [(f"{name} mean intensity alone", 0, means[:, [index]])
                        for index, name in enumerate(store.channel_names)]
    representations += [("untrained encoder (random-init)", seed, untrained_embeddings(store, base, seed, device))
                         for seed in range(seeds)]
    rows = []
    for name, seed, matrix in representations:
        for fit, test in directions:
            rows.append({"representation": name, "direction": f"{fit} -> {test}", "seed": seed, "status": "ok",
                         "trained": False, **scores(matrix, cells, fit, test)})
        log(f"{name} (seed {seed}): " + ", ".join(
            f"{r['direction']} AMI {r['clustering']['as clustered']['ami_mean']:.3f}" for r in rows[-2:]))
    return rows


def reusable_trained_rows(path: Path, settings: dict) -> dict[tuple, dict]:
    """The trained rows of an earlier record, keyed (method, direction, seed), when its training matches."""
    import json

    earlier = json.loads(path.read_text())
    keys = ("methods", "epochs", "train", "embed", "yaware", "plates", "n_cells")
    differing = [key for key in keys if earlier.get("settings", {}).get(key) != settings[key]]
    if differing:
        raise SystemExit(f"{path}: its trained rows were made with other settings ({', '.join(differing)}); "
                         "run without --reuse-trained to train them again")
    methods = set(settings["methods"])
    return {(r["representation"], r["direction"], r["seed"]): r for r in earlier["results"]["rows"]
            if r["representation"] in methods}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd over seeds of each (representation, direction): AMI (both spaces) and Spearman's rho."""
    table = pd.DataFrame([{
        "representation": r["representation"], "direction": r["direction"], "seed": r["seed"],
        "ami": r["clustering"]["as clustered"]["ami_mean"],
        "ami_to_controls": r["clustering"]["to controls"]["ami_mean"],
        "rho": r["dose_response"]["spearman_rho"], "monotone": r["dose_response"]["monotone"],
    } for r in rows if r.get("status") == "ok"])
    if table.empty:
        return []
    grouped = table.groupby(["representation", "direction"], sort=False)
    out = grouped.agg(seeds=("seed", "size"), ami_mean=("ami", "mean"), ami_sd=("ami", "std"),
                      ami_to_controls_mean=("ami_to_controls", "mean"),
                      ami_to_controls_sd=("ami_to_controls", "std"), rho_mean=("rho", "mean"),
                      rho_sd=("rho", "std"), monotone=("monotone", "sum")).reset_index()
    return out.to_dict(orient="records")


def main(argv: list[str] | None = None) -> dict:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each row")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated trained methods")
    parser.add_argument("--reuse-trained", type=Path, default=None,
                        help="an earlier record of this study whose trained rows are kept (same settings only)")
    args = parser.parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv)
    base = default_run(args.smoke)
    store = crops_store(args.data, args.cache_dir, 96 if args.smoke else None)
    check_groups(store.cells)
    plate_stores = {plate: plate_store(store, plate, args.cache_dir) for plate in PLATES}
    directions = [(PLATES[0], PLATES[1]), (PLATES[1], PLATES[0])]
    epochs = 1 if args.smoke else args.epochs
    seeds = 1 if args.smoke else args.seeds
    methods = args.methods.split(",")
    settings = {"methods": methods, "seeds": args.seeds, "epochs": epochs,
                "train": base.train.model_dump(mode="json"), "embed": base.embed.model_dump(mode="json"),
                "yaware": {"label_column": DOSE_COLUMN, "sigma": SIGMA, "label_transform": TRANSFORM},
                "plates": list(PLATES), "n_cells": store.n_cells,
                "trained_on": "the cells of the fit plate only (their own tile store); y-aware with their doses",
                "untrained_rows": "cp_measure, each stain's mean intensity over the tile, the default run's encoder "
                                  "untrained (random-init, seeds 0..n-1), embedded the same way",
                "clustering": "phenossl.evaluate on the scored plate: K-Means k = number of compounds (2), AMI "
                              "against the compound, 3 K-Means seeds; 'to controls': standardised to its DMSO cells",
                "dose_response": "axis fitted on the fit plate (DMSO -> 50 uM), standardisation from the fit plate"}
    reused = reusable_trained_rows(args.reuse_trained, settings) if args.reuse_trained else {}
    if args.reuse_trained:
        settings["trained_rows_from"] = str(args.reuse_trained)
    rows: list[dict] = untrained_rows(store, base, seeds, device, directions)
    work = args.cache_dir / "yaware-runs"
    for seed in range(seeds):
        for fit, test in directions:
            for method in methods:
                key = (method, f"{fit} -> {test}", seed)
                if key in reused:
                    rows.append({**reused[key], "trained": True, "reused": True})
                    continue
                row: dict[str, Any] = {"representation": method, "direction": key[1], "seed": seed, "trained": True}
                try:
                    embeddings, info = trained_embeddings(store, plate_stores, base, method, seed, epochs, device,
                                                          work, fit)
                    row.update(status="ok", **info, **scores(embeddings, store.cells, fit, test))
                except Exception as exc:  # noqa: BLE001 - a collapse is a result of the row, not the end of the study
                    row.update(status=type(exc).__name__, error=str(exc)[:300])
                rows.append(row)
                if row["status"] == "ok":
                    log(f"{method} seed {seed} {fit} -> {test}: AMI "
                        f"{row['clustering']['as clustered']['ami_mean']:.3f} / to controls "
                        f"{row['clustering']['to controls']['ami_mean']:.3f}, rho "
                        f"{row['dose_response']['spearman_rho']:.3f} ({row['train_seconds']} s)")
                else:
                    log(f"{method} seed {seed} {fit} -> {test}: {row['status']} {row.get('error', '')}")
    return record.finish(settings, {"rows": rows, "summary": summarise(rows)})


if __name__ == "__main__":
    main()
