"""Study 1b: does the on-perturbation axis give a dose-response curve on real cells, on a plate it never saw?

BBBC021 crops hold cycloheximide next to DMSO on two plates: Week4_27801 at 5, 15 and 50 uM, Week4_27821 at
15 and 50 uM only. For each representation, phenossl's ``perturbation`` axis is fitted from the DMSO cells
(score 0) to the 50 uM cells (score 1) of one plate, and every cell of the *other* plate is scored, both
ways. The standardisation in front of the axis (z-score per dimension, phenossl's ``standardize``) is
fitted on the fit plate's cells only and applied unchanged to the scored plate. What the scored plate's
cells did reach: the self-supervised training of the encoders, which sees every cell without any label.
If the representation captures the drug's effect, the scored plate's doses line up 0 < (5 <) 15 < 50 uM.
Representations: hand-crafted features, a randomly initialised ResNet18, and MoCo v2 / ResNet18 trained
with ``context``, ``morphology-crop0.7`` and the dual loss (w = 0.5), and GAN-DL (the discriminator of a GAN,
a ResNet18, seeing cells through ``morphology-crop0.7``), with the quality study's CPU settings.

    .venv/bin/python benchmarks/dose_response_bbbc021.py
    .venv/bin/python benchmarks/dose_response_bbbc021.py --epochs 4 --resolution 48 --out /tmp/d.json
    .venv/bin/python benchmarks/dose_response_bbbc021.py --smoke --out /tmp/d.json
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from bench_common import StudyRecord, apply_threads, log, resolve_device, study_parser
from quality_bbbc021 import (
    RunSpec,
    build_compositions,
    crops_store,
    embed_views,
    handcrafted_features,
    random_encoder_embeddings,
    study_settings,
    train_config,
    view_name,
)

STUDY = "dose_response_bbbc021"
CONTROL = {"compound": "DMSO"}
DOSE_COLUMN = "concentration_uM"
REFERENCE_DOSE = "50"
PLATES = ("Week4_27801", "Week4_27821")  # the two plates holding both compounds
TRAINED = [
    RunSpec("MoCo v2 context", "dose", "context"),
    RunSpec("MoCo v2 morphology-crop0.7", "dose", "morphology-crop0.7"),
    RunSpec("MoCo v2 dual w=0.5", "dose", "morphology-crop0.7", "context", 0.5),
    # GAN-DL's own use: the discriminator's features on the on-perturbation axis
    RunSpec("GAN-DL morphology-crop0.7", "dose", "morphology-crop0.7", method="gandl"),
]


class StudyDataError(SystemExit):
    """The cells cannot support the study (e.g. a smoke subset without some dose on a plate)."""


# --- the axis ----------------------------------------------------------------------------------------------


def standardise_on(embeddings: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """phenossl's ``standardize`` preprocessing (z-score per dimension, constant dimensions -> 0), with the
    mean and sd computed on ``fit_rows`` only and applied to every row (``prepare_features`` can only fit
    them on all the rows it is given)."""
    from phenossl.cluster import check_embeddings
    from phenossl.cluster.space import column_mean_std

    features = np.asarray(check_embeddings(embeddings), dtype=np.float32).copy()
    mean, std = column_mean_std(np.ascontiguousarray(features[fit_rows]))
    features -= mean.astype(np.float32)
    features /= np.where(std > 0, std, 1.0).astype(np.float32)
    features[:, std == 0] = 0.0  # constant on the fit plate: no information the axis could use
    return features


def check_groups(cells: pd.DataFrame) -> None:
    """Each mixed plate needs DMSO and 50 uM cells (to fit an axis) and at least two doses (to score):
    say which group is missing instead of letting fit_axis fail on an empty selection."""
    from phenossl.perturbation import select_cells

    plates = cells["plate"].astype(str).to_numpy()
    control = select_cells(cells, CONTROL, "control")
    reference = select_cells(cells, {DOSE_COLUMN: REFERENCE_DOSE}, "reference")
    problems = []
    for plate in PLATES:
        on = plates == plate
        doses = sorted(pd.to_numeric(cells.loc[on, DOSE_COLUMN]).unique().tolist())
        for what, mask in (("DMSO (control)", control), (f"{REFERENCE_DOSE} uM (reference)", reference)):
            if not (mask & on).any():
                problems.append(f"plate {plate} has no {what} cell (doses present: {doses or 'none'})")
    if problems:
        raise StudyDataError(
            "The cells cannot support the held-out dose-response: " + "; ".join(problems) + ". With --smoke the "
            "store is a small subset stratified by plate and compound (not dose); use the full data."
        )


def monotone(means: list[float]) -> bool:
    """Strictly increasing means in dose order."""
    return bool(np.all(np.diff(means) > 0))


def separated_steps(means: list[float], sems: list[float]) -> int:
    """How many consecutive dose steps rise by more than the sum of the two standard errors (the mean ±
    SEM bars do not overlap)."""
    means, sems = np.asarray(means, dtype=float), np.nan_to_num(np.asarray(sems, dtype=float), nan=np.inf)
    return int(np.sum(np.diff(means) > sems[:-1] + sems[1:]))


def held_out_curves(embeddings: np.ndarray, cells: pd.DataFrame) -> dict[str, Any]:
    """Fit the axis on one mixed plate, score the other, both ways: per-dose means and Spearman's rho."""
    from scipy.stats import spearmanr

    from phenossl.perturbation import dose_response, fit_axis, select_cells

    plates = cells["plate"].astype(str).to_numpy()
    control_all = select_cells(cells, CONTROL, "control")
    reference_all = select_cells(cells, {DOSE_COLUMN: REFERENCE_DOSE}, "reference")
    curves = {}
    for fit_plate, test_plate in (PLATES, PLATES[::-1]):
        on_fit, on_test = plates == fit_plate, plates == test_plate
        features = standardise_on(embeddings, on_fit)
        axis = fit_axis(features, control_all & on_fit, reference_all & on_fit)
        scores = axis.score(features[on_test])
        test_cells = cells[on_test].reset_index(drop=True)
        table = dose_response(scores, test_cells, [DOSE_COLUMN])
        means, sems = table["mean"].tolist(), table["sem"].tolist()
        rho = spearmanr(test_cells[DOSE_COLUMN].to_numpy(dtype=float), scores).statistic
        curves[f"fit {fit_plate} -> score {test_plate}"] = {
            "fit_plate": fit_plate, "scored_plate": test_plate,
            "n_control": axis.n_control, "n_reference": axis.n_reference,
            "doses": table[DOSE_COLUMN].tolist(), "n_cells": table["n_cells"].tolist(),
            "mean": means, "sem": sems,
            "monotone": monotone(means),
            "separated_steps": separated_steps(means, sems), "steps": len(means) - 1,
            "spearman_rho": float(rho),
        }
    return curves


