"""The whole chain for one :class:`RunConfig`, in a run folder (see docs/architecture.md).

Each stage is a function of the configuration and the run folder, so the CLI can run them one at a
time (``phenossl tile``, ``train``, ``embed``, ``cluster``) or all together (``phenossl run``), and
any stage can be rerun from the results of the previous one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_paths, atomic_write_text
from phenossl.cluster.stage import clustering_space
from phenossl.config import RunConfig, resolve_paths, save_config
from phenossl.embed import EMBEDDINGS_FILE
from phenossl.errors import ConfigError, InputError, OutputExistsError
from phenossl.runlock import run_folder_lock
from phenossl.tiles.store import TileStore

if TYPE_CHECKING:
    from phenossl.perturbation import PerturbationAxis

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STORE_DIR = "store"
UMAP_FILE = "umap.npy"
CLUSTERS_FILE = "clusters.csv"
METRICS_FILE = "metrics.json"
FEATURE_NAMES_FILE = "features.json"  # cellprofiler runs: the name of each embedding column
OVERVIEW_FILE = "overview.png"

#: on_event(stage, payload): what a stage is doing, for the front ends (:mod:`phenossl.progress`).
EventHandler = Callable[[str, Any], None]


@dataclass
class RunPaths:
    """Where each result of a run lives."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def store(self) -> Path:
        return self.root / STORE_DIR

    @property
    def checkpoint(self) -> Path:
        from phenossl.train.trainer import CHECKPOINT_FILE

        return self.root / CHECKPOINT_FILE

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS_FILE

    @property
    def feature_names(self) -> Path:
        return self.root / FEATURE_NAMES_FILE

    def load_embeddings(self) -> np.ndarray:
        """The run's embeddings, memory-mapped read-only; a clear error naming the file when it is missing or
        damaged (cut short by a crash or a full disk), with the command that rebuilds it."""
        path = self.embeddings
        if not path.is_file():
            raise InputError(f"no embeddings in {self.root}: run 'phenossl embed {self.root}' (or 'phenossl run') first")
        try:
            embeddings = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(
                f"{path} is damaged ({exc}): it was probably cut short by a crash or a full disk. Rebuild it with "
                f"'phenossl embed {self.root} --overwrite'."
            ) from exc
        if embeddings.ndim != 2:
            raise InputError(f"{path} is not a cells x features table (shape {embeddings.shape}): rebuild it with "
                             f"'phenossl embed {self.root} --overwrite'.")
        return embeddings

    @property
    def umap(self) -> Path:
        return self.root / UMAP_FILE

    @property
    def clusters(self) -> Path:
        return self.root / CLUSTERS_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def overview(self) -> Path:
        return self.root / OVERVIEW_FILE


@dataclass
class RunResult:
    paths: RunPaths
    metrics: dict[str, float]
    n_cells: int
    cluster_sizes: list[int] = field(default_factory=list)


#: Settings a resumed run may change: they alter nothing already computed (more epochs, another device,
#: another k). Any other difference would make the saved results disagree with the saved configuration.
CONTINUABLE_SETTINGS = ("train.epochs", "train.device", "train.log_every", "train.cache_on_device", "embed.",
                        "cluster.", "output.overwrite")


