"""A napari session on disk: one folder, its tile stores, and one run folder per training.

::

    <session>/                    default ~/phenossl-runs/<date_time>
      tiles-1/                    a TileStore (a new one each time tiles are made: old runs keep theirs)
      runs/run-001/               a phenossl run folder (docs/architecture.md), reopenable by the CLI:
        config.yaml  store -> ../../tiles-1  checkpoint.pt  history.csv  embeddings.npy  umap.npy
        clusters.csv  metrics.json

Every run keeps its configuration, checkpoint and embeddings, so the user can switch between runs and
compare them; ``phenossl cluster <session>/runs/run-001`` works on them as on any CLI run. Pure: no Qt.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phenossl.atomic import atomic_write_text
from phenossl.config import RunConfig, config_from_dict, save_config
from phenossl.errors import InputError, PhenosslError
from phenossl.pipeline import RunPaths, load_run_config, prepare_run_dir
from phenossl.tiles.store import TileStore

logger = logging.getLogger(__name__)

SESSIONS_HOME = Path.home() / "phenossl-runs"
RUNS_DIR = "runs"
STORE_PREFIX = "tiles-"
RUN_PREFIX = "run-"
STATUS_FILE = "status.json"
"""A run's ending that its other files cannot show (cancelled or failed, maybe before any checkpoint)."""
ENDED_STATUSES = ("cancelled", "failed")


def default_session_folder(now: _dt.datetime | None = None, home: Path | None = None) -> Path:
    """``~/phenossl-runs/<YYYY-MM-DD_HHMMSS>``: a fresh folder per napari session, never reused silently."""
    now = now or _dt.datetime.now()
    return (home or SESSIONS_HOME) / now.strftime("%Y-%m-%d_%H%M%S")


def _next_name(folder: Path, prefix: str, width: int) -> str:
    numbers = [
        int(m.group(1))
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", p.name.removesuffix(".partial")))
    ]
    return f"{prefix}{max(numbers, default=0) + 1:0{width}d}"


def link_store(run_root: Path, store_path: Path) -> Path:
    """Make ``run_root/store`` point at the session's tile store (a relative symlink, so the session folder
    can be moved; a copy where symlinks are not allowed)."""
    link = RunPaths(run_root).store
    if link.is_symlink() or link.exists():
        return link
    try:
        os.symlink(os.path.relpath(store_path, run_root), link, target_is_directory=True)
    except OSError:  # e.g. Windows without developer mode
        shutil.copytree(store_path, link)
    return link


@dataclass
class RunRecord:
    """One training run and what has been computed from it (embeddings, clustering, UMAP layout)."""

    paths: RunPaths
    config: RunConfig
    status: str = "new"  # new, training, trained, cancelled, failed
    store: TileStore | None = None
    space: Any = None  # EmbeddingSpace, once the embeddings are loaded
    clustering: Any = None  # Clustering of the current k
    umap: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def __post_init__(self) -> None:
        self._recording = True  # from now on a cancel or failure is written to the run folder

    def __setattr__(self, name: str, value: Any) -> None:
        """Setting ``status`` or ``message`` (as the controller does) keeps ``status.json`` in step, so a run
        cancelled or failed before its first checkpoint reopens as such, not as "new"."""
        super().__setattr__(name, value)
        if name in ("status", "message") and getattr(self, "_recording", False):
            self._save_status()

    def _save_status(self) -> None:
        path = self.paths.root / STATUS_FILE
        try:
            if self.status in ENDED_STATUSES:
                atomic_write_text(path, json.dumps({"status": self.status, "message": self.message}) + "\n")
            elif self.status != "new":
                path.unlink(missing_ok=True)  # running again, or done: the old ending no longer holds
        except (OSError, PhenosslError) as exc:  # the run folder went away: the record still says it
            logger.warning("Could not record run %s as %s in %s: %s", self.name, self.status, path, exc)

    @property
    def name(self) -> str:
        return self.paths.root.name

    @property
    def has_checkpoint(self) -> bool:
        return self.paths.checkpoint.is_file()

    @property
    def has_embeddings(self) -> bool:
        return self.paths.embeddings.is_file()

    def tile_store(self) -> TileStore:
        if self.store is None:
            self.store = TileStore(self.paths.store)
        return self.store

    def describe(self) -> str:
        """One line: method, encoder, the compositions and their weight, the training length (or, for a
        baseline, what represents the cells)."""
        if self.config.representation != "ssl":
            from phenossl.pipeline import describe_representation

            return f"{describe_representation(self.config)} (baseline, no training)"
        t = self.config.train
        mix = (
            f"A={t.composition_a.name}"
            if t.weight_a >= 1
            else f"B={t.composition_b.name}"
            if t.weight_a <= 0
            else f"{t.weight_a:.2f}·A={t.composition_a.name} + {1 - t.weight_a:.2f}·B={t.composition_b.name}"
        )
        start = f", from {Path(t.init_from).parent.name}" if t.init_from else ""
        return f"{t.method}/{t.encoder}, {mix}, {t.epochs} ep @ {t.resolution}px{start}"

    def disk_status(self) -> str:
        if self.status in ("training", "measuring", "failed", "cancelled"):
            return self.status
        if self.has_embeddings:
            return "measured" if self.config.representation == "cellprofiler" else "embedded"
        return "trained" if self.has_checkpoint else self.status