# --- representations -----------------------------------------------------------------------------------------


def representations(store, compositions: dict, settings: dict, device, work, smoke: bool):
    """(name, record) for each representation; record holds the embedded view and either the embeddings
    of every cell or, for a training that collapsed or diverged, the failure (a result, not a crash)."""
    from phenossl.embed import load_trained_model
    from phenossl.errors import CollapseError, DivergedError
    from phenossl.train import train

    yield "hand-crafted (CellProfiler-style)", {"view": "whole tile", "embeddings": handcrafted_features(store.tiles)}
    yield "random-init resnet18", {
        "view": "centre crop 0.7",  # the morphology-crop0.7 embedding view (random_encoder_embeddings' "auto")
        "embeddings": random_encoder_embeddings("resnet18", 0, store, compositions, settings, device)["auto"]}
    for spec in TRAINED[:1] if smoke else TRAINED:
        config = train_config(spec, compositions, settings, device)
        start = time.perf_counter()
        try:
            result = train(store, config, work / spec.name.replace(" ", "_"), seed=0)
        except (CollapseError, DivergedError) as error:
            yield spec.name, {"view": view_name(config, "auto"), "status": type(error).__name__,
                              "error": str(error).split(". ")[0],
                              "train_seconds": round(time.perf_counter() - start, 1)}
            continue
        seconds = round(time.perf_counter() - start, 1)
        model, config = load_trained_model(result.checkpoint, device=str(device))
        yield spec.name, {"view": view_name(config, "auto"), "train_seconds": seconds,
                          "final_loss": float(result.history["loss"].iloc[-1]),
                          "embeddings": embed_views(model, config, store.tiles, views=("auto",))["auto"]}


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the quality study's (2 on the CPU grid)")
    parser.add_argument("--resolution", type=int, default=None, help="default: the quality study's (32 px)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the quality study's (64)")
    return parser.parse_args(argv)


def quality_settings_args(args):
    """The quality study's arguments (its CPU grid, or its smoke settings), with this run's --epochs,
    --resolution and --batch-size overrides: ``study_settings`` of the result gives the same training."""
    from quality_bbbc021 import parse_args as quality_parse_args

    argv = ["--smoke"] if args.smoke else []
    for flag, value in (("--epochs", args.epochs), ("--resolution", args.resolution),
                        ("--batch-size", args.batch_size)):
        if value is not None:
            argv += [flag, str(value)]
    return quality_parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv)
    settings = study_settings(quality_settings_args(args))
    compositions = build_compositions()
    store = crops_store(args.data, args.cache_dir, settings["max_cells"])
    check_groups(store.cells)
    results: dict[str, Any] = {}
    notes = []
    for name, item in representations(store, compositions, settings, device, args.cache_dir / "dose-runs",
                                      args.smoke):
        embeddings = item.pop("embeddings", None)
        if embeddings is None:
            results[name] = item
            notes.append(f"{name}: training stopped ({item['status']}: {item['error']}); no curve.")
            log(f"{name}: {item['status']}: {item['error']}")
            continue
        results[name] = {**item, "status": "ok", "curves": held_out_curves(embeddings, store.cells)}
        for direction, curve in results[name]["curves"].items():
            points = ", ".join(f"{d:g} uM {m:.2f}" for d, m in zip(curve["doses"], curve["mean"], strict=True))
            log(f"{name} | {direction}: {points}; rho {curve['spearman_rho']:.2f}")
    study = {k: settings[k] for k in ("epochs", "resolution", "batch_size", "lr", "max_cells")}
    study.update(
        n_cells=store.n_cells, control=CONTROL, reference={DOSE_COLUMN: REFERENCE_DOSE}, plates=list(PLATES),
        seed=0,
        doses_per_plate={p: sorted(pd.to_numeric(store.cells.loc[store.cells["plate"] == p, DOSE_COLUMN])
                                   .unique().tolist()) for p in PLATES},
        axis="phenossl.perturbation.fit_axis: control mean -> reference mean, on the fit plate's cells",
        standardisation="z-score per dimension (phenossl's 'standardize'), mean and sd from the fit plate's "
                        "cells only, applied unchanged to the scored plate",
        held_out="the axis and the standardisation see only the fit plate's DMSO / 50 uM cells (the "
                 "standardisation: all of the fit plate's cells); the SSL encoders were trained, without "
                 "labels, on every cell of every plate",
        monotone="the mean score increases strictly from each dose to the next",
        separated_steps="consecutive doses whose means differ by more than the sum of their standard errors",
    )
    return record.finish(study, {"representations": results}, notes)


if __name__ == "__main__":
    main()
