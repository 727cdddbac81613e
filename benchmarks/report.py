"""Render docs/benchmarks.md from benchmarks/results/*.json and the hand-written template.

Every number in the page comes from a result file: tables are generated here, and the hand-written reading
in ``report_template.md`` quotes numbers only through placeholders that this script fills:

- ``{{table:NAME}}``: a generated table (see TABLES);
- ``{{meta:RESULT}}``: the rerun command, machine, load average and date of one result file;
- ``{{value:RESULT:path.to.value|FORMAT}}``: one number (``FORMAT`` as in ``format()``, e.g. ``.2f``, ``.0%``);
  path parts may be dict keys, list indices, or ``[field=value,field=value]``: the one element of a list of
  dicts whose fields have those values (an error when none or several match, so a changed grid cannot
  silently quote another row), e.g. ``results.cases.[method=mocov2,encoder=vgg13,resolution=196].ratio``.

A result file that is missing (e.g. a GPU run nobody made yet) renders as a line saying how to produce it,
once per section (the other placeholders of that result in the section then render as nothing).
The rerun command of a result names the device and torch thread count it ran with, even when the recorded
command left them to their defaults (``bench_common.explicit_command``).

    .venv/bin/python benchmarks/report.py            # writes docs/benchmarks.md
    .venv/bin/python benchmarks/report.py --check    # renders to stdout-less temp output; fails on errors
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import BENCH_DIR, REPO_ROOT, RESULTS_DIR, explicit_command, mean_sd

TEMPLATE = BENCH_DIR / "report_template.md"
OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
PLACEHOLDER = re.compile(r"\{\{(table|meta|value):([^}]+)\}\}")
RERUN = {  # what produced the committed results (2-core CPU machine, torch's default of 2 threads)
    "quality_bbbc021": ".venv/bin/python benchmarks/quality_bbbc021.py --device cpu --threads 2",
    "recipe_search_cpu": ".venv/bin/python benchmarks/recipe_search.py --grid cpu --device cpu --workers 2",
    "recipe_search_paper": "bash benchmarks/gpu_check.sh  # on a GPU loan, through the device tool",
    "recipe_search_gpu_call1": "bash benchmarks/gpu_check.sh  # on a GPU loan, through the device tool",
    "recipe_search_gpu_call2": "bash benchmarks/gpu_check.sh  # on a GPU loan, through the device tool",
    "gpu/gpu_check_2026-12-04.log": "bash benchmarks/gpu_check.sh  # on a GPU loan, through the device tool",
    "segmentation": ".venv/bin/python benchmarks/segmentation.py --threads 2",
    "speed_training": ".venv/bin/python benchmarks/speed_training.py --device cpu --threads 2",
    "speed_training_gpu": ".venv/bin/python benchmarks/speed_training.py --device cuda",
    "speed_pipeline": ".venv/bin/python benchmarks/speed_pipeline.py --threads 2",
    "memory_100k": ".venv/bin/python benchmarks/memory_100k.py --threads 2",
    "clustering_1m": ".venv/bin/python benchmarks/clustering_1m.py",
    "store_read_speed": ".venv/bin/python benchmarks/store_read_speed.py",
    "dose_response_bbbc021": ".venv/bin/python benchmarks/dose_response_bbbc021.py --device cpu --threads 2",
    "recipe_search_cassle": ".venv/bin/python benchmarks/recipe_search.py --grid cassle --seeds 3 --resolution 32 "
                            "--epochs 10 --workers 1 --threads 1 --device cpu",
    "yaware_transfer_bbbc021": ".venv/bin/python benchmarks/yaware_transfer_bbbc021.py --epochs 10 --seeds 3 "
                               "--threads 1 --device cpu",
    "report_bbbc021": ".venv/bin/python benchmarks/report_bbbc021.py --threads 1 --device cpu",
}


class MissingResult(Exception):
    """A placeholder refers to a result file that does not exist (yet)."""


def load_results(folder: Path) -> dict[str, dict]:
    """Every result file of ``folder`` by name; text logs (e.g. a GPU loan's, ``gpu/*.log``) by relative path."""
    results: dict[str, Any] = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
    results.update({str(path.relative_to(folder)): path.read_text() for path in sorted(folder.glob("gpu/*.log"))})
    return results


# --- formatting -------------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def pm(stat: dict | None, spec: str = ".3f") -> str:
    """'mean ± sd' of a mean_sd dict ('mean' alone for one seed)."""
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("sd") is None or stat.get("n", 0) < 2:
        return fmt(stat["mean"], spec)
    return f"{fmt(stat['mean'], spec)} ± {fmt(stat['sd'], spec)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def need(results: dict, name: str) -> Any:
    if name not in results:
        raise MissingResult(name)
    return results[name]


# --- quality -------------------------------------------------------------------------------------------------------

SPACE_LABELS = {"cosine/as clustered": "cosine", "cosine/to controls": "cosine, to controls",
                "standardize/as clustered": "z-score", "standardize/to controls": "z-score, to controls"}


def quality_rows(results: dict, name: str = "quality_bbbc021") -> list[tuple[str, dict]]:
    summary = need(results, name)["results"]["summary"]
    order = {"default": 0, "compositions": 1, "baselines": 2, "stains": 3}
    return sorted(summary.items(), key=lambda item: order.get(item[1]["group"], 9))


def seeds_text(row: dict) -> str:
    return f"{len(row['seeds'])}" + (f" (+{len(row['failed'])} failed)" if row.get("failed") else "")


def quality_main(results: dict, name: str = "quality_bbbc021") -> str:
    """Each row's best figures (over the four clustering spaces), then its within-plate AMI in each space."""
    variants = need(results, name)["settings"]["spaces"]
    body = []
    for key, row in quality_rows(results, name):
        if "best" not in row:
            body.append([key, seeds_text(row), *(["–"] * (3 + len(variants)))])
            continue
        best = row["best"]
        body.append([key, seeds_text(row), f"**{pm(best['ami_within'])}** ({SPACE_LABELS[best['space']]})",
                     f"{pm(best['knn'])} ({SPACE_LABELS[best['knn_space']]})",
                     pm(row["spaces"][best["space"]]["ami_mean"]),
                     *(pm(row["spaces"][v]["ami_within_mean"]) for v in variants)])
    return table(["row", "seeds", "within-plate AMI (best space)", "1-NN balanced acc. (best space)",
                  "pooled AMI (best space)", *(f"within-plate AMI, {SPACE_LABELS[v]}" for v in variants)], body)


def quality_per_plate(results: dict, name: str = "quality_bbbc021") -> str:
    plates = need(results, name)["settings"]["mixed_plates"]
    body = [[key, SPACE_LABELS[row["best"]["space"]],
             *(pm(row["spaces"][row["best"]["space"]]["per_plate"].get(p)) for p in plates)]
            for key, row in quality_rows(results, name) if "best" in row]
    return table(["row", "its best space", *(f"AMI compound, {p}" for p in plates)], body)


def quality_target(results: dict, name: str = "quality_bbbc021") -> str:
    target = need(results, name)["results"]["target"]
    body = [[check, "yes" if ok else "**no**"] for check, ok in target["checks"].items()]
    return table(["the default run's ...", "met"], body)


def quality_cells(results: dict, name: str = "quality_bbbc021") -> str:
    counts = need(results, name)["settings"]["cells_per_plate_compound"]
    return table(["plate / compound", "cells"], [[k, str(v)] for k, v in counts.items()])


# --- the recipe search ------------------------------------------------------------------------------------------

RECIPE_VIEWS = {"auto/none": "training crop", "full/none": "whole tile", "auto/d4": "training crop, D4-averaged"}


def recipe_rows(records: list[dict]) -> dict[str, list[dict]]:
    """Records by row name; a row listed twice in one grid (the same name and seed) counts once."""
    rows: dict[str, list[dict]] = {}
    for record in records:
        same = rows.setdefault(record["name"], [])
        if not any(r["seed"] == record["seed"] and r.get("views") == record.get("views") for r in same):
            same.append(record)
    return rows


def recipe_stat(records: list[dict], view: str, space: str, figure: str) -> str:
    """'mean ± sd' over the seeds of one figure of a recipe row, in one view and clustering space."""
    return pm(mean_sd([r["views"][view][space][figure] for r in records
                       if view in r["views"] and space in r["views"][view]]))


def recipe_cpu_table(results: dict, name: str = "recipe_search_cpu") -> str:
    """Every row tried on the CPU: within-plate AMI and 1-NN in each clustering space and view (seed means)."""
    record = need(results, name)
    body = []
    for row, records in recipe_rows(record["results"]["rows"]).items():
        ok = [r for r in records if r["status"] == "ok"]
        if not ok:
            body.append([row, "–", f"*{records[0]['status']}*", *(["–"] * 5)])
            continue
        def stat(view, space, figure="ami_within_mean", ok=ok):
            return recipe_stat(ok, view, space, figure)
        seconds = [r["train_seconds"] for r in ok if r.get("train_seconds")]
        body.append([row, str(len(ok)), fmt(np.mean(seconds) / 60 if seconds else None, ".0f"),
                     f"**{stat('auto/none', 'cosine/to controls')}**", stat("auto/none", "cosine/as clustered"),
                     stat("auto/none", "standardize/as clustered"), stat("full/none", "cosine/to controls"),
                     stat("auto/d4", "cosine/to controls"),
                     stat("auto/none", "cosine/to controls", "knn_balanced_accuracy")])
    return table(["row", "seeds", "train min (1 thread, 2 rows at once)", "within-plate AMI: cosine, to controls",
                  "cosine", "z-score", "cosine, to controls, whole tile", "cosine, to controls, D4-averaged",
                  "1-NN bal. acc. (cosine, to controls)"], body)


def recipe_skipped(results: dict, name: str) -> str:
    """The rows of a grid that were not run (its time budget ran out), in one line."""
    skipped = need(results, name)["results"]["skipped"]
    if not skipped:
        return ""
    return f"*Not run ({len(skipped)} rows, time):* " + "; ".join(f"{s['name']} (seed {s['seed']})" for s in skipped) + "."


def recipe_gpu_table(results: dict) -> str:
    """The rows the GPU loan reached (z-score spaces only: cosine came later), from both of its calls."""
    records = []
    for name in ("recipe_search_gpu_call1", "recipe_search_gpu_call2"):
        records += need(results, name)["results"]["rows"]
    body, failed = [], {}
    for row, items in recipe_rows(records).items():
        ok = [r for r in items if r["status"] == "ok"]
        if not ok:
            failed.setdefault(f"{items[0]['status']}: {items[0].get('error', '')[:80]}", []).append(row)
            continue
        def stat(view, space, figure="ami_within_mean", ok=ok):
            return recipe_stat(ok, view, space, figure)
        body.append([row, str(len(ok)), stat("auto/none", "as clustered"), stat("auto/none", "to controls"),
                     stat("full/none", "as clustered"), stat("auto/none", "to controls", "knn_balanced_accuracy")])
    text = table(["row (MoCo v2 / ResNet18, 64 px, 20 epochs unless named)", "runs", "within-plate AMI: z-score",
                  "z-score, to controls", "z-score, whole tile", "1-NN bal. acc. (to controls)"], body)
    for reason, rows in failed.items():  # one line per cause, not one table row per row that never ran
        text += f"\n\n*Not run ({len(rows)} rows, {reason}):* " + "; ".join(rows) + "."
    return text


GPU_CASE = re.compile(r"SpeedCase\(method='(\w+)', encoder='(\w+)', resolution=(\d+), weight_a=([\d.]+), "
                      r"cache_on_device='(\w+)'")
GPU_ABLATION = re.compile(r"before/after: (.+)")
GPU_TIMING = re.compile(r"pipeline ([\d.]+) cells/s, ceiling ([\d.]+) -> (\d+) %(?:.*?(\d+) % of the defaults)?")


def gpu_speed_log(results: dict) -> str:
    """The GPU speed cases of the loan's log (the study was stopped at its time limit before writing its JSON:
    these lines are what it printed)."""
    log_text = need(results, "gpu/gpu_check_2026-12-04.log")
    cases, ablation, current = [], [], None
    for line in log_text.splitlines():  # a case line, then (after any warnings) its timing line
        if case := GPU_CASE.search(line):
            m = case.groups()
            current = ("case", f"{m[0]} / {m[1]} / {m[2]} px" + (f" / dual w={float(m[3]):g}" if float(m[3]) != 1
                       else "") + (f" / device cache {m[4]}" if m[4] != "auto" else ""))
        elif step := GPU_ABLATION.search(line):
            current = ("ablation", step.group(1))
        elif (timing := GPU_TIMING.search(line)) and current is not None:
            pipeline, ceiling, ratio, vs_defaults = timing.groups()
            if current[0] == "case":
                cases.append([current[1], pipeline, ceiling, f"{ratio} %"])
            else:
                ablation.append([current[1], pipeline, ceiling, f"{ratio} %", f"{vs_defaults} %"])
            current = None
    return (table(["case (batch 128, AMP, channels_last)", "pipeline cells/s", "ceiling cells/s", "ratio"], cases)
            + "\n\nBefore / after (MoCo v2 / ResNet18, 128 px):\n\n"
            + table(["row", "pipeline cells/s", "its ceiling cells/s", "ratio", "vs the defaults' pipeline"],
                    ablation))


def dose_response_table(results: dict) -> str:
    """One row per representation and direction: mean ± SEM of the score per dose of the scored plate
    ('–' where that plate has no such dose), strict monotonicity, steps beyond their SEMs, Spearman's rho."""
    data = need(results, "dose_response_bbbc021")["results"]["representations"]
    curves_of = {name: item.get("curves", {}) for name, item in data.items()}
    doses = sorted({d for curves in curves_of.values() for c in curves.values() for d in c["doses"]})
    header = ["representation", "embedded view", "axis fitted on → cells scored",
              *(f"{d:g} µM" for d in doses), "monotone (means strictly rise)",
              "steps rising by more than their SEMs", "Spearman ρ (dose, score)"]
    body = []
    for name, item in data.items():
        if item.get("status", "ok") != "ok":
            body.append([name, item.get("view", "–"), f"*no curve: training stopped ({item['status']})*",
                         *(["–"] * len(doses)), "–", "–", "–"])
            continue
        for direction, curve in item["curves"].items():
            points = dict(zip(curve["doses"], zip(curve["mean"], curve["sem"], strict=True), strict=True))
            cells = [f"{fmt(points[d][0], '.2f')} ± {fmt(points[d][1], '.2f')}" if d in points else "–"
                     for d in doses]
            body.append([name, item["view"], direction.removeprefix("fit ").replace(" -> score ", " → "), *cells,
                         "yes" if curve["monotone"] else "no", f"{curve['separated_steps']} of {curve['steps']}",
                         fmt(curve["spearman_rho"], ".2f")])
    return table(header, body)


# --- segmentation --------------------------------------------------------------------------------------------------


def segmentation_table(results: dict) -> str:
    data = need(results, "segmentation")["results"]
    body = []
    for backend, sets in data["backends"].items():
        for set_name, scores in sets.items():
            half, strict = scores["pooled"]["0.5"], scores["pooled"]["0.75"]
            body.append([backend, set_name, str(half["n_images"]), str(half["n_true"]), str(half["n_pred"]),
                         fmt(half["precision"]), fmt(half["recall"]), fmt(half["f1"]), fmt(half["average_precision"]),
                         fmt(strict["f1"]), fmt(strict["average_precision"]), fmt(half["seconds_per_image"], ".2f")])
    for backend, why in data["skipped"].items():
        body.append([backend, "all", *(["–"] * 9), "–"])
    return table(["backend", "image set", "images", "nuclei (GT)", "predicted", "precision@0.5", "recall@0.5",
                  "F1@0.5", "AP@0.5", "F1@0.75", "AP@0.75", "s / image"], body)


def segmentation_per_image(results: dict) -> str:
    data = need(results, "segmentation")["results"]
    body = []
    for backend, sets in data["backends"].items():
        for set_name, scores in sets.items():
            for image, item in scores["images"].items():
                s = item["scores"]["0.5"]
                body.append([backend, set_name, image, str(s["n_true"]), str(s["n_pred"]), fmt(s["f1"]),
                             fmt(s["average_precision"])])
    return table(["backend", "image set", "image", "nuclei (GT)", "predicted", "F1@0.5", "AP@0.5"], body)


def skipped_lines(results: dict, name: str, key: str = "skipped") -> str:
    data = need(results, name)["results"]
    skipped = data.get(key, {})
    return "\n".join(f"- {k}: {v}" for k, v in skipped.items()) if skipped else "- nothing skipped"


# --- speed -----------------------------------------------------------------------------------------------------------


def case_label(case: dict) -> str:
    label = f"{case['method']} / {case['encoder']} / {case['resolution']} px"
    if case["weight_a"] != 1.0:
        label += f" / dual w={case['weight_a']:g}"
    if case["cache_on_device"] != "auto":
        label += f" / device cache {case['cache_on_device']}"
    return label


def speed_ratio_table(results: dict) -> str:
    """Pipeline / ceiling per case, CPU columns from speed_training.json and GPU columns from
    speed_training_gpu.json (when someone ran it on a GPU)."""
    cpu = need(results, "speed_training")["results"]["cases"]
    gpu_record = results.get("speed_training_gpu")
    gpu = {case_label(c): c for c in gpu_record["results"]["cases"]} if gpu_record else {}
    gpu_name = gpu_record["machine"]["gpu"]["name"] if gpu_record else "no GPU here"
    labels = list(dict.fromkeys([case_label(c) for c in cpu] + list(gpu)))
    by_label = {case_label(c): c for c in cpu}
    body = []
    for label in labels:
        c, g = by_label.get(label), gpu.get(label)
        cpu_cells = ([fmt(c["pipeline_cells_per_s"], ".1f"), fmt(c["ceiling_cells_per_s"], ".1f"), fmt(c["ratio"], ".0%"),
                      fmt(c.get("paired_ratio_median"), ".0%"), fmt(c.get("cpu_time_ratio"), ".0%")]
                     if c else ["–"] * 5)
        gpu_cells = ([fmt(g["pipeline_cells_per_s"], ".0f"), fmt(g["ceiling_cells_per_s"], ".0f"),
                      fmt(g["ratio"], ".0%"), fmt(g.get("paired_ratio_median"), ".0%")]
                     if g else ["needs a GPU"] * 4)
        body.append([label, *cpu_cells, *gpu_cells])
    return table(["method / encoder / resolution", "CPU pipeline cells/s", "CPU ceiling cells/s", "CPU ratio",
                  "CPU ratio, paired windows", "CPU ratio, process CPU time",
                  f"GPU pipeline cells/s ({gpu_name})", "GPU ceiling cells/s", "GPU ratio (target ≥ 90 %)",
                  "GPU ratio, paired windows"], body)


def speed_ratio_range(results: dict) -> str:
    """'from X % (lowest case) to Y % (highest case)' of the CPU ratios, each with its case label, so the
    prose never names a case by its position in the grid."""
    cases = need(results, "speed_training")["results"]["cases"]
    low, high = min(cases, key=lambda c: c["ratio"]), max(cases, key=lambda c: c["ratio"])
    return f"from {fmt(low['ratio'], '.0%')} ({case_label(low)}) to {fmt(high['ratio'], '.0%')} ({case_label(high)})"


def speed_ablation_table(results: dict) -> str:
    """Before / after of the fixes that keep a GPU fed (speed_training_gpu.json's ablation rows)."""
    rows = need(results, "speed_training_gpu")["results"].get("ablation")
    if not rows:
        return (f"*Not in this GPU result (made before the rows existed, or with --ablation off): rerun "
                f"`{RERUN['speed_training_gpu']}`.*")
    first = rows[0]
    body = [[r["variant"], fmt(r["pipeline_cells_per_s"], ".0f"), fmt(r["ceiling_cells_per_s"], ".0f"),
             fmt(r["ratio"], ".0%"), fmt(r.get("paired_ratio_median"), ".0%"), fmt(r["vs_defaults"], ".0%")]
            for r in rows]
    gpu = results["speed_training_gpu"]["machine"]["gpu"]["name"]
    return (f"{first['method']} / {first['encoder']} / {first['resolution']} px, batch {first['batch_size']}, "
            f"{gpu}:\n\n" + table(["row (what is switched off)", "pipeline cells/s", "its ceiling cells/s",
                                     "ratio to its ceiling", "ratio, paired windows",
                                     "pipeline vs the defaults' pipeline"], body))


def speed_profile_table(results: dict, name: str = "speed_training") -> str:
    cases = need(results, name)["results"]["cases"]
    body = []
    for case in cases:
        p = case["profile"]
        shares = p["shares_of_parts"]
        body.append([case_label(case), fmt(p["load_s_per_step"], ".3f"), fmt(p["augment_s_per_step"], ".3f"),
                     fmt(p["model_s_per_step"], ".3f"), fmt(p["pipeline_s_per_step"], ".3f"),
                     f"{shares['load']:.0%} / {shares['augment']:.0%} / {shares['model']:.0%}"])
    return table(["case", "load s/step", "augment s/step", "model s/step (ceiling)", "pipeline s/step",
                  "load / augment / model share"], body)


def speed_gpu_profile(results: dict) -> str:
    if "speed_training_gpu" not in results:
        return f"*Not run: no GPU was available. Run `{RERUN['speed_training_gpu']}` on a CUDA machine.*"
    return speed_profile_table(results, "speed_training_gpu")


def pipeline_segmentation(results: dict) -> str:
    data = need(results, "speed_pipeline")["results"]["segmentation"]["backends"]
    body = []
    for backend, item in data.items():
        if "skipped" in item:
            body.append([backend, "–", "–", "–", item["skipped"][:120]])
        else:
            body.append([backend, fmt(min(item["seconds"]), ".2f") + " – " + fmt(max(item["seconds"]), ".2f"),
                         fmt(item["fields_per_s"], ".2f"), str(item["nuclei"]), item.get("device", "cpu")])
    return table(["backend", "s / field (min – max)", "fields / s (median)", "nuclei found", "device / note"], body)


def pipeline_tiling(results: dict) -> str:
    data = need(results, "speed_pipeline")["results"]["tiling"]
    cut, build = data["cut_tiles"], data["build_store_given_labels"]
    return table(["step", "cells", "median s", "cells / s"], [
        [f"cut_tiles ({data['tile_size']} px, {data['channels']} channels, one field)", str(cut["cells"]),
         fmt(sorted(cut["seconds"])[len(cut["seconds"]) // 2], ".3f"), fmt(cut["cells_per_s"], ".0f")],
        [f"build_store_from_fields, labels given ({build['fields']} fields)", str(build["cells"]),
         fmt(sorted(build["seconds"])[len(build["seconds"]) // 2], ".2f"), fmt(build["cells_per_s"], ".0f")],
    ])


def pipeline_recluster(results: dict) -> str:
    data = need(results, "speed_pipeline")["results"]["recluster"]
    body = []
    for n_cells, item in data.items():
        for k, timing in item["k"].items():
            body.append([f"{int(n_cells):,}", str(item["dims"]), k, fmt(timing["median_s"], ".2f"),
                         fmt(min(timing["seconds"]), ".2f") + " – " + fmt(max(timing["seconds"]), ".2f"),
                         fmt(item["prepare_s"], ".2f")])
    return table(["cells", "dims", "k", "recluster median s", "min – max s", "EmbeddingSpace prepare s (once)"],
                 body)


def memory_table(results: dict) -> str:
    record = need(results, "memory_100k")
    stages = record["results"]["stages"]
    body = []
    for stage, s in stages.items():
        body.append([stage, fmt(s["seconds"], ".0f"), fmt(s["peak_rss_anon_mib"], ".0f"),
                     fmt(s["peak_data_file_rss_mib"], ".0f"), fmt(s["peak_rss_file_mib"], ".0f"),
                     fmt(s["ru_maxrss_mib"], ".0f")])
    return table(["stage (own process)", "s", "peak RssAnon MiB", "peak resident store/embeddings pages MiB",
                  "peak RssFile MiB (incl. libraries)", "ru_maxrss MiB"], body)


def clustering_1m_table(results: dict) -> str:
    """Each clustering row at each size: time, peak owned memory and agreement with the groups and scikit-learn."""
    record = need(results, "clustering_1m")
    body = []
    for r in record["results"]["rows"]:
        seconds = r.get("seconds", {})
        if "error" in r or "skipped" in r:
            body.append([f"{r['n_cells']:,}", r["row"], "failed" if "error" in r else r["skipped"], "", "", "", "", ""])
            continue
        body.append([f"{r['n_cells']:,}", r["row"], fmt(seconds.get("cluster", seconds.get("umap")), ".1f"),
                     fmt(seconds.get("prepare"), ".1f") if "prepare" in seconds else "",
                     fmt(r["wall_seconds"], ".0f"), fmt(r["peak_rss_anon_mib"], ".0f"),
                     fmt(r.get("ami_vs_groups"), ".3f") if "ami_vs_groups" in r else "",
                     fmt(r.get("ami_vs_sklearn_all"), ".3f") if "ami_vs_sklearn_all" in r else ""])
    return table(["cells", "row", "K-Means (or UMAP) s", "prepare space s", "process wall s", "peak RssAnon MiB",
                  "AMI vs groups", "AMI vs sklearn-all"], body)


def store_read_table(results: dict) -> str:
    """Each store layout's read times (warm and cold page cache) and their ratio to the memory-mapped store."""
    record = need(results, "store_read_speed")
    layouts, ratios = record["results"]["layouts"], record["results"]["ratio_to_memmap"]
    body = []
    for name, item in layouts.items():
        ratio = ratios.get(name, {})
        def cell(kind: str, cache: str, ratio=ratio, item=item) -> str:
            seconds = item[kind][cache]
            return fmt(seconds * 1000, ".0f") + " ms" + (f" ({fmt(ratio[f'{kind}_{cache}'], '.2f')}x)" if ratio else "")
        body.append([name, str(item["files"]), fmt(item["bytes_on_disk"] / 2**30, ".2f"),
                     cell("random_batch_s", "warm"), cell("random_batch_s", "cold"),
                     cell("sequential_pass_s", "warm"), cell("sequential_pass_s", "cold")])
    return table(["layout", "files", "GiB on disk", "random batch, warm (x memmap)", "random batch, cold",
                  "sequential pass, warm", "sequential pass, cold"], body)


def ui_stalls_table(results: dict) -> str:
    """Longest UI-thread stall per action, before and after, per scale (ms; the UI thread's own CPU in it)."""
    runs = need(results, "ui_stalls")["results"]
    labels = [label for label in ("before", "after") if label in runs]
    scales = list(dict.fromkeys(scale for label in labels for scale in runs[label]["scales"]))
    actions = list(dict.fromkeys(
        action for label in labels for scale in scales
        for action in runs[label]["scales"].get(scale, {}).get("actions", {})
    ))

    def cell(label: str, scale: str, action: str) -> str:
        row = runs[label]["scales"].get(scale, {}).get("actions", {}).get(action)
        if not row or row.get("error") or row.get("max_stall_ms") is None:
            return "not run" if not row else "failed"
        return f"{fmt(row['max_stall_ms'], '.0f')} ({fmt(row['max_stall_cpu_ms'], '.0f')}) / {fmt(row['wall_s'], '.1f')} s"

    header = ["action"] + [f"{scale}: {label}" for scale in scales for label in labels]
    body = [[action] + [cell(label, scale, action) for scale in scales for label in labels] for action in actions]
    return table(header, body)


def umap_speed_table(results: dict) -> str:
    """Time to the first UMAP layout in a fresh process, before and after, cold and cached numba."""
    data = need(results, "umap_speed")["results"]
    names = ["before_cold", "before_cached", "after_cold", "after_cached", "after_cached_warm_up"]
    body = []
    for size, item in data.items():
        scenarios = item.get("scenarios", {})
        cells = []
        for name in names:
            row = scenarios.get(name)
            if not row or row.get("first_layout_s") is None:
                cells.append("not run")
            elif "warm_up_s" in row:
                cells.append(f"{fmt(row['warm_up_s'], '.1f')} + {fmt(row['first_layout_s'], '.1f')}")
            else:
                cells.append(fmt(row["first_layout_s"], ".1f"))
        body.append([size.replace("x", " cells x ") + "-d", *cells])
    return table(["embeddings", "before, cold s", "before, cached s", "after, cold s", "after, cached s",
                  "after: warm-up + first layout s"], body)


# --- issue 13: CASSLE, y-aware, what the clusters follow --------------------------------------------------------------


def cassle_table(results: dict, name: str = "recipe_search_cassle") -> str:
    """Each setup without and with CASSLE: within-plate AMI (cosine, to controls and as clustered) and 1-NN,
    mean ± sd over seeds, in the training crop view."""
    record = need(results, name)
    rows = recipe_rows(record["results"]["rows"])
    body = []
    for row, records in rows.items():
        ok = [r for r in records if r["status"] == "ok"]
        if not ok:
            body.append([row, "–", f"*{records[0]['status']}*", "–", "–", "–"])
            continue
        def stat(view, space, figure="ami_within_mean", ok=ok):
            return recipe_stat(ok, view, space, figure)
        body.append([row, str(len(ok)), f"**{stat('auto/none', 'cosine/to controls')}**",
                     stat("auto/none", "cosine/as clustered"), stat("auto/d4", "cosine/to controls"),
                     stat("auto/none", "cosine/to controls", "knn_balanced_accuracy")])
    return table(["row (MoCo v2 / ResNet18)", "seeds", "within-plate AMI: cosine, to controls", "cosine",
                  "cosine, to controls, D4-averaged", "1-NN bal. acc. (cosine, to controls)"], body)


def yaware_table(results: dict, name: str = "yaware_transfer_bbbc021") -> str:
    """Per representation and direction (trained on one plate, scored on the other): the scored plate's clustering
    AMI against the compound and the held-out dose-response rho, mean ± sd over seeds."""
    record = need(results, name)
    rows = [r for r in record["results"]["rows"] if r.get("status") == "ok"]
    failed = [r for r in record["results"]["rows"] if r.get("status") != "ok"]
    body = []
    keys = list(dict.fromkeys((r["representation"], r["direction"]) for r in rows))
    for representation, direction in keys:
        same = [r for r in rows if r["representation"] == representation and r["direction"] == direction]
        def stat(get, same=same):
            return pm(mean_sd([get(r) for r in same]))
        body.append([representation, direction.replace(" -> ", " → "), str(len(same)),
                     stat(lambda r: r["clustering"]["as clustered"]["ami_mean"]),
                     stat(lambda r: r["clustering"]["to controls"]["ami_mean"]),
                     stat(lambda r: r["dose_response"]["spearman_rho"]),
                     f"{sum(r['dose_response']['monotone'] for r in same)} of {len(same)}"])
    text = table(["representation", "trained on → scored", "seeds", "scored plate's AMI (compound), z-score",
                  "z-score, to its DMSO", "held-out Spearman ρ (dose, axis score)", "monotone"], body)
    if failed:
        text += "\n\n*Stopped:* " + "; ".join(f"{r['representation']} {r['direction']} seed {r['seed']}: "
                                               f"{r['status']}" for r in failed) + "."
    return text


def report_runs_table(results: dict, name: str = "report_bbbc021") -> str:
    """Each dev-plate run's report: its reading, then the clusters' AMI of the treatments and of each nuisance
    family's strongest variable."""
    record = need(results, name)
    runs = record["results"]["runs"]
    shown = ["compound", "concentration_uM", "nucleus_area", "DNA_nucleus", "actin_nucleus", "tubulin_nucleus",
             "brightness", "plate", "well", "site"]
    body = []
    for run, item in runs.items():
        scores = {row["variable"]: row for row in item["table"]}
        body.append([run, *[fmt(scores.get(v, {}).get("cluster_ami")) for v in shown]])
    lines = [table(["run", *shown], body), ""]
    lines += [f"- **{run}**: {item['reading']}" for run, item in runs.items()]
    return "\n".join(lines)


def report_compare_lines(results: dict, name: str = "report_bbbc021") -> str:
    """The two comparisons' readings, as written by phenossl compare."""
    record = need(results, name)
    return "\n".join(f"- **{pair.replace(' -> ', ' → ')}**: {item['reading']}"
                     for pair, item in record["results"]["comparisons"].items())


TABLES: dict[str, Callable[[dict], str]] = {
    "ui_stalls": ui_stalls_table,
    "umap_speed": umap_speed_table,
    "quality_main": quality_main,
    "quality_per_plate": quality_per_plate,
    "quality_target": quality_target,
    "quality_cells": quality_cells,
    "recipe_cpu": recipe_cpu_table,
    "recipe_cpu_skipped": lambda r: recipe_skipped(r, "recipe_search_cpu"),
    "recipe_gpu": recipe_gpu_table,
    "gpu_speed_log": gpu_speed_log,
    "dose_response": dose_response_table,
    "segmentation": segmentation_table,
    "segmentation_per_image": segmentation_per_image,
    "segmentation_skipped": lambda r: skipped_lines(r, "segmentation"),
    "speed_ratio": speed_ratio_table,
    "speed_profile": speed_profile_table,
    "speed_gpu_profile": speed_gpu_profile,
    "speed_ratio_range": speed_ratio_range,
    "speed_ablation": speed_ablation_table,
    "pipeline_segmentation": pipeline_segmentation,
    "pipeline_tiling": pipeline_tiling,
    "pipeline_recluster": pipeline_recluster,
    "memory": memory_table,
    "clustering_1m": clustering_1m_table,
    "store_read": store_read_table,
    "cassle": cassle_table,
    "cassle_skipped": lambda r: recipe_skipped(r, "recipe_search_cassle"),
    "yaware": yaware_table,
    "report_runs": report_runs_table,
    "report_compare": report_compare_lines,
}


# --- placeholders ----------------------------------------------------------------------------------------------------


def meta(results: dict, name: str) -> str:
    record = need(results, name)
    machine = record["machine"]
    gpu = machine["gpu"]["name"] if machine.get("gpu") else "no GPU"
    load = "/".join(str(x) for x in record["load_average_start"])
    load_end = "/".join(str(x) for x in record["load_average_end"])
    commit = (record["git"]["commit"] or "?")[:10] + (" + local changes" if record["git"]["dirty"] else "")
    command = explicit_command(record["command"], machine.get("device"), machine.get("torch_threads"))
    return (f"*Rerun:* `{command}` · *machine:* {machine['cpu_model']}, {machine['logical_cores']} cores, "
            f"{machine['memory_gib']} GiB, torch {machine['torch']} ({machine['torch_threads']} threads), {gpu} · "
            f"*load average (1/5/15 min) at start* {load}, *at end* {load_end} · *date:* {record['date']} · "
            f"*took* {record['wall_seconds'] / 60:.0f} min · *code:* {commit}")


def value(results: dict, spec: str) -> str:
    path, _, number_format = spec.partition("|")
    name, _, dotted = path.partition(":")
    node: Any = need(results, name)
    for part in _split_path(dotted):
        if isinstance(node, list) and "=" in part:
            node = _select(node, part, spec)
        else:
            node = node[int(part)] if isinstance(node, list) else node[part]
    return fmt(node, number_format or ".3f")


def _select(items: list, selector: str, spec: str) -> Any:
    """The one dict of ``items`` whose fields equal ``field=value,...`` (numbers compared as numbers)."""
    wanted = dict(item.split("=", 1) for item in selector.split(","))

    def equal(have: Any, text: str) -> bool:
        if isinstance(have, bool) or not isinstance(have, (int, float)):
            return str(have) == text
        try:
            return float(have) == float(text)
        except ValueError:
            return False

    found = [item for item in items if all(k in item and equal(item[k], v) for k, v in wanted.items())]
    if len(found) != 1:
        raise ValueError(f"{{{{value:{spec}}}}}: [{selector}] matches {len(found)} elements, not one")
    return found[0]


def _split_path(dotted: str) -> list[str]:
    """'a.b.[x.y].c' -> ['a', 'b', 'x.y', 'c'] (brackets protect keys that contain dots or spaces)."""
    return [p.strip("[]") for p in re.findall(r"\[[^\]]*\]|[^.]+", dotted)]


GPU_RESULTS = ("speed_training_gpu", "recipe_search_paper", "recipe_search_gpu_call1", "recipe_search_gpu_call2",
               "gpu/gpu_check_2026-12-04.log")


def missing_note(name: str) -> str:
    command = RERUN.get(name, f".venv/bin/python benchmarks/{name}.py")
    needs = "; needs a GPU" if name in GPU_RESULTS else ""
    file = name if name.endswith(".log") else f"{name}.json"
    return f"*No result yet ({file}{needs}): run `{command}`.*"


def render(template: str, results: dict) -> str:
    """Fill every placeholder; a missing result's note appears once per section (between headings)."""
    def render_section(section: str) -> str:
        noted: set[str] = set()

        def replace(match: re.Match) -> str:
            kind, spec = match.group(1), match.group(2).strip()
            try:
                if kind == "table":
                    return TABLES[spec](results)
                if kind == "meta":
                    return meta(results, spec)
                return value(results, spec)
            except MissingResult as missing:
                if kind == "value":
                    return "(not measured)"
                if str(missing) in noted:
                    return ""
                noted.add(str(missing))
                return missing_note(str(missing))

        text = PLACEHOLDER.sub(replace, section)
        return re.sub(r"\n{3,}", "\n\n", text)  # a placeholder rendered as nothing leaves no gap

    sections = re.split(r"(?m)^(?=#{1,6} )", template)
    return "".join(render_section(section) for section in sections)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="benchmarks/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="render without writing (the smoke test)")
    args = parser.parse_args(argv)
    text = render(args.template.read_text(), load_results(args.results))
    if not args.check:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
