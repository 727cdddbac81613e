"""The long jobs the widgets start, as plain functions and generators that call the core. No Qt.

They run in napari ``thread_worker``s, so they must never touch a layer or a widget: they take arrays,
tables and run records, and they yield progress and return results; the controller applies those on
the main thread. User-fixable problems come out as ``PhenosslError`` (napari shows the message as a
notification); anything else is re-raised as :class:`TaskError` with a short message, the original
exception chained. A cancel is not an error: training returns a ``TrainOutcome`` saying so.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.cluster.stage import RunClustering
from phenossl.config import InputConfig, RunConfig, SegmentConfig, TileConfig
from phenossl.errors import Cancelled, NoNucleiError, OutputExistsError, PhenosslError
from phenossl.napari.plate import PlateInfo
from phenossl.napari.session import RunRecord
from phenossl.runlock import run_folder_lock


class TaskError(PhenosslError):
    """An unexpected failure in a task; the message is short, the cause is chained for the traceback."""


@contextlib.contextmanager
def reported_as(what: str) -> Iterator[None]:
    """Let PhenosslError through; turn any other exception into a short TaskError naming the step."""
    try:
        yield
    except PhenosslError:
        raise
    except Exception as exc:
        raise TaskError(f"{what} failed unexpectedly ({type(exc).__name__}: {exc}).") from exc


def warm_up() -> None:
    """Import the training stack ahead of use, in a worker. Loading torchvision's extension holds the GIL
    for stretches of ~0.2 s; done while the user segments, it no longer stalls the viewer when training
    starts (measured: the first-step stall fell from ~0.35-0.8 s to below 0.1 s). Then compile the UMAP
    layout's numba code (~18 s of one core on a computer's first start, ~2 s later from numba's disk cache),
    so that the sample plate's first layout takes under a second (benchmarks/umap_speed.py)."""
    import torchvision  # noqa: F401

    import phenossl.augment.pipeline
    import phenossl.methods
    import phenossl.train.trainer  # noqa: F401
    from phenossl.cluster.projection import warm_up_umap

    warm_up_umap()


# --------------------------------------------------------------------------------------------------
# 1. Segment and tile


@dataclass(frozen=True)
class NucleiResult:
    """Nuclei as the layers show them: an (F, Y, X) plate-unique label stack, its per-nucleus table and
    the layers' tables and colours (everything costly at 100k cells, made off the UI thread)."""

    labels: np.ndarray  # (F, Y, X) int32, ids unique over the plate
    table: pd.DataFrame  # one row per nucleus (see cells.nuclei_table)
    paint: Any  # layer_tables.LayerPaint


@dataclass(frozen=True)
class SegmentResult:
    nuclei: NucleiResult
    empty_fields: list[str]


def segment_fields(
    nuclear: Any, info: PlateInfo, segmentation: SegmentConfig
) -> Generator[int, None, SegmentResult]:
    """Segment the nuclear channel of every field (``nuclear`` is (F, Y, X)), one yield per field.

    Each field keeps its own size; ids continue from field to field so they are unique on the plate."""
    from phenossl.io.fields import Field
    from phenossl.napari.cells import nuclei_table, offset_labels
    from phenossl.napari.layer_tables import layer_paint
    from phenossl.tiles.build import segment_field

    with reported_as("Segmentation"):
        labels = np.zeros(nuclear.shape, dtype=np.int32)
        empty: list[str] = []
        offset = 0
        for f, key in enumerate(info.keys):
            height, width = info.shapes[f]
            plane = np.asarray(nuclear[f, :height, :width])
            fld = Field(image=plane[None], channel_names=["nuclear"], key=key)
            try:
                field_labels = segment_field(fld, 0, segmentation)
            except NoNucleiError:
                empty.append(key)
                field_labels = np.zeros(plane.shape, dtype=np.int32)
            labels[f, :height, :width] = offset_labels(field_labels, offset)
            offset = max(offset, int(labels[f].max()))
            yield f + 1
        if offset == 0:
            raise NoNucleiError(
                f"No nuclei were found in any of the {info.n_fields} field(s). Check that the nuclear "
                f"channel is right and the nucleus diameter ({segmentation.diameter or 'estimated'}); "
                "try the other segmentation backend."
            )
        table = nuclei_table(labels, info)
        return SegmentResult(NucleiResult(labels, table, layer_paint(table, None, labels.dtype)), empty)


