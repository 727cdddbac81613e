"""The one object per viewer that the widgets talk to: it wires the workflow's state, workers and layers.

Widgets are views: they read the controller, call its methods with what the user set, and redraw on its
signals. The controller holds the signals, the order of the steps and the clustering / selection step;
each other job has its module, and the controller keeps their attributes under their old names:

- ``workflow.WorkflowState``: what the user made and chose, and the run shown (pure);
- ``workers.TaskRunner``: every long job is a ``tasks`` function run in a napari thread worker, which never
  touches a layer or a widget; results come back on the main thread, and only then are layers and runs
  updated. An error in a worker or in a result handler is shown as one clean notification, and the
  widgets' status line says what failed;
- ``layers.NucleiLayers``: adds and paints phenossl's layers, and hands back the cells the user picks in them;
- ``plate_steps.PlateSteps`` (segment, tile, reopen nuclei) and ``run_steps.RunSteps`` (train, measure,
  embed, cancel): the workers of steps 1 and 3 and what their results change;
- ``napari_compat``: the only place that touches napari's private attributes;
- the pure helpers ``plate``, ``cells``, ``layer_tables``.
"""

from __future__ import annotations

import weakref
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from phenossl.config import SegmentConfig, TileConfig
from phenossl.errors import InputError
from phenossl.napari import cells as cellsmod
from phenossl.napari import report_tasks, run_tasks, tasks
from phenossl.napari.cells import SIZES_LISTED, cluster_sizes_text
from phenossl.napari.compositions import CompositionDraft
from phenossl.napari.field_names import install_field_names
from phenossl.napari.layer_tables import MANUAL_COLUMN, warm_label_colormaps
from phenossl.napari.layers import (
    CENTROIDS_NAME,
    NUCLEI_NAME,
    POINT_SELECTION_MAX,
    SELECTED_NAME,
    TYPICAL_NAME,
    NucleiLayers,
)
from phenossl.napari.napari_compat import quiet_worker_class
from phenossl.napari.plate import stack_shape_text
from phenossl.napari.plate_steps import PlateSteps
from phenossl.napari.run_steps import RunSteps
from phenossl.napari.session import RunRecord, Session, default_session_folder
from phenossl.napari.workers import TASK_NAMES, TaskRunner
from phenossl.napari.workflow import WorkflowState, open_session

__all__ = [  # the names widgets, tests and scripts import from here (several now live in the modules above)
    "CENTROIDS_NAME", "MANUAL_COLUMN", "NUCLEI_NAME", "POINT_SELECTION_MAX", "SELECTED_NAME", "SIZES_LISTED",
    "TASK_NAMES", "TYPICAL_NAME", "UMAP_FIRST_NOTE", "SessionController", "cluster_sizes_text",
    "controller_for", "quiet_worker_class", "stack_shape_text",
]

UMAP_FIRST_NOTE = (
    "UMAP layout: a few seconds, up to ~30 s for 100k cells "
    "(~20 s more on a computer's first use: numba compiles)"
)


