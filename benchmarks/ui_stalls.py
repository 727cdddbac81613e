"""Study 3d: does the napari viewer ever freeze? The longest UI-thread stall of each plugin action.

A stall probe is a Qt timer ticking every ``--interval-ms`` (10 ms) on the viewer's event loop; each tick
records how late it fired. While the UI thread runs a long handler (painting clusters, building a colormap,
adding a layer) no tick can fire, so the first tick after it is late by the handler's length: the longest
late tick during an action is that action's UI stall, what the user feels as a frozen viewer. A worker
thread that holds the GIL for a long stretch stalls the probe too, and counts: the viewer is as frozen.

A real napari viewer (``napari.Viewer(show=True)``: run it under ``xvfb-run -a`` where there is no screen)
is driven through phenossl's controller, with the whole workflow widget docked as a user has it (its UMAP
plot, gallery and run list redraw on the controller's signals): open a plate, segment it, make tiles, show
a run's clusters, recluster, select a cluster, go to a cell, get a UMAP layout, reopen the session folder.
Runs are made with embeddings written directly (no training: training does not paint). Every action is
started from inside the Qt event loop and the loop keeps running (probe ticking) until the controller is
no longer busy and the action's signal came, then ``--settle-s`` more so the redraws it queued count too.

Two scales, each in its own fresh process (first calls pay imports and caches, as a user's first click):
``sample`` is phenossl's bundled synthetic plate (8 fields, ~550 cells); ``100k`` is a synthetic plate of
small discs (``--cells`` nuclei, 1024 x 1024 fields, one DNA channel) that the classical backend segments
as the user would, tiled at 32 px, with runs of random 512-d embeddings (Gaussian blobs).

``--label`` names the code measured (``before``, ``after``): results are merged into
benchmarks/results/ui_stalls.json under it, scale by scale, so a later run adds its rows beside earlier
ones. ``--profile`` reruns each scale under cProfile (main thread only: the UI thread's time) and records
the hot spots of every action; profiled timings are inflated and never replace the probe's numbers.

    xvfb-run -a .venv/bin/python benchmarks/ui_stalls.py --label after --repeats 3 --profile
    xvfb-run -a .venv/bin/python benchmarks/ui_stalls.py --label after --scales sample
    .venv/bin/python benchmarks/ui_stalls.py --table          # print the stored table
    xvfb-run -a .venv/bin/python benchmarks/ui_stalls.py --smoke --out /tmp/u.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import pstats
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    RESULTS_DIR,
    command_line,
    git_state,
    load_average,
    log,
    machine_info,
    study_parser,
    write_json,
)

STUDY = "ui_stalls"
SCALES = ("sample", "100k")
ACTIONS = (
    "segment",  # the segmentation's result shown: nuclei Labels + centroid Points
    "make_tiles",  # the per-cell table rebuilt, tiles made in a worker, cells marked tiled
    "first_cluster_paint",  # a run with embeddings activated: clustered in a worker, painted (first time)
    "recluster",  # another k
    "select_cluster",  # every cell of the largest cluster selected (rings, points, UMAP highlight)
    "go_to_cell",  # the viewer centred on a cell (field switch), the cell selected
    "umap_result",  # a second run activated: clustered, painted, then its UMAP computed and shown
    "reopen_session",  # a new viewer with the plate open, then the session folder reopened
)
BUDGET_MS = 200.0
SIGNALS = (
    "session_changed",
    "nuclei_changed",
    "store_changed",
    "runs_changed",
    "active_run_changed",
    "clustering_changed",
    "umap_changed",
    "selection_changed",
    "current_cell_changed",
    "task_state",
)
#: the signal an action's result ends with (waited for, besides the controller no longer being busy)
EXPECTED_SIGNAL = {
    "segment": "nuclei_changed",
    "make_tiles": "store_changed",
    "first_cluster_paint": "clustering_changed",
    "recluster": "clustering_changed",
    "select_cluster": "selection_changed",
    "umap_result": "umap_changed",
    "reopen_session": "clustering_changed",
}
DIMS = 512


# --- the probe and the driver (child process, Qt) -----------------------------------------------------------


class StallProbe:
    """A precise Qt timer on the UI thread; each tick records (time, gap since the previous tick, CPU time the
    UI thread used in that gap). On a machine shared with other jobs a gap also holds time the UI thread
    waited for a core; its CPU time does not: the work itself, what a faster or idle machine would still show."""

    def __init__(self, interval_ms: int):
        from qtpy.QtCore import Qt, QTimer

        self.interval = interval_ms / 1000
        self.ticks: list[tuple[float, float, float]] = []
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.ticks.append((now, now - self._last, cpu - self._last_cpu))
        self._last, self._last_cpu = now, cpu

    def reset(self) -> None:
        """Forget the ticks; the next gap is counted from now (time outside the event loop is not a stall)."""
        self.ticks.clear()
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()

    def late(self, start: float, end: float) -> list[tuple[float, float]]:
        """(tick time, lateness in s) of the ticks that fired in (start, end]."""
        return [(t, max(0.0, gap - self.interval)) for t, gap, _ in self.ticks if start < t <= end]

    def busy_cpu(self, start: float, end: float) -> list[tuple[float, float]]:
        """(tick time, UI-thread CPU s in the gap, less one interval) of the ticks that fired in (start, end]."""
        return [(t, max(0.0, cpu - self.interval)) for t, _, cpu in self.ticks if start < t <= end]


class Driver:
    """A shown napari viewer, phenossl's controller (and widgets), the probe, and one measured action at a time."""

    def __init__(self, args: argparse.Namespace, label: str):
        from napari.utils.notifications import notification_manager

        self.args = args
        self.label = label
        self.marks: list[tuple[float, str]] = []
        self.statuses: list[str] = []
        self.errors: list[str] = []
        self.viewer = self.widget = self.controller = None
        self.open_viewer()
        notification_manager.notification_ready.connect(self._notified)
        self.probe = StallProbe(args.interval_ms)
        self.profiler = None

    def open_viewer(self) -> None:
        """A new shown viewer with the workflow widget docked (unless --no-widgets) and its controller; the
        previous viewer, if any, is closed (as a user quitting napari and starting it again)."""
        import napari
        from phenossl.napari.controller import controller_for

        if self.viewer is not None:
            self.viewer.close()
        self.viewer = napari.Viewer(show=True, title=f"phenossl ui_stalls ({self.label})")
        self.widget = None
        if not self.args.no_widgets:
            from phenossl.napari.widgets.workflow_widget import WorkflowWidget

            self.widget = WorkflowWidget(self.viewer)
            self.viewer.window.add_dock_widget(self.widget, name="phenossl", area="right")
        self.controller = controller_for(self.viewer)
        for name in SIGNALS:
            signal = getattr(self.controller, name, None)
            if signal is not None:
                signal.connect(partial(self._mark, name))
        if getattr(self.controller, "status", None) is not None:
            self.controller.status.connect(self.statuses.append)

    def _mark(self, name: str, *values: Any) -> None:
        if name == "task_state" and len(values) == 2:
            name = f"{values[0]} {'started' if values[1] else 'done'}"
        self.marks.append((time.perf_counter(), name))

    def _notified(self, notification) -> None:
        severity = str(getattr(notification, "severity", "")).lower()
        if "error" in severity:
            self.errors.append(str(notification.message))

    def idle(self, seconds: float) -> None:
        """Run the event loop for ``seconds`` (layers get drawn), measuring nothing."""
        from qtpy.QtCore import QEventLoop, QTimer

        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def wait_idle(self, timeout_s: float = 600) -> None:
        """Run the event loop until no worker runs (e.g. the controller's warm-up), then settle."""
        start = time.perf_counter()
        while self.controller.busy and time.perf_counter() - start < timeout_s:
            self.idle(0.05)
        self.idle(self.args.settle_s)

    def measure(self, name: str, launch: Callable[[], Any], *, expect: str | None = None,
                timeout_s: float | None = None) -> dict[str, Any]:
        """Start ``launch`` from inside the Qt event loop and keep the loop (and the probe) running until the
        controller is idle and ``expect`` was emitted, then ``settle_s`` more. The action's stalls and times."""
        from qtpy.QtCore import QEventLoop, QTimer

        timeout_s = timeout_s or self.args.action_timeout_s
        if expect is not None and getattr(self.controller, expect, None) is None:
            expect = None  # a controller without that signal: wait on busy alone
        loop = QEventLoop()
        state: dict[str, Any] = {"launched": None, "returned": None, "done": None, "error": None}
        first_mark = len(self.marks)
        first_status = len(self.statuses)
        first_error = len(self.errors)

        def fire() -> None:
            state["launched"] = time.perf_counter()
            try:
                launch()
            except Exception as exc:  # noqa: BLE001 -- the action itself failed (or a method is missing): recorded, not raised
                state["error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            state["returned"] = time.perf_counter()

        def check() -> None:
            now = time.perf_counter()
            if state["returned"] is None:
                return
            if state["done"] is None:
                seen = expect is None or any(m == expect for _, m in self.marks[first_mark:])
                if state["error"] is not None or (not self.controller.busy and seen):
                    state["done"] = now
                elif len(self.errors) > first_error and not self.controller.busy:
                    state["error"] = self.errors[-1]
                    state["done"] = now
                elif now - state["launched"] > timeout_s:
                    state["error"] = f"timed out after {timeout_s:.0f} s (busy={self.controller.busy}, " \
                                     f"waiting for {expect})"
                    state["done"] = now
            elif now - state["done"] >= self.args.settle_s:
                loop.quit()

        checker = QTimer()
        checker.setInterval(20)
        checker.timeout.connect(check)
        self.probe.reset()
        cpu_start = time.thread_time()
        start = time.perf_counter()
        if self.profiler is not None:
            self.profiler.enable()
        QTimer.singleShot(0, fire)
        checker.start()
        loop.exec()
        checker.stop()
        if self.profiler is not None:
            self.profiler.disable()
        end = time.perf_counter()
        cpu = time.thread_time() - cpu_start
        late = self.probe.late(start, end)
        stalls = [s for _, s in late]
        cpu_late = self.probe.busy_cpu(start, end)
        marks = [(t - start, m) for t, m in self.marks[first_mark:]]
        top = sorted(late, key=lambda x: -x[1])[:5]
        row = {
            "max_stall_ms": 1000 * max(stalls, default=0.0),
            "max_stall_cpu_ms": 1000 * max((c for _, c in cpu_late), default=0.0),
            "wall_s": (state["done"] or end) - start,
            "launch_call_s": (state["returned"] or end) - (state["launched"] or start),
            "main_thread_cpu_s": cpu,
            "stalls_over_budget": sum(s * 1000 > BUDGET_MS for s in stalls),
            "blocked_s_in_stalls_over_50ms": sum(s for s in stalls if s > 0.05),
            "ticks": len(late),
            "top_stalls": [{"at_s": round(t - start, 3), "stall_ms": round(1000 * s, 1),
                            "cpu_ms": round(1000 * cpu_at(cpu_late, t), 1),
                            "after_signal": last_mark_before(marks, t - start)} for t, s in top],
            **result_split(late, marks, start, expect),
            "phases": phase_stalls(late, marks, start, end),
            "signals": [[round(t, 3), m] for t, m in marks][:60],
            "status": self.statuses[-1] if len(self.statuses) > first_status else None,
            "error": state["error"],
        }
        log(f"  {name}: max stall {row['max_stall_ms']:.0f} ms ({row['max_stall_cpu_ms']:.0f} ms CPU), wall {row['wall_s']:.2f} s, main-thread CPU "
            f"{cpu:.2f} s" + (f"  ERROR {state['error']}" if state["error"] else ""))
        return row


def cpu_at(cpu_late: list[tuple[float, float]], at: float) -> float:
    return next((c for t, c in cpu_late if t == at), 0.0)


def last_mark_before(marks: list[tuple[float, str]], at: float) -> str | None:
    before = [m for t, m in marks if t <= at]
    return before[-1] if before else None


def result_split(late: list[tuple[float, float]], marks: list[tuple[float, str]], start: float,
                 expect: str | None) -> dict[str, float]:
    """The longest stall before the action's result signal (the call, workers holding the GIL, earlier
    handlers) and from it on (the result's handler, which emits it at its end, and the redraws it queued)."""
    at = next((t for t, m in marks if m == expect), None) if expect else None
    if at is None:
        return {}
    return {"before_result_ms": round(1000 * max((s for t, s in late if t - start <= at), default=0.0), 1),
            "result_ms": round(1000 * max((s for t, s in late if t - start > at), default=0.0), 1)}


def phase_stalls(late: list[tuple[float, float]], marks: list[tuple[float, str]], start: float,
                 end: float) -> list[dict[str, Any]]:
    """The longest stall between consecutive worker marks ('cluster started', 'cluster done', ...).

    A late tick is counted in the phase in which it fired: a result handler's stall shows right after its
    worker's 'done' mark (the handler runs, then the tick fires), a GIL-holding worker's while it is running."""
    bounds = [(0.0, "start")] + [(t, m) for t, m in marks if m.endswith((" started", " done"))]
    phases = []
    for i, (t0, name) in enumerate(bounds):
        t1 = bounds[i + 1][0] if i + 1 < len(bounds) else end - start
        inside = [s for t, s in late if t0 < t - start <= t1]
        if not inside and i + 1 < len(bounds) and t1 - t0 < 0.02:
            continue
        phases.append({"after": name, "from_s": round(t0, 3), "to_s": round(t1, 3),
                       "max_stall_ms": round(1000 * max(inside, default=0.0), 1)})
    return phases


# --- the plates ----------------------------------------------------------------------------------------------


def sample_layers(n_fields: int) -> list:
    """phenossl's bundled plate (its first ``n_fields`` fields), as napari layer data with the reader's metadata."""
    import copy

    from phenossl.napari.reader import sample_plate

    layers = []
    for data, kwargs, kind in sample_plate():
        kwargs = copy.deepcopy(kwargs)
        meta = kwargs.get("metadata", {}).get("phenossl")
        if meta is not None and n_fields < data.shape[0]:
            for key in ("keys", "shapes", "plates", "wells", "sites", "field_table"):
                if isinstance(meta.get(key), list):
                    meta[key] = meta[key][:n_fields]
        layers.append((np.ascontiguousarray(data[:n_fields]), kwargs, kind))
    return layers


def synthetic_plate(cells: int, field_size: int, spacing: int, radius: int, seed: int = 0) -> np.ndarray:
    """(F, Y, X) uint16 nuclear stain: ``cells`` bright discs of ``radius`` px on a jittered grid (``spacing``
    px apart, so that they never touch) over a noisy background, as many fields as they need."""
    rng = np.random.default_rng(seed)
    per_side = field_size // spacing
    per_field = per_side * per_side
    n_fields = math.ceil(cells / per_field)
    index = np.arange(cells)
    field, slot = index // per_field, index % per_field
    jitter = spacing // 2 - radius - 1
    cy = spacing // 2 + (slot // per_side) * spacing + rng.integers(-jitter, jitter + 1, cells)
    cx = spacing // 2 + (slot % per_side) * spacing + rng.integers(-jitter, jitter + 1, cells)
    image = rng.integers(90, 111, size=(n_fields, field_size, field_size), dtype=np.uint16)
    brightness = rng.integers(600, 1400, cells).astype(np.uint16)
    dy, dx = np.nonzero(np.add.outer(np.arange(-radius, radius + 1) ** 2, np.arange(-radius, radius + 1) ** 2)
                        <= radius**2)
    for oy, ox in zip(dy - radius, dx - radius, strict=True):
        image[field, cy + oy, cx + ox] += brightness
    return image


def synthetic_plate_metadata(n_fields: int, field_size: int) -> dict[str, Any]:
    """The reader's layer metadata for the synthetic plate (keys, wells, sites, a treatment per well), as a
    plate opened with phenossl's reader has it."""
    from phenossl.napari.plate import PlateInfo

    sites_per_well = 4
    wells = [f"{'BCDEFG'[(f // sites_per_well) // 10 % 6]}{(f // sites_per_well) % 10 + 2:02d}"
             for f in range(n_fields)]
    sites = [f % sites_per_well + 1 for f in range(n_fields)]
    keys = [f"SYN100K_{well}_s{site}" for well, site in zip(wells, sites, strict=True)]
    table = [{"key": key, "plate": "SYN100K", "well": well, "site": site,
              "compound": f"compound_{(f // sites_per_well) % 4}"}
             for f, (key, well, site) in enumerate(zip(keys, wells, sites, strict=True))]
    info = PlateInfo(keys=keys, shapes=[(field_size, field_size)] * n_fields, plates=["SYN100K"] * n_fields,
                     wells=wells, sites=sites, channel="DNA", field_table=table)
    return info.to_metadata()


def blob_embeddings(n: int, dims: int, seed: int, groups: int = 12) -> np.ndarray:
    """Random embeddings in Gaussian groups (clusters to find, as trained embeddings have)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(groups, dims)).astype(np.float32)
    out = rng.normal(size=(n, dims)).astype(np.float32)
    out += centres[rng.integers(0, groups, n)]
    return out


def make_run(controller, *, k: int, seed: int, tile_size: int, dims: int, with_umap: bool) -> str:
    """A run of the controller's session with embeddings written directly, as if trained and embedded
    (and, ``with_umap``, a UMAP layout already saved: no UMAP worker when it is shown)."""
    from phenossl.napari.session import run_config

    config = run_config(train={"device": "cpu"}, segmentation={}, tiles={"size": tile_size, "border": "pad"},
                        input_section={"kind": "plate"}, cluster={"k": k}, seed=seed)
    record = controller.session.new_run(config)
    record.status = "trained"
    n_cells = controller.session.store.n_cells
    np.save(record.paths.embeddings, blob_embeddings(n_cells, dims, seed))
    if with_umap:
        np.save(record.paths.umap, np.random.default_rng(seed).normal(size=(n_cells, 2)))
    controller.runs_changed.emit()
    return record.name


# --- one scale (child process) --------------------------------------------------------------------------------


def code_info() -> dict[str, Any]:
    """Which phenossl was measured (``PYTHONPATH`` may point at another checkout) and its commit."""
    import phenossl

    src = Path(phenossl.__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(src), *argv], capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"phenossl_file": str(Path(phenossl.__file__).resolve()), "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--", "."))}


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Every action on one scale, in this process's own viewer."""
    import cProfile

    from phenossl.config import SegmentConfig, TileConfig

    scale = args.child
    work = args.cache_dir / f"ui-stalls-{args.label}-{scale}{'-profile' if args.profile_child else ''}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    driver = Driver(args, args.label)
    notes: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    profiles: dict[str, Any] = {}

    def action(name: str, launch: Callable[[], Any], **kwargs: Any) -> None:
        if args.profile_child:
            driver.profiler = cProfile.Profile()
        rows[name] = driver.measure(name, launch, expect=EXPECTED_SIGNAL.get(name), **kwargs)
        if driver.profiler is not None:
            path = work.parent / "ui-stalls-profiles" / f"{args.label}-{scale}-{name}.prof"
            path.parent.mkdir(parents=True, exist_ok=True)
            driver.profiler.dump_stats(path)
            profiles[name] = profile_summary(driver.profiler, args.profile_top) | {"prof_file": str(path)}
            driver.profiler = None

    def method(name: str) -> Callable | None:
        found = getattr(driver.controller, name, None)
        if found is None:
            notes.append(f"the controller has no {name}(): the actions that need it were skipped")
        return found

    log(f"[{args.label}] {scale}: viewer up; waiting for the controller's warm-up")
    driver.wait_idle()
    session_folder = work / "session"
    controller = driver.controller
    controller.set_session_folder(session_folder)
    if scale == "sample":
        layer_data = sample_layers(args.sample_fields)
        tile_size = 64
        plate = {"source": "phenossl's bundled synthetic plate"}
    else:
        start = time.perf_counter()
        stack = synthetic_plate(args.cells, args.field_size, args.spacing, args.radius)
        metadata = synthetic_plate_metadata(stack.shape[0], args.field_size)
        layer_data = [(stack, {"name": "DNA", "colormap": "blue", "blending": "additive", "metadata": metadata},
                       "image")]
        tile_size = args.tile_size
        plate = {"source": "synthetic discs (benchmarks/ui_stalls.py synthetic_plate)", "discs": args.cells,
                 "disc_radius_px": args.radius, "spacing_px": args.spacing,
                 "made_in_s": round(time.perf_counter() - start, 2)}

    def open_plate() -> tuple[list, Any]:
        layers = [getattr(driver.viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layer_data]
        driver.idle(1.0)
        return layers, next(layer for layer in layers if layer.name == "DNA")

    layers, nuclear = open_plate()
    plate |= {"fields": int(layers[0].data.shape[0]), "field_shape": list(layers[0].data.shape[1:]),
              "channels": [layer.name for layer in layers]}
    log(f"[{args.label}] {scale}: {plate['fields']} fields of {plate['field_shape']}")

    segment, make_tiles = method("segment"), method("make_tiles")
    if segment is None or make_tiles is None:
        raise SystemExit("the controller cannot segment or make tiles: nothing else can be measured")
    action("segment", lambda: segment(nuclear, SegmentConfig()))
    action("make_tiles", lambda: make_tiles(layers, nuclear, controller.labels_layer,
                                            TileConfig(size=tile_size, border="pad")))
    store = controller.session.store
    if store is None:
        raise SystemExit(f"no tile store after make_tiles: {rows['make_tiles']}")
    n_cells = store.n_cells
    dims = min(DIMS, args.dims)
    run_a = make_run(controller, k=args.k, seed=1, tile_size=tile_size, dims=dims, with_umap=True)
    run_b = make_run(controller, k=args.k, seed=2, tile_size=tile_size, dims=dims, with_umap=False)
    driver.idle(args.settle_s)

    activate, recluster = method("activate_run"), method("recluster")
    select_cluster, go_to_cell = method("select_cluster"), method("go_to_cell")
    if activate is not None:
        action("first_cluster_paint", lambda: activate(run_a))
    if recluster is not None and controller.active is not None:
        action("recluster", lambda: recluster(args.recluster_k))
    clustering = getattr(controller.active, "clustering", None)
    if select_cluster is not None and clustering is not None:
        largest = int(np.argmax(clustering.sizes))
        action("select_cluster", lambda: select_cluster(largest))
    if go_to_cell is not None and controller.active is not None:
        action("go_to_cell", lambda: go_to_cell(n_cells // 2))
    if activate is not None:
        action("umap_result", lambda: activate(run_b), timeout_s=max(args.action_timeout_s, 1800))
    driver.wait_idle()
    canvas_size = list(driver.viewer.canvas.size) if hasattr(driver.viewer, "canvas") else None
    if hasattr(controller, "set_session_folder"):
        # as a user does the next day: a new napari, the plate opened, then the session folder chosen
        driver.open_viewer()
        driver.wait_idle()
        open_plate()
        set_folder = method("set_session_folder")
        action("reopen_session", lambda: set_folder(session_folder))
        driver.wait_idle()
    missing = [a for a in ACTIONS if a not in rows]
    if missing:
        notes.append(f"not measured: {', '.join(missing)}")
    result = {
        "code": code_info(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_end": load_average(),
        "plate": plate,
        "cells": n_cells,
        "settings": {"tile_size": tile_size, "embedding_dims": dims, "k": args.k, "recluster_k": args.recluster_k,
                     "widgets_docked": not args.no_widgets, "interval_ms": args.interval_ms,
                     "settle_s": args.settle_s, "go_to_cell_row": n_cells // 2,
                     "canvas_size": canvas_size},
        "actions": rows,
        "notes": notes,
    }
    if args.profile_child:
        result = {"code": result["code"], "date": result["date"], "cells": n_cells, "actions": profiles,
                  "probe_under_profiler": {a: {"max_stall_ms": r["max_stall_ms"], "wall_s": r["wall_s"]}
                                           for a, r in rows.items()}}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    driver.viewer.close()
    return result


def short_path(filename: str) -> str:
    """A profile entry's file, from its package down (site-packages/... and src/... cut)."""
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return filename


def profile_summary(profiler, top: int) -> dict[str, Any]:
    """The main thread's time during the action: the ``top`` functions by cumulative time and by own time."""
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in stats.stats.items():
        where = f"{short_path(filename)}:{line}({function})" if filename != "~" else function
        rows.append({"function": where, "calls": calls, "own_ms": round(1000 * own, 1),
                     "cumulative_ms": round(1000 * cumulative, 1)})
    return {
        "profiled_s": round(stats.total_tt, 3),
        "by_cumulative": sorted(rows, key=lambda r: -r["cumulative_ms"])[:top],
        "by_own": sorted(rows, key=lambda r: -r["own_ms"])[:top],
    }


# --- parent: children, merging, the table ----------------------------------------------------------------


def run_child(scale: str, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    out = args.cache_dir / f"ui-stalls-{args.label}-{scale}{'-profile' if profile else ''}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", scale, "--child-out", str(out),
               *child_argv(args), *(["--profile-child"] if profile else [])]
    log(f"[{args.label}] {scale}{' (profiled)' if profile else ''}: {' '.join(command[1:])}")
    completed = subprocess.run(command, stdout=subprocess.DEVNULL, timeout=args.child_timeout_s,
                               check=False)
    if completed.returncode != 0 or not out.is_file():
        raise SystemExit(f"{scale} failed (exit {completed.returncode}): see the log above")
    result = json.loads(out.read_text())
    out.unlink()
    return result


REPEATED = ("max_stall_ms", "max_stall_cpu_ms", "wall_s", "main_thread_cpu_s", "before_result_ms", "result_ms")


def combine_repeats(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One scale's entry from its repeats (each a fresh process): every action's numbers are the median over
    the repeats, with each repeat's value in ``<name>_runs``; the phases and top stalls are the first
    repeat's; ``repeats`` keeps each repeat's date and load averages."""
    entry = {key: value for key, value in repeats[0].items() if key != "actions"}
    entry["actions"] = {}
    for action, first in repeats[0]["actions"].items():
        rows = [r["actions"][action] for r in repeats if action in r["actions"]]
        combined = dict(first)
        for name in REPEATED:
            values = [row[name] for row in rows if row.get(name) is not None]
            if values:
                combined[name] = float(np.median(values))
                combined[f"{name}_runs"] = values
        combined["error"] = next((row["error"] for row in rows if row.get("error")), None)
        entry["actions"][action] = combined
    entry["n_repeats"] = len(repeats)
    entry["repeats"] = [{key: r.get(key) for key in ("date", "load_average_start", "load_average_end")}
                        for r in repeats]
    return entry


def child_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--label", args.label, "--cache-dir", str(args.cache_dir), "--cells", str(args.cells),
            "--field-size", str(args.field_size), "--spacing", str(args.spacing), "--radius", str(args.radius),
            "--tile-size", str(args.tile_size), "--sample-fields", str(args.sample_fields), "--k", str(args.k),
            "--recluster-k", str(args.recluster_k), "--dims", str(args.dims), "--interval-ms", str(args.interval_ms),
            "--settle-s", str(args.settle_s), "--action-timeout-s", str(args.action_timeout_s),
            "--profile-top", str(args.profile_top)]
    return argv + (["--no-widgets"] if args.no_widgets else []) + (["--keep"] if args.keep else [])


def merged_record(path: Path | None, label: str, scales: dict, profiles: dict, context: dict) -> dict:
    """The result file with this invocation's scales (and profiles) put under ``label``, others kept."""
    record: dict[str, Any] = {}
    if path is not None and path.is_file():
        record = json.loads(path.read_text())
        if record.get("study") != STUDY:
            raise SystemExit(f"{path} is not a {STUDY} result file")
    results = record.get("results", {})
    entry = results.setdefault(label, {"scales": {}, "profile": {}})
    entry.setdefault("scales", {}).update(scales)
    entry.setdefault("profile", {}).update(profiles)
    record.update(context)
    record["results"] = results
    return record


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per action, one column pair (max stall ms, wall s) per label and scale."""
    columns = [(label, scale) for label, entry in results.items() for scale in SCALES
               if scale in entry.get("scales", {})]
    head = "| action | " + " | ".join(f"{label} {scale}: stall ms (CPU ms) / wall s" for label, scale in columns) \
        + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for action in ACTIONS:
        cells = []
        for label, scale in columns:
            row = results[label]["scales"][scale]["actions"].get(action)
            if row is None:
                cells.append("–")
            else:
                flag = " **!**" if row["max_stall_ms"] > BUDGET_MS else ""
                cpu = row.get("max_stall_cpu_ms")
                cells.append(f"{row['max_stall_ms']:.0f}{flag}" + ("" if cpu is None else f" ({cpu:.0f})")
                             + f" / {row['wall_s']:.2f}" + (" (error)" if row.get("error") else ""))
        lines.append(f"| {action} | " + " | ".join(cells) + " |")
        if action == "umap_result":  # the UMAP's own arrival, apart from the clustering shown before it
            arrived = [results[label]["scales"][scale]["actions"].get(action, {}).get("result_ms")
                       for label, scale in columns]
            lines.append("| umap_result, from the layout's arrival (ms) | "
                         + " | ".join("–" if v is None else f"{v:.0f}" for v in arrived) + " |")
    cells_row = [f"{results[label]['scales'][scale].get('cells')} "
                 f"(median of {results[label]['scales'][scale].get('n_repeats', 1)})" for label, scale in columns]
    lines.append("| cells (runs) | " + " | ".join(cells_row) + " |")
    return "\n".join(lines)


NOTES = [
    ("max_stall_ms: the longest lateness of a 10 ms Qt timer on the UI thread between the action's start and "
     "the end of its settle time (the controller idle, its result signal emitted, then settle_s more); "
     f"the budget is {BUDGET_MS:.0f} ms. wall_s: from the start until the controller was idle with its result."),
    ("max_stall_cpu_ms: the most CPU time the UI thread used between two ticks (less one interval): the "
     "work of the longest uninterrupted UI-thread block, without the time it waited for a core on this shared "
     "2-core machine or for the GIL. With other jobs running, max_stall_ms over-states and this under-states "
     "what an idle machine would show (load averages are recorded)."),
    ("phases: the longest stall between worker marks; a result handler's stall appears right after its "
     "worker's 'done' mark, a worker holding the GIL while it is 'started'. main_thread_cpu_s: CPU the UI "
     "thread used (a stall with little CPU is the UI thread waiting for the GIL)."),
    ("result_ms: the longest stall from the action's result signal on (the result handler emits it at its "
     "end, so this is the handler and the redraws it queued); before_result_ms: before it (the call itself, "
     "workers holding the GIL, earlier handlers). For umap_result, result_ms is the UMAP layout arriving."),
    ("reopen_session: a new viewer (the first one closed), the plate's layers added, then the session folder "
     "of the earlier actions chosen: nuclei rebuilt from the store, the newest run clustered and painted."),
    ("Each scale runs in a fresh process with the workflow widget docked; the viewer is drawn by Mesa's "
     "software OpenGL under Xvfb (texture uploads cost CPU time here, GPU time on a desktop)."),
    ("100k: small discs on 1024 x 1024 fields (about 7200 per field), so costs that grow with pixels (label "
     "stacks, regionprops over images) are smaller than on a real 100k-cell plate of ~400 full fields; costs "
     "that grow with cells (colormaps, tables, points) are those of 100k cells."),
    ("profile: cProfile of the UI thread only, rerun in another process (profiled timings are inflated, "
     "never used as the result); the .prof files stay in the cache folder named in prof_file."),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--label", default="after", help="the code measured: rows are merged under it "
                        "(e.g. before, after); default after")
    parser.add_argument("--scales", default=",".join(SCALES), help=f"comma-separated, of {', '.join(SCALES)}")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh processes per scale; the result is each action's median (on a shared machine "
                             "3 gives steadier numbers)")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, rerun each scale under cProfile and record the hot spots")
    parser.add_argument("--profile-only", action="store_true", help="only the profiled runs (timings kept)")
    parser.add_argument("--profile-top", type=int, default=40, help="functions kept per list in the profile")
    parser.add_argument("--table", action="store_true", help="print the stored results as a table and exit")
    parser.add_argument("--cells", type=int, default=100_000, help="nuclei of the 100k scale's synthetic plate")
    parser.add_argument("--field-size", type=int, default=1024)
    parser.add_argument("--spacing", type=int, default=12, help="px between disc centres")
    parser.add_argument("--radius", type=int, default=4, help="disc radius, px")
    parser.add_argument("--tile-size", type=int, default=32, help="tile size of the 100k scale")
    parser.add_argument("--sample-fields", type=int, default=8, help="fields of the bundled plate used")
    parser.add_argument("--k", type=int, default=6, help="clusters of the runs when first shown")
    parser.add_argument("--recluster-k", type=int, default=10)
    parser.add_argument("--dims", type=int, default=DIMS, help="embedding dimensions of the made-up runs")
    parser.add_argument("--interval-ms", type=int, default=10, help="the probe's tick")
    parser.add_argument("--settle-s", type=float, default=1.0,
                        help="event loop time after an action is done, so the redraws it queued count")
    parser.add_argument("--action-timeout-s", type=float, default=900)
    parser.add_argument("--child-timeout-s", type=float, default=5400)
    parser.add_argument("--no-widgets", action="store_true", help="the controller alone, no docked widget")
    parser.add_argument("--keep", action="store_true", help="keep the session folders in --cache-dir")
    parser.add_argument("--child", choices=SCALES, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke and args.child is None:
        args.cells, args.field_size, args.sample_fields = 400, 256, 2
        args.settle_s, args.dims, args.k, args.recluster_k = 0.3, 16, 3, 4
        if args.label == "after":
            args.label = "smoke"
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child is not None:  # child process: one scale, one JSON file
        import faulthandler

        faulthandler.enable()  # a crash in Qt or OpenGL code prints where it happened
        write_json(args.child_out, run_scale(args))
        return None
    path = args.out if args.out is not None else (None if args.smoke else RESULTS_DIR / f"{STUDY}.json")
    if args.table:
        stored = path or RESULTS_DIR / f"{STUDY}.json"
        print(table(json.loads(stored.read_text())["results"]))
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SystemExit("no screen: the viewer must be shown. Run under xvfb-run -a (see the docstring).")
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    unknown = set(scales) - set(SCALES)
    if unknown:
        raise SystemExit(f"unknown scale(s) {sorted(unknown)}: choose from {', '.join(SCALES)}")
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    load_start = load_average()
    command = command_line(argv)
    timed, profiled = {}, {}
    for scale in scales:
        if not args.profile_only:
            repeats = []
            for _ in range(args.repeats):
                load = load_average()
                repeats.append(run_child(scale, args, profile=False) | {"load_average_start": load})
            timed[scale] = combine_repeats(repeats) | {"command": command}
    if args.profile or args.profile_only:
        for scale in scales:
            profiled[scale] = run_child(scale, args, profile=True)
    context = {
        "study": STUDY, "smoke": bool(args.smoke), "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command, "wall_seconds": round(time.perf_counter() - clock, 1),
        "load_average_start": load_start, "load_average_end": load_average(), "machine": machine_info(None),
        "git": git_state(),
        "settings": {"budget_ms": BUDGET_MS, "actions": list(ACTIONS), "scales": list(SCALES),
                     "expected_signals": EXPECTED_SIGNAL},
        "notes": NOTES,
    }
    record = merged_record(path, args.label, timed, profiled, context)
    if path is not None:
        write_json(path, record)
        log(f"wrote {path}")
    print(table(record["results"]))
    return record


if __name__ == "__main__":
    main()