def build_tiles(
    fields: Sequence[Any],
    store_path: Path,
    *,
    input_config: InputConfig,
    segmentation: SegmentConfig,
    tiles: TileConfig,
    metadata: pd.DataFrame | None,
    seed: int = 0,
):
    """Tile every field from the labels given (the Labels layer as the user left it) into a new store."""
    from phenossl.tiles.build import build_store_from_fields

    with reported_as("Making tiles"):
        return build_store_from_fields(
            fields,
            store_path,
            input_config=input_config,
            segmentation=segmentation,
            tiles=tiles,
            metadata=metadata,
            seed=seed,
        )


@dataclass(frozen=True)
class TileResult:
    store: Any  # TileStore
    nuclei: NucleiResult
    renumbered: bool  # ids repeated between fields and were made plate-unique (the layer must take them)


def tile_plate(
    images: Sequence[Any],
    channel_names: Sequence[str],
    labels: Any,
    info: PlateInfo,
    store_path: Path,
    **settings: Any,
) -> TileResult:
    """Tile the plate from the Labels layer as the user left it: reads the layers' arrays, renumbers
    repeated ids, measures the nuclei and builds the store, all in the worker (seconds at 100k cells)."""
    from phenossl.napari import cells as cellsmod
    from phenossl.napari.layer_tables import layer_paint
    from phenossl.napari.plate import as_field_stack

    with reported_as("Making tiles"):
        stack = np.array(as_field_stack(labels), dtype=np.int32)  # a copy: the user may paint meanwhile
        renumbered = not cellsmod.is_plate_unique(stack)
        if renumbered:
            stack = cellsmod.make_plate_unique(stack)
        table = cellsmod.nuclei_table(stack, info)
        fields = cellsmod.field_inputs([as_field_stack(image) for image in images], channel_names, stack, info)
    store = build_tiles(fields, store_path, **settings)
    with reported_as("Making tiles"):
        paint = layer_paint(table, store.cells, stack.dtype)
    return TileResult(store, NucleiResult(stack, table, paint), renumbered)


def nuclei_from_store(store: Any, info: PlateInfo) -> NucleiResult:
    """A reopened session's nuclei: the store's label images stacked in the layers' field order."""
    from phenossl.napari.cells import nuclei_table
    from phenossl.napari.layer_tables import layer_paint

    with reported_as("Reopening the session's nuclei"):
        height = max(s[0] for s in info.shapes)
        width = max(s[1] for s in info.shapes)
        stack = np.zeros((info.n_fields, height, width), dtype=np.int32)
        for f, key in enumerate(info.keys):
            labels = store.labels(key)
            if labels is not None:
                stack[f, : labels.shape[0], : labels.shape[1]] = labels
        table = nuclei_table(stack, info)
        return NucleiResult(stack, table, layer_paint(table, store.cells, stack.dtype))


