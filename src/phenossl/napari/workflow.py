"""The state of the phenossl workflow in one viewer, and what follows from it. Pure: no Qt, no viewer.

One ``WorkflowState`` per controller: the session folder and its runs, the plate the layers show, the
settings of each step (segmentation, tiles, compositions, k), the run shown (``active``) with its
clustering, the selected cells and the current one. The controller changes it and says so with its
signals; the layer painter reads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.config import RunConfig, SegmentConfig, TileConfig
from phenossl.errors import InputError
from phenossl.napari.compositions import CompositionDraft
from phenossl.napari.plate import PlateInfo, treatment_columns
from phenossl.napari.session import RunRecord, Session, run_config


def default_drafts() -> dict[str, CompositionDraft]:
    """Branch A starts from the morphology preset, branch B from the context one."""
    return {"a": CompositionDraft.from_preset("morphology"), "b": CompositionDraft.from_preset("context")}


def no_cells() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def open_session(folder: str | Path) -> Session:
    """The session in ``folder``: an existing session folder is reopened, an empty or new one started."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        return Session.open(folder)
    return Session(folder)


@dataclass(eq=False)
class WorkflowState:
    """What the user has made and chosen so far, and what is shown."""

    session: Session
    plate: PlateInfo | None = None  # the fields of the nuclei layers
    #: one row per nucleus as cells.nuclei_table makes it (the base of both nuclei layers' features)
    nuclei: pd.DataFrame | None = None
    segmentation: SegmentConfig = field(default_factory=SegmentConfig)
    tiles: TileConfig = field(default_factory=TileConfig)
    input_section: dict[str, Any] = field(default_factory=dict)  # the runs' config input section
    drafts: dict[str, CompositionDraft] = field(default_factory=default_drafts)
    weight_a: float = 1.0
    k: int = 4
    n_nearest: int = 8
    algorithm: str = "kmeans"  # phenossl.cluster.algorithms: kmeans, gmm, hdbscan
    min_cluster_size: int = 25  # hdbscan's
    active: RunRecord | None = None  # the run shown
    selected: np.ndarray = field(default_factory=no_cells)  # store rows of the shown run
    current_cell: int = 0
    #: run name -> its first clustering, shown at once and saved as the run's own once its UMAP layout is known
    first_clusterings: dict[str, Any] = field(default_factory=dict)
    #: after training: embed, cluster and lay out (UMAP) the new run. Scripts and tests may turn it off.
    explore_after_training: bool = True
    #: (run, id(space)) -> the embedding's principal components, computed once per space
    pcs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    #: the Cancel of the Train step: one event per cancellable task (train, and the embed after it)
    cancels: dict[str, threading.Event] = field(default_factory=dict)

    # --- what is shown

    def shown_store(self) -> Any:
        """The tile store of the shown run, else the session's newest."""
        return self.active.tile_store() if self.active is not None else self.session.store

    def field_keys(self, store: Any) -> list[str]:
        """The fields in the layers' order: the plate's, else the store's."""
        return self.plate.keys if self.plate else store.field_keys()

    def latest_embedded(self) -> str | None:
        """The newest run with embeddings, shown when a session folder is reopened."""
        names = [name for name, record in self.session.runs.items() if record.has_embeddings]
        return names[-1] if names else None

    def show_run(self, name: str) -> RunRecord:
        self.active = self.session.runs[name]
        self.selected = no_cells()
        return self.active

    def select(self, rows: Any) -> np.ndarray:
        """Make ``rows`` (store rows, any order, repeats allowed; negatives are nuclei without a tile and
        are dropped) the selection."""
        rows = np.asarray(rows, dtype=np.int64)
        self.selected = np.unique(rows[rows >= 0])
        return self.selected

    # --- compositions and clusters

    def compositions(self) -> dict[str, Any]:
        return {branch: draft.composition() for branch, draft in self.drafts.items()}

    def cluster_colors(self) -> np.ndarray:
        """The palette of the shown clustering (of ``k`` clusters while none is shown)."""
        from phenossl.render import cluster_colors

        record = self.active
        shown = record is not None and record.clustering is not None
        return cluster_colors(record.clustering.k if shown else self.k)

    def clustering_is_saved(self, record: RunRecord | None = None) -> bool:
        """True when the shown clustering of ``record`` (default: the shown run) is its saved one."""
        record = record or self.active
        if record is None or record.clustering is None:
            return True
        from phenossl.napari.session import same_cluster_choice

        return same_cluster_choice(record.config, record.clustering)

    def paint_inputs(self) -> tuple[RunRecord | None, Any, dict[str, Any]]:
        """What ``tasks.paint_layers`` needs besides the nuclei and the labels' dtype, for the shown run:
        ``(record, space, keywords)``."""
        record = self.active
        store = self.shown_store()
        clustering = record.clustering if record is not None else None
        space = record.space if clustering is not None else None
        keywords = {
            "store_cells": None if store is None else store.cells,
            "clustering": clustering,
            "umap": None if record is None else record.umap,
            "space": space,
            "pcs": self.pcs.get((record.name, id(space))) if space is not None else None,
            "colors": self.cluster_colors() if clustering is not None else None,
            "seed": 0 if record is None else record.config.seed,
        }
        return record, space, keywords

    def remember_pcs(self, record: RunRecord | None, space: Any, pcs: np.ndarray | None) -> None:
        if pcs is not None and record is not None:
            self.pcs[(record.name, id(space))] = pcs

    # --- runs

    def new_run(
        self, train: dict[str, Any], *, seed: int, init_from: str | None = None, representation: str = "ssl"
    ) -> RunRecord:
        """The next run folder, its config made from every step's settings (the CLI can redo it)."""
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
        config: RunConfig = run_config(
            train=settings,
            segmentation=self.segmentation.model_dump(mode="json"),
            tiles=self.tiles.model_dump(mode="json"),
            input_section=self.input_section or {"kind": "plate"},
            cluster={"k": self.k, "n_nearest": self.n_nearest, "label_columns": labels or None},
            seed=seed,
            representation=representation,
        )
        return self.session.new_run(config)

    def new_cancel(self, task: str, event: threading.Event | None = None) -> threading.Event:
        """The event that cancels ``task`` (a new one unless ``event`` is shared with an earlier task)."""
        self.cancels[task] = event or threading.Event()
        return self.cancels[task]