def prepare_run_dir(config: RunConfig, *, resume: bool = False) -> RunPaths:
    """Create the run folder and save the full configuration in it; refuse to reuse a folder silently.

    ``resume`` continues the run already in the folder: its saved configuration must agree with this one
    except for :data:`CONTINUABLE_SETTINGS` (checked before anything is written). The saved configuration
    has absolute paths, so it means the same thing wherever it is read from.
    """
    config = resolve_paths(config, Path.cwd())
    config.output.dir = config.run_dir().resolve()
    paths = RunPaths(config.run_dir())
    if paths.config.exists() and not config.output.overwrite:
        if not resume:
            raise OutputExistsError(
                f"run folder {paths.root} already holds a run. Choose another name or output.dir, "
                "continue it with --resume, or replace it with --overwrite."
            )
        _check_same_run(load_run_config(paths), config, paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    from phenossl.train.distributed import is_main_process

    if is_main_process():  # under torchrun rank 0 writes it; the others have checked it all the same
        save_config(config, paths.config)
    return paths


def config_differences(saved: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) for every setting that differs, in configuration order."""
    from phenossl.config import setting_differences

    return setting_differences(saved.to_dict(), new.to_dict())


def _check_same_run(saved: RunConfig, new: RunConfig, paths: RunPaths) -> None:
    changed = [(key, old, now) for key, old, now in config_differences(saved, new)
               if not any(key == c or (c.endswith(".") and key.startswith(c)) for c in CONTINUABLE_SETTINGS)]
    if changed:
        shown = "; ".join(f"{key}: {old!r} in the run, {now!r} now" for key, old, now in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise ConfigError(
            f"The run in {paths.root} was made with other settings: {shown}{more}. To continue it, use its own "
            f"configuration ({paths.config}); to replace it, pass --overwrite; to keep both, choose another "
            "output.dir. Nothing was changed."
        )


def stage_tile(config: RunConfig, paths: RunPaths, *, on_event: EventHandler | None = None,
               cancel: threading.Event | None = None, scheduler: Any = None) -> TileStore:
    """Read + segment + tile (or import crops) into the run's tile store; with ``scheduler`` (``"local:N"``,
    ``"tcp://HOST:PORT"`` or a ``distributed.Client``) the fields are segmented and tiled as Dask tasks."""
    from phenossl.progress import counter
    from phenossl.tiles.build import build_store

    progress = counter(on_event)
    with run_folder_lock(paths.root, "making tiles"):
        return build_store(
            config.input,
            paths.store,
            segmentation=config.segmentation,
            tiles=config.tiles,
            overwrite=config.output.overwrite,
            progress=progress,
            cancel=cancel,
            seed=config.seed,
            scheduler=scheduler,
        )


def stage_train(config: RunConfig, paths: RunPaths, store: TileStore, *, resume: bool = False,
                overwrite: bool = False, on_event: EventHandler | None = None,
                cancel: threading.Event | None = None):
    """Train (or with ``resume`` continue) the run's encoder; a trained model is replaced only on ``overwrite``.
    A ``random-init`` run saves its untrained encoder instead; a ``cellprofiler`` run has nothing to train."""
    from phenossl.train import save_untrained, train

    if config.representation == "cellprofiler":
        raise InputError(
            f"{paths.root} measures its cells (representation: cellprofiler): there is no encoder to train. "
            "Measure them with 'phenossl embed RUN' (or 'phenossl run')."
        )
    if paths.checkpoint.exists() and not (resume or overwrite):
        raise OutputExistsError(
            f"{paths.root} already holds a trained model ({paths.checkpoint.name}). Continue its training with "
            "--resume, or train again from scratch with --overwrite. Nothing was changed."
        )
    with run_folder_lock(paths.root, "training"):
        if config.representation == "random-init":
            return save_untrained(store, config.train, paths.root, seed=config.seed, run_info=config.to_dict())
        from phenossl.train.distributed import is_main_process

        progress = (lambda event: on_event("train", event)) if on_event and is_main_process() else None
        return train(store, config.train, paths.root, seed=config.seed, resume=resume, cancel=cancel,
                     progress=progress, run_info=config.to_dict(), set_up_events=on_event is not None)


def stage_embed(config: RunConfig, paths: RunPaths, store: TileStore, *, overwrite: bool = False,
                cancel: threading.Event | None = None, on_event: EventHandler | None = None) -> np.ndarray:
    """Embed every cell with the run's checkpoint into ``embeddings.npy`` (replaced only on ``overwrite``);
    a ``cellprofiler`` run measures its cells instead (:func:`stage_measure`)."""
    from phenossl.embed import embed_store

    if config.representation == "cellprofiler":
        return stage_measure(config, paths, store, overwrite=overwrite, cancel=cancel, on_event=on_event)
    if not paths.checkpoint.exists():
        raise InputError(f"no trained model in {paths.root}: run 'phenossl train' (or 'phenossl run') first")
    if paths.embeddings.exists() and not overwrite:
        raise OutputExistsError(
            f"{paths.embeddings} already exists (its clusters may have been exported). Embed again with "
            "--overwrite. Nothing was changed."
        )
    from phenossl.progress import counter

    with run_folder_lock(paths.root, "embedding"):
        return embed_store(store, paths.checkpoint, paths.embeddings, batch_size=config.embed.batch_size,
                           device=config.train.device, view=config.embed.view, average=config.embed.average,
                           overwrite=overwrite, cancel=cancel, progress=counter(on_event, "embedding"))


def stage_measure(config: RunConfig, paths: RunPaths, store: TileStore, *, overwrite: bool = False,
                  cancel: threading.Event | None = None, on_event: EventHandler | None = None) -> np.ndarray:
    """CellProfiler measurements of every cell (cp_measure) as the run's embeddings: ``embeddings.npy`` holds
    the z-scored features, ``features.json`` their names and what was dropped. Both are written together."""
    import os

    from phenossl.measure import measure_store

    targets = [paths.embeddings, paths.feature_names]
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{paths.root} already holds measurements ({', '.join(existing)}). Measure again with --overwrite. "
            "Nothing was changed."
        )
    from phenossl.export import save_npy
    from phenossl.progress import counter

    workers = config.measure.workers or max(1, (os.cpu_count() or 2) - 1)
    progress = counter(on_event)

    with run_folder_lock(paths.root, "measuring cells"):
        measurements = measure_store(store, workers=workers, progress=progress, cancel=cancel)
        features, names, report = measurements.features()
        description = {"representation": "cellprofiler (cp_measure)", "object": "nucleus", "features": names,
                       "report": {**measurements.report, **report}}
        with atomic_paths(targets, overwrite=overwrite) as (embeddings_tmp, names_tmp):
            save_npy(embeddings_tmp, features)
            names_tmp.write_text(json.dumps(description, indent=1))
        return paths.load_embeddings()


def stage_cluster(config: RunConfig, paths: RunPaths, store: TileStore, embeddings: np.ndarray | None = None,
                  *, csv_path: Path | None = None, overwrite: bool = False, overview: bool = True,
                  on_event: EventHandler | None = None) -> RunResult:
    """K-Means + UMAP + metrics on the cached embeddings (never re-embedded), by the clustering stage that
    napari uses too (:mod:`phenossl.cluster.stage`).

    Without ``csv_path`` the results become the run's own (``clusters.csv``, ``umap.npy``, ``metrics.json``,
    ``overview.png``); with it they are exported there instead, with the embeddings and the configuration
    beside the CSV, and the run folder is left as it was. Existing files are replaced only on ``overwrite``,
    and all of them are checked before anything is computed or written. ``on_event`` hears what is being done
    and the UMAP's epochs.
    """
    from phenossl.cluster.stage import cluster_in_space, save_run_clustering
    from phenossl.export import check_export_targets, export_clusters, export_paths

    if embeddings is None:
        embeddings = paths.load_embeddings()
    if csv_path is None:
        _check_run_clustering_free(paths, overview, overwrite)
    else:
        check_export_targets(export_paths(csv_path, embeddings=True, config=True), overwrite)
    space = clustering_space(config, store, embeddings)
    layout = _run_umap(config, space, on_event)
    if on_event:
        on_event("clustering", f"K-Means (k = {config.cluster.k}), metrics"
                               f"{', overview' if csv_path is None and overview else ''} and CSV")
    result = cluster_in_space(config, store, space, config.cluster.k, config.cluster.n_nearest, layout=layout)
    if csv_path is None:
        save_run_clustering(config, paths, store, result, what="clustering", overview=overview)
    else:
        export_clusters(csv_path, store.cells, result.clustering, umap_xy=result.umap,
                        embeddings=np.asarray(embeddings), config=config.to_dict(), overwrite=overwrite)
    return RunResult(paths, result.metrics, store.n_cells, result.clustering.sizes.tolist())


def _run_umap(config: RunConfig, space, on_event: EventHandler | None) -> np.ndarray:
    """The run's UMAP layout of ``space``, its optimisation epochs (and the placing of the cells outside its
    fitted sample) told to ``on_event``."""
    from phenossl.cluster.projection import layout_progress
    from phenossl.cluster.stage import umap_params
    from phenossl.progress import counter

    if on_event:
        on_event("umap", f"layout of {space.n_cells} cells (neighbours, then the layout's epochs; a machine's first "
                         "layout also compiles for ~20 s)")
    with layout_progress(counter(on_event)):
        return space.umap(**umap_params(config))


def _check_run_clustering_free(paths: RunPaths, overview: bool, overwrite: bool) -> None:
    """OutputExistsError naming the run's clustering files, unless there are none or ``overwrite``."""
    targets = [paths.clusters, paths.umap, paths.metrics] + ([paths.overview] if overview else [])
    existing = [path.name for path in targets if path.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{paths.root} already holds a clustering ({', '.join(existing)}). Export the new one elsewhere "
            "with --out FILE.csv, or replace the run's own with --overwrite. Nothing was written."
        )


