"""Study 1b: does the on-perturbation axis give a dose-response curve on real cells, on a plate it never saw?

BBBC021 crops hold cycloheximide next to DMSO on two plates: Week4_27801 at 5, 15 and 50 uM, Week4_27821 at
15 and 50 uM only. For each representation, phenossl's ``perturbation`` axis is fitted from the DMSO cells
(score 0) to the 50 uM cells (score 1) of one plate, and every cell of the *other* plate is scored, both
ways. The standardisation in front of the axis (z-score per dimension, phenossl's ``standardize``) is
fitted on the fit plate's cells only and applied unchanged to the scored plate. What the scored plate's
cells did reach: the self-supervised training of the encoders, which sees every cell without any label.
If the representation captures the drug's effect, the scored plate's doses line up 0 < (5 <) 15 < 50 uM.
Representations: CellProfiler's measurements (cp_measure), the default run's encoder untrained, the default
run itself (MoCo v2 / ResNet18, ``morphology``), the previous default (``morphology-jitter``, crop 0.7), the
dual loss (w = 0.5 with ``context``) and GAN-DL (the discriminator of a GAN, a ResNet18, seeing cells through
``morphology``), all trained as the default run is (``examples/bbbc021_crops.yaml``); models the quality study
trained with the same settings are reused from the cache, not trained again.

    .venv/bin/python benchmarks/dose_response_bbbc021.py
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
    cellprofiler_features,
    crops_store,
    default_run,
    embed,
    run_folder,
    train_config,
    train_or_reuse,
    untrained_embeddings,
)

STUDY = "dose_response_bbbc021"
CONTROL = {"compound": "DMSO"}
DOSE_COLUMN = "concentration_uM"
REFERENCE_DOSE = "50"
PLATES = ("Week4_27801", "Week4_27821")  # the two plates holding both compounds
TRAINED = [  # named as in the quality study, so its trained models are reused (same settings, seed 0)
    RunSpec("phenossl default", "default"),
    RunSpec("morphology-jitter crop 0.7 (the previous default)", "compositions", "morphology-jitter", crop=0.7),
    RunSpec("dual w=0.5 (morphology + context)", "dose", "morphology", "context", 0.5),
]
GAN = RunSpec("GAN-DL morphology", "dose")  # GAN-DL's own use: the discriminator's features on the axis


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


def held_out_curve(embeddings: np.ndarray, cells: pd.DataFrame, fit_plate: str, test_plate: str) -> dict[str, Any]:
    """Fit the axis on ``fit_plate`` (standardised on its cells, DMSO -> 50 uM) and score ``test_plate``:
    per-dose means and SEMs, monotonicity and Spearman's rho of the score against the dose."""
    from scipy.stats import spearmanr

    from phenossl.perturbation import dose_response, fit_axis, select_cells

    plates = cells["plate"].astype(str).to_numpy()
    control_all = select_cells(cells, CONTROL, "control")
    reference_all = select_cells(cells, {DOSE_COLUMN: REFERENCE_DOSE}, "reference")
    on_fit, on_test = plates == fit_plate, plates == test_plate
    features = standardise_on(embeddings, on_fit)
    axis = fit_axis(features, control_all & on_fit, reference_all & on_fit)
    scores = axis.score(features[on_test])
    test_cells = cells[on_test].reset_index(drop=True)
    table = dose_response(scores, test_cells, [DOSE_COLUMN])
    means, sems = table["mean"].tolist(), table["sem"].tolist()
    rho = spearmanr(test_cells[DOSE_COLUMN].to_numpy(dtype=float), scores).statistic
    return {
        "fit_plate": fit_plate, "scored_plate": test_plate,
        "n_control": axis.n_control, "n_reference": axis.n_reference,
        "doses": table[DOSE_COLUMN].tolist(), "n_cells": table["n_cells"].tolist(),
        "mean": means, "sem": sems,
        "monotone": monotone(means),
        "separated_steps": separated_steps(means, sems), "steps": len(means) - 1,
        "spearman_rho": float(rho),
    }


def held_out_curves(embeddings: np.ndarray, cells: pd.DataFrame) -> dict[str, Any]:
    """Fit the axis on one mixed plate, score the other, both ways."""
    return {f"fit {fit} -> score {test}": held_out_curve(embeddings, cells, fit, test)
            for fit, test in (PLATES, PLATES[::-1])}


# --- representations -----------------------------------------------------------------------------------------


def representations(store, base, device, work, workers: int, smoke: bool, gandl: bool = True):
    """(name, record) for each representation; record holds the embedded view and either the embeddings
    of every cell or, for a training that collapsed or diverged, the failure (a result, not a crash)."""
    from phenossl.embed import load_trained_model
    from phenossl.errors import CollapseError, DivergedError

    view = f"{base.embed.view} view" + (f", {base.embed.average}-averaged" if base.embed.average != "none" else "")
    yield "CellProfiler (cp_measure)", {"view": "nucleus mask", "embeddings": cellprofiler_features(store, workers)[0]}
    yield "untrained encoder (random-init)", {"view": view,
                                              "embeddings": untrained_embeddings(store, base, 0, device)}
    specs = TRAINED[:1] if smoke else [*TRAINED, GAN] if gandl else TRAINED
    for spec in specs:
        config = train_config(spec, base, device)
        if spec is GAN:
            config = config.model_copy(update={"method": "gandl"})
        start = time.perf_counter()
        try:
            checkpoint, history, reused = train_or_reuse(store, config, run_folder(work, spec, 0), 0)
        except (CollapseError, DivergedError) as error:
            yield spec.name, {"view": view, "status": type(error).__name__, "error": str(error).split(". ")[0],
                              "train_seconds": round(time.perf_counter() - start, 1)}
            continue
        model, trained = load_trained_model(checkpoint, device=str(device))
        yield spec.name, {"view": view, "train_seconds": history["train_seconds"], "reused": reused,
                          "final_loss": history["final_loss"],
                          "embeddings": embed(model, trained, store.tiles, base.embed.view, base.embed.average)}


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="processes measuring the CellProfiler features")
    parser.add_argument("--no-gandl", action="store_true",
                        help="leave GAN-DL out (its training is about 10x an SSL run's on a CPU: over an hour here)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    record = StudyRecord(STUDY, args, device, argv)
    base = default_run(args.smoke)
    max_cells = 96 if args.smoke else None
    store = crops_store(args.data, args.cache_dir, max_cells)
    check_groups(store.cells)
    results: dict[str, Any] = {}
    notes = []
    if args.no_gandl:
        notes.append("GAN-DL left out (--no-gandl): its training on a CPU takes over an hour for these cells.")
    for name, item in representations(store, base, device, args.cache_dir / "quality-runs", args.workers,
                                      args.smoke, gandl=not args.no_gandl):
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
    study = {"default_run": "examples/bbbc021_crops.yaml", "train": base.train.model_dump(mode="json"),
             "embed": base.embed.model_dump(mode="json"), "max_cells": max_cells,
             "epochs": base.train.epochs, "resolution": base.train.resolution}
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
