"""Study 2: how well are nuclei segmented? Real images with ground-truth instance masks.

For each backend that can run here (``classical`` always; ``cellpose`` only with model weights already on
this machine: phenossl never downloads) and each image set of ../shared/data/nuclei-gt, every image is
segmented with the backend's defaults (the nucleus diameter is estimated, not given) and scored with
phenossl's instance matching at IoU 0.5 (also 0.75): precision, recall, F1 and the DSB "average precision"
TP / (TP + FP + FN). Set-level scores pool the objects of all images (each nucleus counts once).

    .venv/bin/python benchmarks/segmentation.py
    .venv/bin/python benchmarks/segmentation.py --smoke --out /tmp/s.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_common import StudyRecord, apply_threads, log, require_data, study_parser

STUDY = "segmentation"
IOU_THRESHOLDS = (0.5, 0.75)
GOWT1_FRAMES = ("01", "21", "31", "39", "52", "72")


def image_sets(root: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """{set: [(image id, image file, ground-truth labels file)]}."""
    dsb = root / "stardist-dsb2018"
    gowt1 = root / "ctc-Fluo-N2DH-GOWT1"
    return {
        "stardist-dsb2018": [("img2d", dsb / "img2d.tif", dsb / "mask2d.tif")],
        "ctc-Fluo-N2DH-GOWT1": [(f"t{f}", gowt1 / "img" / f"t{f}.tif", gowt1 / "gt" / f"man_seg{f}.tif")
                                for f in GOWT1_FRAMES],
    }


def backend_availability(device: str) -> dict[str, str | None]:
    """{backend: None if it can run, else why not}."""
    from phenossl.errors import PhenosslError
    from phenossl.segment.cellpose_backend import DEFAULT_MODEL, resolve_weights

    available: dict[str, str | None] = {"classical": None}
    try:
        resolve_weights(DEFAULT_MODEL)
        available["cellpose"] = None
    except PhenosslError as error:
        available["cellpose"] = f"skipped: no local Cellpose weights ({str(error).splitlines()[0]})"
    return available


def score_image(image_path: Path, truth_path: Path, backend: str, device: str) -> dict[str, Any]:
    """Segment one image and score it against its ground truth at every IoU threshold."""
    import tifffile

    from phenossl.segment import match_instances, segment_nuclei

    image, truth = tifffile.imread(image_path), tifffile.imread(truth_path)
    start = time.perf_counter()
    labels = segment_nuclei(image, backend=backend, device=device) if backend == "cellpose" \
        else segment_nuclei(image, backend=backend)
    seconds = time.perf_counter() - start
    scores = {f"{t:g}": match_instances(truth, labels, iou_threshold=t).as_dict() for t in IOU_THRESHOLDS}
    return {"seconds": round(seconds, 2), "shape": list(image.shape), "scores": scores}


def pooled_scores(per_image: list[dict], threshold: str) -> dict[str, float]:
    """Precision, recall, F1 and AP over every object of the set, and the mean of the per-image F1 / AP."""
    tp, fp, fn, n_true, n_pred = (sum(item["scores"][threshold][k] for item in per_image)
                                  for k in ("tp", "fp", "fn", "n_true", "n_pred"))

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {
        "n_images": len(per_image), "n_true": n_true, "n_pred": n_pred, "tp": tp, "fp": fp, "fn": fn,
        "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn), "average_precision": ratio(tp, tp + fp + fn),
        "mean_image_f1": sum(i["scores"][threshold]["f1"] for i in per_image) / len(per_image),
        "mean_image_average_precision":
            sum(i["scores"][threshold]["average_precision"] for i in per_image) / len(per_image),
        "seconds_per_image": sum(i["seconds"] for i in per_image) / len(per_image),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    apply_threads(args)
    record = StudyRecord(STUDY, args, None, argv)
    root = require_data(args.data, "nuclei-gt")
    sets = image_sets(root)
    if args.smoke:
        sets = {name: items[:1] for name, items in sets.items()}
    available = backend_availability(args.device)
    results: dict[str, Any] = {"backends": {}, "skipped": {}}
    for backend, why_not in available.items():
        if why_not is not None:
            results["skipped"][backend] = why_not
            log(f"{backend}: {why_not}")
            continue
        per_set = {}
        for set_name, items in sets.items():
            per_image = {}
            for image_id, image_path, truth_path in items:
                per_image[image_id] = score_image(image_path, truth_path, backend, args.device)
            images = list(per_image.values())
            per_set[set_name] = {"pooled": {f"{t:g}": pooled_scores(images, f"{t:g}") for t in IOU_THRESHOLDS},
                                 "images": per_image}
            pooled = per_set[set_name]["pooled"]["0.5"]
            log(f"{backend} / {set_name}: F1 {pooled['f1']:.3f} AP {pooled['average_precision']:.3f} "
                f"({pooled['n_true']} nuclei, {len(images)} images)")
        results["backends"][backend] = per_set
    settings = {
        "iou_thresholds": list(IOU_THRESHOLDS),
        "image_sets": {name: [i[0] for i in items] for name, items in sets.items()},
        "options": "backend defaults; nucleus diameter estimated from each image (not given)",
        "matching": "phenossl.segment.match_instances (one-to-one, Hungarian at IoU <= 0.5)",
    }
    notes = [why for why in results["skipped"].values()]
    return record.finish(settings, results, notes)


if __name__ == "__main__":
    main()