def stage_export(config: RunConfig, paths: RunPaths, store: TileStore, csv_path: Path, *,
                 overwrite: bool = False, fmt: str = "csv") -> RunResult | None:
    """Export the run's own clustering to ``csv_path`` in format ``fmt`` (:mod:`phenossl.export_formats`: csv
    with its embeddings and configuration beside it, h5ad, or a profiles folder): the run's clusters.csv as it
    is (no K-Means or UMAP again) when it belongs to the current embeddings; else the run is clustered as its
    configuration says, and the run folder is left as it was. All files of the export appear, or none."""
    from phenossl.export import check_targets_free
    from phenossl.export_formats import format_targets, write_format

    check_targets_free(format_targets(fmt, csv_path), overwrite)
    embeddings = paths.load_embeddings()
    clusters = paths.clusters
    if not clusters.is_file() or clusters.stat().st_mtime < paths.embeddings.stat().st_mtime:
        if fmt == "csv":
            return stage_cluster(config, paths, store, embeddings, csv_path=csv_path, overwrite=overwrite)
        table, summary, result = _cluster_for_export(config, store, embeddings)
        write_format(fmt, csv_path, table, np.asarray(embeddings), config.to_dict(), summary, overwrite=overwrite)
        return RunResult(paths, result.metrics, store.n_cells, result.clustering.sizes.tolist())
    table = pd.read_csv(clusters)
    if len(table) != store.n_cells:
        raise InputError(f"{clusters} has {len(table)} rows but the run has {store.n_cells} cells: recluster it "
                         f"with 'phenossl cluster {paths.root} --overwrite', then export again.")
    metrics = json.loads(paths.metrics.read_text()) if paths.metrics.is_file() else {}
    if fmt == "csv":  # the run's own files as they are (the configuration's YAML text included)
        write_format(fmt, csv_path, table, np.asarray(embeddings), config.to_yaml(), metrics, overwrite=overwrite)
    else:
        write_format(fmt, csv_path, table, np.asarray(embeddings), config.to_dict(), metrics, overwrite=overwrite)
    return None