class Session:
    """The session folder: the current tile store and every run made in it."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser().resolve()
        self.store: TileStore | None = None
        self.runs: dict[str, RunRecord] = {}

    @property
    def runs_folder(self) -> Path:
        return self.folder / RUNS_DIR

    def next_store_path(self) -> Path:
        """A new tile store folder: earlier runs keep the tiles they were trained on."""
        return self.folder / _next_name(self.folder, STORE_PREFIX, 1)

    def new_run(self, config: RunConfig) -> RunRecord:
        """Create the next run folder (``run-001``, ...) with its full config and a link to the tiles."""
        if self.store is None:
            raise InputError("make the tiles first (step 1): a run trains on a tile store")
        name = _next_name(self.runs_folder, RUN_PREFIX, 3)
        config = config.model_copy(deep=True)
        config.name = name
        config.output.dir = self.runs_folder / name
        paths = prepare_run_dir(config)
        link_store(paths.root, self.store.path)
        record = RunRecord(paths, load_run_config(paths), status="new", store=self.store)
        self.runs[name] = record
        return record

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Session:
        """Reopen a session folder: its newest tile store and every run in ``runs/``."""
        session = cls(folder)
        if not session.folder.is_dir():
            raise InputError(f"{session.folder} does not exist: choose an existing phenossl session folder")
        stores = sorted(
            (
                p
                for p in session.folder.glob(f"{STORE_PREFIX}*")
                if p.is_dir() and not p.name.endswith(".partial")
            ),
            key=lambda p: (
                int(p.name.removeprefix(STORE_PREFIX)) if p.name.removeprefix(STORE_PREFIX).isdigit() else 0
            ),
        )
        if stores:
            session.store = TileStore(stores[-1])
        for config_file in sorted(session.runs_folder.glob(f"*/{RunPaths(Path()).config.name}")):
            paths = RunPaths(config_file.parent)
            status, message = saved_status(paths)
            record = RunRecord(paths, load_run_config(paths), status=status, message=message)
            session.runs[record.name] = record
        if session.store is None and not session.runs:
            raise InputError(
                f"{session.folder} holds no tiles ({STORE_PREFIX}N folder) and no runs ({RUNS_DIR}/): "
                "it is not a phenossl session folder"
            )
        return session


def saved_status(paths: RunPaths) -> tuple[str, str]:
    """(status, message) of a run folder being reopened: cancelled or failed as ``status.json`` says, unless
    a checkpoint written after it (e.g. ``phenossl train --resume``) shows the run went on; else trained
    when it has a checkpoint, else new."""
    path = paths.root / STATUS_FILE
    checkpoint = paths.checkpoint
    if path.is_file() and not (checkpoint.is_file() and checkpoint.stat().st_mtime > path.stat().st_mtime):
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("status") in ENDED_STATUSES:
                return str(saved["status"]), str(saved.get("message") or "")
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("Ignored %s, which cannot be read (%s)", path, exc)
    return ("trained" if checkpoint.is_file() else "new"), ""


def run_config(
    *,
    train: dict[str, Any],
    segmentation: dict[str, Any],
    tiles: dict[str, Any],
    input_section: dict[str, Any],
    cluster: dict[str, Any],
    seed: int = 0,
    representation: str = "ssl",
) -> RunConfig:
    """A validated RunConfig from the widgets' settings (ConfigError names any bad value)."""
    return config_from_dict(
        {
            "seed": seed,
            "representation": representation,
            "input": input_section,
            "segmentation": segmentation,
            "tiles": tiles,
            "train": train,
            "cluster": cluster,
        }
    )


def same_cluster_choice(config: RunConfig, clustering: Any) -> bool:
    """True when ``clustering`` is what ``config``'s cluster section makes: the same algorithm and k (K-Means,
    Gaussian mixture) or the same HDBSCAN parameters."""
    cluster = config.cluster
    algorithm = getattr(clustering, "algorithm", "kmeans")
    if algorithm != getattr(cluster, "algorithm", "kmeans"):
        return False
    if algorithm == "hdbscan":
        return all(clustering.params.get(key) == value for key, value in cluster.algorithm_params().items())
    return clustering.k == cluster.k


def choice_words(clustering: Any) -> str:
    """A clustering's algorithm and k in a few words, for buttons and questions."""
    if clustering.algorithm == "hdbscan":
        return f"HDBSCAN (min size {clustering.params.get('min_cluster_size', '?')})"
    return f"k={clustering.k}" + (" (Gaussian mixture)" if clustering.algorithm == "gmm" else "")


def config_choice_words(config: RunConfig) -> str:
    """The run configuration's clustering in the same words."""
    cluster = config.cluster
    if cluster.algorithm == "hdbscan":
        return f"HDBSCAN (min size {cluster.hdbscan.min_cluster_size})"
    return f"k={cluster.k}" + (" (Gaussian mixture)" if cluster.algorithm == "gmm" else "")


def save_cluster_choice(record: RunRecord, clustering: Any) -> None:
    """Keep the run's config.yaml in step with its clusters.csv when the user reclusters with another k or
    algorithm (``clustering``: the kept one; its algorithm and parameters, or its k, are written)."""
    if same_cluster_choice(record.config, clustering):
        return
    updated = record.config.cluster.model_copy(deep=True)
    updated.algorithm = clustering.algorithm
    if clustering.algorithm == "hdbscan":
        updated.hdbscan = updated.hdbscan.model_copy(update={
            key: value for key, value in clustering.params.items() if key in type(updated.hdbscan).model_fields})
    else:
        updated.k = clustering.k
        if clustering.algorithm == "gmm" and "covariance_type" in clustering.params:
            updated.gmm = updated.gmm.model_copy(update={"covariance_type": clustering.params["covariance_type"]})
    record.config.cluster = updated
    save_config(record.config, record.paths.config)