class _Part:
    """An attribute of one of the controller's parts, read and set on the controller under its own name."""

    def __init__(self, part: str) -> None:
        self.part = part

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, controller: Any, owner: type | None = None) -> Any:
        return self if controller is None else getattr(getattr(controller, self.part), self.name)

    def __set__(self, controller: Any, value: Any) -> None:
        setattr(getattr(controller, self.part), self.name, value)


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
    train_event = Signal(object)  # SetUp / StepProgress / EpochDone (phenossl.train)
    training_finished = Signal(object)  # tasks.TrainOutcome
    comparison_ready = Signal(object)  # run_tasks.RunComparison
    evaluation_ready = Signal(object)  # pandas DataFrame: phenossl.evaluate's table
    report_ready = Signal(object)  # report_tasks.ClusterReport of the shown clustering
    task_state = Signal(str, bool)  # task name, running
    status = Signal(str)  # one line for the widgets' status labels

    # the workflow state (``workflow.WorkflowState``) and the layers (``layers.NucleiLayers``) by their names
    session = _Part("state")
    plate = _Part("state")
    nuclei = _Part("state")
    segmentation = _Part("state")
    tiles = _Part("state")
    input_section = _Part("state")
    drafts = _Part("state")
    weight_a = _Part("state")
    k = _Part("state")
    n_nearest = _Part("state")
    active = _Part("state")
    selected = _Part("state")
    current_cell = _Part("state")
    explore_after_training = _Part("state")
    labels_layer = _Part("painter")
    points_layer = _Part("painter")
    typical_layer = _Part("painter")
    selection_layer = _Part("painter")

    def __init__(self, viewer) -> None:
        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.state = WorkflowState(Session(default_session_folder()))
        self.runner = TaskRunner(self.task_state.emit, self._failed)
        self.painter = NucleiLayers(
            lambda: self.viewer, self.state, self.runner, on_picked=self._follow_selection,
            on_nuclei_changed=self.nuclei_changed.emit, on_painted=self.layers_painted.emit,
        )
        self.plate_steps = PlateSteps(self)
        self.run_steps = RunSteps(self)
        install_field_names(viewer)  # the field slider names plate / well / site, for layers added any way
        self._launch("warm-up", tasks.warm_up, progress=False)
        self._launch("warm-up", warm_label_colormaps, progress=False)

    @property
    def viewer(self):
        viewer = self._viewer_ref()
        if viewer is None:
            raise RuntimeError("the napari viewer of this phenossl session was closed")
        return viewer

    def running(self, task: str) -> bool:
        return self.runner.running(task)

    @property
    def busy(self) -> bool:
        """True while any worker runs, including a chain (train -> embed -> cluster -> UMAP) in progress:
        the next task starts in the previous one's result handler, before it reports finished."""
        return self.runner.busy

    def _launch(self, task: str, func, *args, **kwargs):
        return self.runner.launch(task, func, *args, **kwargs)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.emit(f"{what} failed: {exc}")

    # ------------------------------------------------------------------------------------------
    # session folder

    def set_session_folder(self, folder: str | Path) -> None:
        """Use ``folder`` for the next tiles and runs; an existing session folder is reopened."""
        session = self.state.session = open_session(folder)
        self.state.active = None
        self.session_changed.emit()
        self.runs_changed.emit()
        self.active_run_changed.emit()
        if session.store is not None:
            self.plate_steps.reopen_nuclei(session.store)
            self.store_changed.emit()
        latest = self.state.latest_embedded()
        if latest is not None:
            self.activate_run(latest)
        self.status.emit(f"Session folder {session.folder}: {len(session.runs)} run(s)")

    # ------------------------------------------------------------------------------------------
    # 1. segment and tile

    def segment(self, nuclear_layer, segmentation: SegmentConfig):
        """Segment the nuclear layer's fields in a worker; adds the nuclei Labels and centroid Points."""
        return self.plate_steps.segment(nuclear_layer, segmentation)

    def make_tiles(self, image_layers: list, nuclear_layer, labels_layer, tiles: TileConfig):
        """Tile every field from the labels as they are in ``labels_layer`` (user corrections included).

        Everything is checked before any layer, table or setting changes: a refused input loses nothing.
        Reading the layers, measuring the nuclei and tiling run in the worker."""
        return self.plate_steps.make_tiles(image_layers, nuclear_layer, labels_layer, tiles)

    # ------------------------------------------------------------------------------------------
    # 2. compositions

    def set_draft(self, branch: str, draft: CompositionDraft) -> None:
        self.drafts[branch] = draft
        self.compositions_changed.emit()

    def set_weight(self, weight_a: float) -> None:
        self.state.weight_a = float(weight_a)
        self.compositions_changed.emit()

    def compositions(self) -> dict[str, Any]:
        return self.state.compositions()

    def request_preview(self, cell_id: int, n: int = 6, seed: int = 0, out_size: int = 64) -> None:
        """Augmented views of one cell for A and B, in a worker; the newest request wins."""
        from phenossl.augment.specs import resolve_composition

        store = self.session.store or (self.active.tile_store() if self.active else None)
        if store is None or not 0 <= cell_id < store.n_cells:
            return
        is_newest = self.runner.newest("preview")
        tile = np.array(store.tiles[cell_id], dtype=np.float32)
        compositions = {  # 'auto' crops resolved as training will
            branch: resolve_composition(composition, store.nucleus_diameter, store.tile_size)
            for branch, composition in self.compositions().items()
        }
        self._launch(
            "preview", tasks.preview_compositions, tile, compositions, cell_id=cell_id, n=n, seed=seed,
            out_size=out_size, progress=False, on_returned=partial(self._preview_done, is_newest),
        )

    def _preview_done(self, is_newest, preview) -> None:
        if is_newest():
            self.preview_ready.emit(preview)

    # ------------------------------------------------------------------------------------------
    # 3. train

    def start_training(
        self, train: dict[str, Any], *, seed: int = 0, init_from: str | None = None
    ) -> RunRecord:
        """Create the next run folder and train it in a worker; then embed, cluster and lay out (UMAP)."""
        return self.run_steps.start_training(train, seed=seed, init_from=init_from)

    def start_baseline(self, representation: str, train: dict[str, Any], *, seed: int = 0) -> RunRecord:
        """A run whose cells are represented without training, to compare trained runs with: CellProfiler
        measurements (``cellprofiler``, measured in a worker) or the chosen encoder untrained
        (``random-init``). Then clustered like any run."""
        return self.run_steps.start_baseline(representation, train, seed=seed)

    def cancel_training(self) -> None:
        """Stop the training before its next step (the last epoch's checkpoint is kept), or the embedding
        that follows it (the checkpoint is kept; Runs > Embed cells embeds it later)."""
        self.run_steps.cancel()

    def embed(self, record: RunRecord, *, cancel=None):
        """Embed every cell with the run's checkpoint (worker), then show the run and cluster it.

        The Train step's Cancel stops it; after a training it shares the training's ``cancel``. A run of
        CellProfiler measurements is measured again instead."""
        return self.run_steps.embed(record, cancel=cancel)

    # ------------------------------------------------------------------------------------------
    # 4. clusters, UMAP, selection

    def activate_run(self, name: str) -> None:
        """Show run ``name``: its clusters on the plate, its UMAP and gallery (clustering if needed)."""
        record = self.state.show_run(name)
        self.painter.show_selection()
        self.active_run_changed.emit()
        if record.clustering is not None:
            self.painter.repaint()
            self.clustering_changed.emit()
            self.umap_changed.emit()
        elif record.has_embeddings:  # as the run's configuration says (its algorithm too)
            cluster = record.config.cluster
            self.recluster(cluster.k, algorithm=cluster.algorithm, min_cluster_size=cluster.hdbscan.min_cluster_size)
        else:
            self.painter.repaint()  # no clusters: the plate goes back to the segmentation's colours
            if record.has_checkpoint and record.status not in ("training",):
                self.status.emit(f"{name} has a checkpoint but no embeddings: embed it to see its clusters")

    def recluster(self, k: int, n_nearest: int | None = None, algorithm: str | None = None,
                  min_cluster_size: int | None = None):
        """K-Means with ``k`` on the shown run's cached embeddings (instant: no re-embedding), or the ``algorithm``
        chosen (phenossl.cluster.algorithms: gmm with k components, hdbscan with ``min_cluster_size``).

        Exploration: the run's saved clustering (clusters.csv, metrics.json, its config's k) is left as it
        is; ``save_clustering`` makes the shown one the run's result."""
        record = self.active
        if record is None:
            raise InputError("no run is shown: train one (step 3) or pick one in Runs")
        if not record.has_embeddings:
            raise InputError(f"run {record.name} has no embeddings yet")
        self.state.k = int(k)
        if n_nearest is not None:
            self.state.n_nearest = int(n_nearest)
        if algorithm is not None:
            self.state.algorithm = algorithm
        if min_cluster_size is not None:
            self.state.min_cluster_size = int(min_cluster_size)
        algorithm, params = self.cluster_choice(record)
        return self._launch(
            "cluster", tasks.cluster_run, record, self.k, self.n_nearest, space=record.space, defer_save=True,
            algorithm=algorithm, params=params,
            progress={"desc": f"Clustering {record.name} ({self._choice_words()})"},
            on_returned=partial(self._clustered, record),
        )

    def cluster_choice(self, record: RunRecord) -> tuple[str, dict]:
        """The algorithm chosen in the Clusters step and its parameters (the run's own for the rest)."""
        settings = record.config.cluster.model_copy(deep=True)
        settings.algorithm = self.state.algorithm
        settings.hdbscan.min_cluster_size = self.state.min_cluster_size
        return settings.algorithm, settings.algorithm_params()

    def _choice_words(self) -> str:
        if self.state.algorithm == "hdbscan":
            return f"HDBSCAN, min cluster size {self.state.min_cluster_size}"
        return f"k={self.k}" if self.state.algorithm == "kmeans" else f"{self.state.algorithm}, k={self.k}"

    def suggest_k(self, label_column: str | None = None, algorithm: str | None = None, *, on_returned=None):
        """Score k = 2..15 on the shown run's cached embeddings in a worker (silhouette, and AMI with
        ``label_column``); ``on_returned`` gets the KCurve on the main thread."""
        record = self.active
        if record is None or not record.has_embeddings:
            raise InputError("no run with embeddings is shown: train one (step 3) or pick one in Runs")
        if algorithm is not None:
            self.state.algorithm = algorithm
        algorithm, params = self.cluster_choice(record)
        return self._launch(
            "suggest-k", tasks.suggest_k_run, record, record.space, algorithm=algorithm, params=params,
            label_column=label_column, progress={"desc": f"Scoring k = 2..15 for {record.name}"},
            on_returned=on_returned,
        )

    def clustering_is_saved(self, record: RunRecord | None = None) -> bool:
        """True when the shown clustering of ``record`` (default: the shown run) is its saved one."""
        return self.state.clustering_is_saved(record)

    def save_clustering(self):
        """Make the shown clustering the run's result (clusters.csv, metrics.json, config.yaml's k), in a
        worker. The widget asks before replacing the saved one."""
        record = self.active
        if record is None or record.clustering is None:
            raise InputError("no clusters to save: train a run and cluster it first")
        self.state.first_clusterings.pop(record.name, None)  # the user's choice wins over the automatic first save
        # (one already writing checks under the run folder's lock that nothing was saved meanwhile)
        outcome = tasks.ClusterOutcome(record.space, record.clustering, record.metrics, record.umap)
        return self._launch(
            "save-clustering", tasks.save_clustering, record, outcome,
            progress={"desc": f"Saving {record.name}'s clustering"},
            on_returned=partial(self._clustering_saved, record),
        )

    def _clustering_saved(self, record: RunRecord, _result=None, *, quiet: bool = False) -> None:
        self.saved_clustering_changed.emit()
        if not quiet:
            k = record.config.cluster.k
            self.status.emit(f"{record.name}: the clustering with k={k} is now the run's result")

    def _clustered(self, record: RunRecord, outcome: tasks.ClusterOutcome) -> None:
        record.space, record.clustering, record.metrics = outcome.space, outcome.clustering, outcome.metrics
        if outcome.umap is not None:
            record.umap = outcome.umap
        if outcome.save_pending:
            self.state.first_clusterings[record.name] = outcome  # saved with its layout when the UMAP is done
        if record is not self.active:
            return
        self.painter.repaint()
        sizes = cluster_sizes_text(outcome.clustering.sizes)
        if outcome.clustering.n_noise:
            sizes += f", and {outcome.clustering.n_noise:,} noise cells in none"
        from phenossl.napari.session import config_choice_words

        exploring = f" (exploring: the run's saved clustering is {config_choice_words(record.config)})"
        self.status.emit(f"{record.name}: {sizes}" + ("" if self.clustering_is_saved(record) else exploring))
        self.clustering_changed.emit()
        self.saved_clustering_changed.emit()
        if record.umap is None and not self.running("umap"):
            self._start_umap(record)
        else:
            self.umap_changed.emit()

    def _start_umap(self, record: RunRecord) -> None:
        self._launch("umap", tasks.umap_run, record, record.space, progress={"desc": UMAP_FIRST_NOTE},
                     on_returned=partial(self._umap_done, record))
        self.status.emit(UMAP_FIRST_NOTE + "...")

    def _umap_done(self, record: RunRecord, layout: np.ndarray) -> None:
        record.umap = layout
        first = self.state.first_clusterings.pop(record.name, None)
        if first is not None:  # the run's first clustering: saved now, with its layout, in a worker
            outcome = tasks.ClusterOutcome(first.space, first.clustering, first.metrics, layout)
            self._launch("save-first-clustering", tasks.save_clustering, record, outcome, first=True,
                         progress={"desc": f"Saving {record.name}'s clustering"},
                         on_returned=partial(self._clustering_saved, record, quiet=True))
        if record is self.active:
            self.umap_changed.emit()
            self.painter.repaint()  # the layers' umap_x / umap_y columns
            self.status.emit(f"{record.name}: UMAP layout ready")
        elif self.active is not None and self.active.umap is None and self.active.space is not None:
            self._start_umap(self.active)  # the user switched runs meanwhile: lay out the shown one too

    def cluster_colors(self) -> np.ndarray:
        return self.state.cluster_colors()

    def select_cells(self, rows: np.ndarray, *, describe: str | None = None) -> None:
        """Select cells (store rows of the shown run): highlighted in the UMAP, the centroid Points and the
        rings, and named in the status line (``describe`` says how they were picked)."""
        selected = self.state.select(rows)
        self.painter.select_points(selected)
        self.painter.show_selection()
        self.selection_changed.emit()
        count = cellsmod.cell_count(selected.size, "selected")
        self.status.emit(f"{describe}: {count}" if describe else count)

    def select_cluster(self, cluster: int) -> None:
        record = self.active
        if record is not None and record.clustering is not None:
            rows = np.flatnonzero(record.clustering.labels == cluster)
            self.select_cells(rows, describe=f"cluster {cluster}")

    def _follow_selection(self, picked: np.ndarray) -> None:
        """Cells picked outside phenossl (napari's selection, another plugin) become phenossl's selection."""
        selected = self.state.select(picked)
        with self.painter.syncing():
            self.painter.show_selection()
        self.selection_changed.emit()
        self.status.emit(cellsmod.cell_count(selected.size, "selected"))
        if selected.size == 1:
            self.set_current_cell(int(selected[0]))

    def set_current_cell(self, row: int) -> None:
        if row != self.current_cell:
            self.state.current_cell = int(row)
            self.current_cell_changed.emit(self.current_cell)

    def go_to_cell(self, row: int) -> None:
        """Centre the viewer on a cell (switching to its field), select it, and preview it."""
        store = self.state.shown_store()
        if store is None:
            return
        where = cellsmod.cell_location(store.cells, row, self.state.field_keys(store))
        self.painter.center_on(where, store.tile_size)
        self.select_cells(np.array([row]))
        self.set_current_cell(row)

    # ------------------------------------------------------------------------------------------
    # 5. runs and export

    def compare(self, name_a: str, name_b: str):
        """Compare two runs in a worker, each with the clusters it shows now (a run not shown yet has its
        clusters read from its folder): which clusters moved, what they follow now, the pictures; the result
        comes as ``comparison_ready``."""
        runs = self.session.runs
        if name_a not in runs or name_b not in runs:
            raise InputError("pick two runs of this session to compare (train a second run first)")
        return self._launch(
            "compare", run_tasks.compare_runs, runs[name_a], runs[name_b],
            progress={"desc": f"Comparing {name_a} and {name_b}"}, on_returned=self.comparison_ready.emit,
        )

    def evaluate(self, label: str, within: str | None = None, controls: str | None = None):
        """Score every run with embeddings against ``label`` (worker; the table comes as
        ``evaluation_ready``)."""
        from phenossl.evaluate import EvaluationSettings

        if controls:
            from phenossl.perturbation import parse_selector

            parse_selector(controls)  # a typo is reported now, not from the worker
        settings = EvaluationSettings(label=label, within=within or None, controls=controls or None)
        return self._launch(
            "evaluate", run_tasks.evaluate_runs, list(self.session.runs.values()), settings,
            progress={"desc": f"Evaluating runs against {label}"}, on_returned=self.evaluation_ready.emit,
        )

    def report_on_shown(self):
        """What the shown clustering of the shown run follows (``phenossl report``'s table and reading), in a
        worker; the newest request's result comes as ``report_ready``."""
        record = self.active
        if record is None or record.clustering is None:
            raise InputError("no clusters to report on: show a run with clusters first (Show this run)")
        is_newest = self.runner.newest("report")
        return self._launch(
            "report", report_tasks.report_clusters, record, record.clustering.labels, record.space,
            progress={"desc": f"Reporting on {record.name}'s clusters"},
            on_returned=partial(self._report_done, is_newest),
        )

    def _report_done(self, is_newest, result) -> None:
        if is_newest():
            self.report_ready.emit(result)

    def save_report(self, result, *, overwrite: bool = False, on_saved=None):
        """Write ``result`` (a report of a run's saved clustering) beside its run (worker); ``on_saved`` gets
        the paths, or ``FilesExist`` instead of files replaced, so the widget can ask first."""
        record = self.session.runs.get(result.run)
        if record is None:
            raise InputError(f"run {result.run} is no longer in this session: report on a shown run again")
        return self._launch(
            "save-report", report_tasks.save_report, record, result, overwrite=overwrite,
            progress={"desc": f"Saving {record.name}'s report"}, on_returned=on_saved,
        )

    def start_export(self, csv_path: str | Path, *, overwrite: bool = False, fmt: str = "csv",
                     on_returned=None):
        """Export the shown run in format ``fmt`` (csv, h5ad, profiles) (worker). The worker returns the
        OutputExistsError instead of raising it, so the widget can ask before overwriting. ``on_returned`` is
        connected before the worker starts (a quick worker can return before a later ``connect``)."""
        record = self.active
        if record is None or record.clustering is None:
            raise InputError("no clusters to export: train a run and cluster it first")
        return self._launch(
            "export", tasks.export_run, record, Path(csv_path), overwrite=overwrite, fmt=fmt,
            progress={"desc": "Exporting clusters"}, on_returned=on_returned,
        )


_CONTROLLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def controller_for(viewer) -> SessionController:
    """The viewer's controller, shared by all phenossl widgets docked in it (made on first use)."""
    controller = _CONTROLLERS.get(viewer)
    if controller is None:
        controller = SessionController(viewer)
        _CONTROLLERS[viewer] = controller
    return controller