def _cluster_for_export(config: RunConfig, store: TileStore, embeddings: np.ndarray) -> tuple[pd.DataFrame,
                                                                                             dict, Any]:
    """The per-cell table, metrics and clustering of the run as its configuration says, computed without
    writing anything into the run folder."""
    from phenossl.cluster.stage import cluster_in_space, metrics_summary, umap_params
    from phenossl.export import cluster_table

    space = clustering_space(config, store, embeddings)
    result = cluster_in_space(config, store, space, config.cluster.k, config.cluster.n_nearest,
                              layout=space.umap(**umap_params(config)))
    table = cluster_table(store.cells, result.clustering, result.umap)
    return table, metrics_summary(result, store.n_cells), result


def run_pipeline(config: RunConfig, *, resume: bool = False, on_event: EventHandler | None = None,
                 cancel: threading.Event | None = None) -> RunResult:
    """Everything: tile store, training, embeddings, clusters, CSV and overview, in the run folder (locked
    against any other process for the whole run)."""
    with run_folder_lock(resolve_paths(config, Path.cwd()).run_dir(), "phenossl run"):
        return _run_locked(config, resume=resume, on_event=on_event, cancel=cancel)


def _run_locked(config: RunConfig, *, resume: bool, on_event: EventHandler | None,
                cancel: threading.Event | None) -> RunResult:
    paths = prepare_run_dir(config, resume=resume)
    config = load_run_config(paths)
    if resume and paths.store.exists():
        store = TileStore(paths.store)
    else:
        store = stage_tile(config, paths, on_event=on_event, cancel=cancel)
    if store.n_cells < config.cluster.k:
        from phenossl.errors import TooFewCellsError

        raise TooFewCellsError(
            f"{store.n_cells} cells were found but {config.cluster.k} clusters were asked for; "
            "lower k or add images"
        )
    # the folder is new, or --resume / --overwrite allowed this run to replace what the chain derives
    if config.representation != "cellprofiler":
        stage_train(config, paths, store, resume=resume, overwrite=config.output.overwrite, on_event=on_event,
                    cancel=cancel)
    embeddings = stage_embed(config, paths, store, overwrite=True, cancel=cancel, on_event=on_event)
    return stage_cluster(config, paths, store, embeddings, overwrite=True, on_event=on_event)