def paint_layers(
    nuclei: pd.DataFrame,
    store_cells: pd.DataFrame | None,
    labels_dtype: Any,
    *,
    clustering: Any = None,
    umap: np.ndarray | None = None,
    space: Any = None,
    pcs: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[Any, np.ndarray | None]:
    """The nuclei layers' tables and colours for a run's clustering, and the embedding's principal
    components (computed once per space: pass them back in as ``pcs``)."""
    from phenossl.napari.layer_tables import embedding_pcs, layer_paint

    with reported_as("Painting the clusters"):
        if pcs is None and space is not None:
            pcs = embedding_pcs(space.features, seed=seed)
        paint = layer_paint(
            nuclei, store_cells, labels_dtype, clustering=clustering, umap=umap, pcs=pcs, colors=colors
        )
        return paint, pcs


# --------------------------------------------------------------------------------------------------
# 2. Preview of the compositions


@dataclass(frozen=True)
class Preview:
    cell_id: int
    original: np.ndarray  # (H, W, 3) uint8
    views: dict[str, list[np.ndarray]]  # branch -> RGB uint8 views


def to_rgb8(tile: np.ndarray) -> np.ndarray:
    """A normalised (C, H, W) tile as an (H, W, 3) uint8 image, DNA blue (phenossl.render)."""
    from phenossl.render import composite_rgb

    return np.ascontiguousarray((composite_rgb(np.asarray(tile, dtype=np.float32)) * 255).astype(np.uint8))


def preview_compositions(
    tile: np.ndarray,
    compositions: dict[str, Any],
    *,
    cell_id: int,
    n: int = 6,
    seed: int = 0,
    out_size: int = 64,
) -> Preview:
    """``n`` views of one tile per composition, drawn exactly as training draws them (``preview_views``)."""
    from phenossl.augment.pipeline import preview_views

    with reported_as("Preview"):
        tile = np.asarray(tile, dtype=np.float32)
        views = {
            name: [to_rgb8(v) for v in preview_views(tile, composition, n, seed, out_size)]
            for name, composition in compositions.items()
        }
        return Preview(cell_id, to_rgb8(tile), views)


# --------------------------------------------------------------------------------------------------
# 3. Train and embed


@dataclass(frozen=True)
class TrainOutcome:
    status: str  # "trained" or "cancelled"
    message: str
    checkpoint: Path | None


def expected_events(n_cells: int, config: RunConfig, cells: pd.DataFrame | None = None) -> int:
    """How many events training yields (set-up phases, reports, one per epoch): the progress bar's total (the
    trainer's rule).
    With the cell table, a labelled method (y-aware) counts only the cells it trains on: those with a label."""
    from phenossl.errors import ConfigError
    from phenossl.train.labels import training_labels
    from phenossl.train.trainer import expected_events as training_events

    if cells is not None:
        try:
            labels = training_labels(cells, config.train)
        except ConfigError:  # training itself says what is wrong with the label column
            labels = None
        if labels is not None:
            n_cells = int(np.isfinite(labels).sum())
    return training_events(n_cells, config.train, set_up_events=True)


def ui_thread_budget(cpu_count: int | None = None) -> int:
    """Torch threads for training inside napari: all cores but one, so the viewer keeps a core."""
    return max(1, (cpu_count or os.cpu_count() or 2) - 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_run(
    record: RunRecord, cancel: threading.Event, *, threads: int | None = None
) -> Generator[Any, None, TrainOutcome]:
    """Train one run (``iter_training``), yielding its SetUp / StepProgress / EpochDone events.

    Setting ``cancel`` stops it before the next step; the last epoch's checkpoint is kept."""
    from phenossl.train import iter_training

    config = record.config
    with reported_as("Training"), torch_threads(threads or ui_thread_budget()), \
            run_folder_lock(record.paths.root, "training (napari)"):
        try:
            result = yield from iter_training(
                record.tile_store(),
                config.train,
                record.paths.root,
                seed=config.seed,
                cancel=cancel,
                run_info=config.to_dict(),
                set_up_events=True,
            )
        except Cancelled as exc:
            kept = record.paths.checkpoint if record.paths.checkpoint.is_file() else None
            return TrainOutcome("cancelled", str(exc), kept)
        return TrainOutcome(
            "trained", f"trained {result.epochs_completed} epoch(s) on {result.device}", result.checkpoint
        )


@dataclass(frozen=True)
class EmbedOutcome:
    status: str  # "embedded" or "cancelled"
    message: str


def embed_run(record: RunRecord, cancel: threading.Event, *, threads: int | None = None) -> EmbedOutcome:
    """Embed every cell with the run's checkpoint into its embeddings.npy.

    Setting ``cancel`` stops it before the next batch; nothing is written, the checkpoint is kept."""
    from phenossl.pipeline import stage_embed

    with reported_as("Embedding"), torch_threads(threads or ui_thread_budget()):
        try:
            stage_embed(record.config, record.paths, record.tile_store(), cancel=cancel)
        except Cancelled as exc:
            return EmbedOutcome("cancelled", str(exc))
        return EmbedOutcome("embedded", f"embedded {record.tile_store().n_cells} cells")


def untrained_run(record: RunRecord) -> TrainOutcome:
    """Save the run's encoder as initialised, untrained (``representation: random-init``): the baseline."""
    from phenossl.pipeline import stage_train

    with reported_as("Making the untrained encoder"):
        result = stage_train(record.config, record.paths, record.tile_store())
        return TrainOutcome("trained", f"untrained {record.config.train.encoder} saved (a baseline)",
                            result.checkpoint)


def measure_run(record: RunRecord, cancel: threading.Event) -> Generator[int, None, EmbedOutcome]:
    """Measure every cell with CellProfiler's measurements (``representation: cellprofiler``) into the run's
    embeddings, yielding the number of cells measured so far. ``cancel`` stops it between chunks; nothing
    is written then. Worker processes do the measuring: all cores but one, so the viewer keeps one. The
    measuring reports through a callback; a helper thread turns it into this generator's yields."""
    import queue

    from phenossl.pipeline import stage_measure

    done: queue.SimpleQueue = queue.SimpleQueue()
    with reported_as("Measuring cells"):
        config = record.config.model_copy(deep=True)
        if not config.measure.workers:
            config.measure.workers = ui_thread_budget()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                stage_measure(config, record.paths, record.tile_store(), cancel=cancel,
                              on_event=lambda _stage, progress: done.put(progress[0]))
            except BaseException as exc:  # handed to the worker thread below
                errors.append(exc)
            finally:
                done.put(None)

        thread = threading.Thread(target=work, name="phenossl-measure", daemon=True)
        thread.start()
        while (item := done.get()) is not None:
            yield item
        thread.join()
        if errors:
            if isinstance(errors[0], Cancelled):
                return EmbedOutcome("cancelled", str(errors[0]))
            raise errors[0]
        return EmbedOutcome("embedded", f"measured {record.tile_store().n_cells} cells")


# --------------------------------------------------------------------------------------------------
# 4. Cluster, UMAP, export (comparing and evaluating runs: run_tasks)


@dataclass(frozen=True)
class ClusterOutcome(RunClustering):
    """The clustering stage's result, and whether it is to be saved as the run's own once its UMAP layout is
    known (``save_pending``: the run's first clustering, shown at once, saved after the UMAP worker)."""

    save_pending: bool = False


def cluster_run(
    record: RunRecord, k: int, n_nearest: int, space: Any = None, *, save: bool | None = None,
    defer_save: bool = False, algorithm: str | None = None, params: dict | None = None,
) -> ClusterOutcome:
    """K-Means on the run's cached embeddings (the clustering stage the CLI uses too). Exploration: nothing is
    written unless ``save``; by default the clustering is saved only when it is the run's first (no clusters.csv
    for its embeddings yet) with the run's own k. Saving a different one is the user's explicit choice
    (``save_clustering``). A clustering to be saved gets its UMAP layout first, so its files are complete; with
    ``defer_save`` (napari) one whose layout is not known yet is returned at once with ``save_pending`` instead:
    the caller saves it when its UMAP worker is done, so the clusters never wait for the layout and clusters.csv
    is still written once, with its UMAP columns. ``algorithm`` / ``params``: another algorithm of
    phenossl.cluster.algorithms than the run's (its ``cluster.algorithm``)."""
    from phenossl.cluster.projection import UMAP_MIN_CELLS
    from phenossl.cluster.stage import cluster_in_space, clustering_space, run_layout

    with reported_as("Clustering"):
        config, paths, store = record.config, record.paths, record.tile_store()
        if space is None:
            space = clustering_space(config, store, paths.load_embeddings())
        automatic = save is None
        layout = run_layout(config, paths, space, compute=False)
        result = cluster_in_space(config, store, space, k, n_nearest, layout=layout, algorithm=algorithm,
                                  params=params)
        if automatic:
            from phenossl.napari.session import same_cluster_choice

            save = same_cluster_choice(config, result.clustering) and saved_cluster_labels(record) is None
        outcome = ClusterOutcome(result.space, result.clustering, result.metrics, result.umap)
        if not save:
            return outcome
        if defer_save and layout is None and space.n_cells >= UMAP_MIN_CELLS:
            return ClusterOutcome(*_fields(outcome), save_pending=True)
        return save_clustering(record, outcome, first=automatic)


def suggest_k_run(record: RunRecord, space: Any, *, algorithm: str, params: dict | None = None,
                  label_column: str | None = None) -> Any:
    """Score k = 2..15 on the run's cached embedding space (phenossl.cluster.suggest: silhouette on a seeded
    sample, AMI with ``label_column`` when one is given); returns the KCurve. Nothing is written."""
    from phenossl.cluster.stage import clustering_space, suggest_run_k

    with reported_as("Suggesting k"):
        config, store = record.config, record.tile_store()
        if space is None:
            space = clustering_space(config, store, record.paths.load_embeddings())
        return suggest_run_k(config, store, space, algorithm=algorithm, params=params, label_column=label_column)


def _fields(result: RunClustering) -> tuple:
    return result.space, result.clustering, result.metrics, result.umap


def save_clustering(record: RunRecord, outcome: ClusterOutcome, *, first: bool = False) -> ClusterOutcome:
    """Make ``outcome`` the run's clustering: the clustering stage's files (clusters.csv, umap.npy, metrics.json,
    overview.png, as ``phenossl cluster RUN --k K --overwrite`` writes them) and config.yaml's k, under the run
    folder's lock. Returns it with its UMAP layout (computed first when it was not known yet). ``first``: the
    automatic save of the run's first clustering, made only while the run still has none for its embeddings
    (checked under the lock), so a clustering the user kept meanwhile is never replaced by it."""
    from phenossl.cluster.stage import save_run_clustering
    from phenossl.napari.session import save_cluster_choice

    with reported_as("Saving the clustering"):
        saved = save_run_clustering(
            record.config, record.paths, record.tile_store(), outcome, what="saving the clustering (napari)",
            also=lambda: save_cluster_choice(record, outcome.clustering),
            only_if=(lambda: saved_cluster_labels(record) is None) if first else None,
        )
        return ClusterOutcome(*_fields(saved))


def umap_run(record: RunRecord, space: Any) -> np.ndarray:
    """The run's 2-D UMAP layout (computed once, saved as umap.npy: it does not depend on k)."""
    from phenossl.cluster.stage import save_layout, umap_params

    with reported_as("UMAP"):
        layout = np.asarray(space.umap(**umap_params(record.config)))
        save_layout(record.paths, layout, what="saving the UMAP layout (napari)")
        return layout


@dataclass(frozen=True)
class FilesExist:
    """The export found files it would replace; the message lists them (the widget asks the user)."""

    message: str


def export_run(record: RunRecord, csv_path: Path, *, overwrite: bool, fmt: str = "csv") -> Any:
    """Export the run's clustering: as CSV with its embeddings and configuration beside it, or in another
    format of :mod:`phenossl.export_formats` (``h5ad``; ``profiles``, where ``csv_path`` is the folder).

    Returns what was written (``written()`` lists the files), or ``FilesExist`` when files would be replaced
    and ``overwrite`` is False (returned, not raised: the widget asks the user, then calls again with
    ``overwrite=True``). The question names the files, in the dialog's words: the core's message is for the
    command line."""
    from phenossl.export import cluster_table, export_clusters
    from phenossl.export_formats import format_targets, write_format

    with reported_as("Export"):
        if record.clustering is None:
            raise PhenosslError(f"run {record.name} has no clusters yet: cluster it before exporting")
        try:
            embeddings = np.asarray(record.paths.load_embeddings())
            if fmt == "csv":
                return export_clusters(csv_path, record.tile_store().cells, record.clustering,
                                       umap_xy=record.umap, embeddings=embeddings,
                                       config=record.config.to_dict(), overwrite=overwrite)
            table = cluster_table(record.tile_store().cells, record.clustering, record.umap)
            metrics = {"k": record.clustering.k, "n_cells": record.clustering.n_cells, **record.metrics}
            return write_format(fmt, csv_path, table, embeddings, record.config.to_dict(), metrics,
                                overwrite=overwrite)
        except OutputExistsError as exc:
            targets = format_targets(fmt, csv_path)
            if any(path.is_dir() for path in targets):  # a folder is never replaced: no question to ask
                raise PhenosslError(f"{exc} Nothing was written.") from None
            existing = [path for path in targets if path.exists()]
            if not existing:
                raise PhenosslError(
                    f"Files in the way of the export to {csv_path} were removed meanwhile; export again."
                ) from None
            return FilesExist(
                f"Exporting run {record.name} to {Path(csv_path).name} would replace "
                f"{len(existing)} existing file(s) in {existing[0].parent}: "
                f"{', '.join(path.name for path in existing)}. Nothing has been written yet."
            )


def saved_cluster_labels(record: RunRecord) -> np.ndarray | None:
    """The ``cluster`` column of the run's clusters.csv, or None when there is none or it does not belong
    to the current embeddings and tiles (older than embeddings.npy, or other cells than the store's)."""
    path, embeddings = record.paths.clusters, record.paths.embeddings
    if not path.is_file() or not embeddings.is_file() or path.stat().st_mtime < embeddings.stat().st_mtime:
        return None
    table = pd.read_csv(path, usecols=lambda column: column in ("label", "cluster"))
    store_labels = record.tile_store().cells["label"].to_numpy()
    if (
        {"label", "cluster"} - set(table.columns)
        or table["cluster"].isna().any()
        or not np.array_equal(table["label"].to_numpy(), store_labels)
    ):
        return None
    return table["cluster"].to_numpy(dtype=np.int64)