def load_run_config(paths: RunPaths) -> RunConfig:
    from phenossl.config import load_config

    if not paths.config.exists():
        raise InputError(f"{paths.root} is not a phenossl run folder (no {CONFIG_FILE})")
    return load_config(paths.config)


def stage_dose_response(config: RunConfig, paths: RunPaths, store: TileStore, *, control: dict, reference: dict,
                        by: list[str] | None = None, csv_path: Path | None = None,
                        overwrite: bool = False) -> tuple[pd.DataFrame, PerturbationAxis]:
    """Scores every cell on the control -> reference axis of the run's embeddings and averages them per
    group of ``by`` (default: the reference's columns); writes the table to ``csv_path`` if given."""
    from phenossl.perturbation import dose_response, fit_axis, select_cells

    features = clustering_space(config, store, paths.load_embeddings()).features
    cells = store.cells
    axis = fit_axis(features, select_cells(cells, control, "control"), select_cells(cells, reference, "reference"))
    table = dose_response(axis.score(features), cells, by or list(reference))
    if csv_path is not None:
        if Path(csv_path).exists() and not overwrite:
            raise OutputExistsError(f"{csv_path} exists; choose another file or pass --overwrite. Nothing was written.")
        atomic_write_text(csv_path, table.to_csv(index=False), overwrite=overwrite)
    return table, axis


def open_run(run_dir: str | Path) -> tuple[RunConfig, RunPaths, TileStore]:
    """Reopen a run folder: its saved configuration, paths and tile store."""
    paths = RunPaths(Path(run_dir))
    return load_run_config(paths), paths, TileStore(paths.store)


def read_clusters(paths: RunPaths) -> pd.DataFrame:
    return pd.read_csv(paths.clusters)


def describe_representation(config: RunConfig) -> str:
    """A run's representation in a few words, for tables that set runs side by side."""
    if config.representation == "cellprofiler":
        return "CellProfiler features (cp_measure)"
    train = config.train
    if config.representation == "random-init":
        return f"untrained {train.encoder}"
    weights = train.branch_weights()
    mix = (train.composition_a.name if train.weight_a >= 1 else train.composition_b.name if train.weight_a <= 0
           else f"{weights['a']:g}·{train.composition_a.name} + {weights['b']:g}·{train.composition_b.name}")
    return f"{train.method}/{train.encoder}, {mix}, {train.epochs} epochs at {train.resolution} px"


def evaluate_runs(run_dirs: list[Path], settings, *, out: Path | None = None,
                  overwrite: bool = False) -> tuple[pd.DataFrame, str, list[Path]]:
    """Score runs side by side (:mod:`phenossl.evaluate`) and write the table as ``out``.csv and ``out``.md
    (default: ``evaluation-<label>`` in the runs' common folder). Every run is checked before any is scored."""
    from phenossl.evaluate import EvaluatedRun, check_labels, evaluation_table, table_markdown

    runs = []
    for run_dir in run_dirs:
        config, paths, store = open_run(run_dir)
        paths.load_embeddings()  # missing or damaged: said before any run is scored
        check_labels(store.cells, settings, f"run {paths.root.name}")
        runs.append((config, paths, store))
    if out is None:
        import os

        common = Path(os.path.commonpath([str(Path(r).resolve().parent) for r in run_dirs]))
        out = common / f"evaluation-{settings.label}"
    targets = [out.with_name(out.name + ".csv"), out.with_name(out.name + ".md")]
    from phenossl.atomic import check_can_write

    for target in targets:
        check_can_write(target, overwrite)
    evaluated = [EvaluatedRun(paths.root.name, describe_representation(config), paths.load_embeddings(), store.cells)
                 for config, paths, store in runs]
    table = evaluation_table(evaluated, settings)
    markdown = table_markdown(table, settings)
    with atomic_paths(targets, overwrite=overwrite) as (csv_tmp, md_tmp):
        table.to_csv(csv_tmp, index=False)
        md_tmp.write_text(markdown, encoding="utf-8")
    return table, markdown, targets
