"""Step 3 of the workflow: give a run its representation of every cell, in workers, cancellably.

A run is trained (then embedded), or made without training (the encoder untrained, then embedded; or
CellProfiler measurements of every cell). Each worker's ending is written on the run (``status``,
``message``) and told through the controller's signals; after a training the controller goes on to
embed, then shows the run (which clusters it and lays it out). The Train step's Cancel stops the
training, or the embedding or measuring that follows it.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

from phenossl.errors import InputError, PhenosslError
from phenossl.napari import tasks
from phenossl.napari.session import RunRecord


class RunSteps:
    """Starts the training, embedding and measuring workers of ``controller`` (a ``SessionController``:
    its state, runner, signals and ``activate_run``) and records how each ended."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.state = controller.state
        self.runner = controller.runner

    def start_training(
        self, train: dict[str, Any], *, seed: int = 0, init_from: str | None = None
    ) -> RunRecord:
        record = self._new_run(train, seed=seed, init_from=init_from)
        record.status = "training"
        self.controller.runs_changed.emit()
        cancel = self.state.new_cancel("train")
        store = record.tile_store()
        total = tasks.expected_events(store.n_cells, record.config, store.cells)
        self.runner.launch(
            "train", tasks.train_run, record, cancel,
            progress={"total": total, "desc": f"Training {record.name}"},
            on_yielded=self.controller.train_event.emit,
            on_returned=partial(self._trained, record, cancel),
            on_errored=partial(self._failed, record),
        )
        self.controller.status.emit(f"Training {record.name}: {record.describe()}")
        return record

    def start_baseline(self, representation: str, train: dict[str, Any], *, seed: int = 0) -> RunRecord:
        record = self._new_run(train, seed=seed, representation=representation)
        self.controller.runs_changed.emit()
        if representation == "random-init":
            record.status = "training"
            cancel = self.state.new_cancel("train")
            self.runner.launch(
                "train", tasks.untrained_run, record, progress={"desc": f"Untrained encoder {record.name}"},
                on_returned=partial(self._trained, record, cancel), on_errored=partial(self._failed, record),
            )
        else:
            self._measure(record)
        self.controller.status.emit(f"{record.name}: {record.describe()}")
        return record

    def _new_run(self, train: dict[str, Any], *, seed: int, init_from: str | None = None,
                 representation: str = "ssl") -> RunRecord:
        running = self.runner.running
        if running("train") or (representation == "cellprofiler" and running("embed")):
            raise PhenosslError("a training or measuring is already running: wait for it or cancel it")
        return self.state.new_run(train, seed=seed, init_from=init_from, representation=representation)

    def _measure(self, record: RunRecord):
        from phenossl.measure import CHUNK

        record.status = "measuring"
        chunks = -(-record.tile_store().n_cells // CHUNK)
        return self.runner.launch(
            "embed", tasks.measure_run, record, self.state.new_cancel("embed"),
            progress={"total": chunks, "desc": f"Measuring cells ({record.name})"},
            on_returned=partial(self._embedded, record), on_errored=partial(self._failed, record),
        )

    def cancel(self) -> None:
        for task, event in self.state.cancels.items():
            if self.runner.running(task):
                event.set()

    def embed(self, record: RunRecord, *, cancel: threading.Event | None = None):
        if record.config.representation == "cellprofiler":
            if self.runner.running("embed"):
                raise PhenosslError("cells are being embedded or measured already: wait for it or cancel it")
            return self._measure(record)
        if not record.has_checkpoint:
            raise InputError(f"run {record.name} has no checkpoint yet: train it first")
        return self.runner.launch(
            "embed", tasks.embed_run, record, self.state.new_cancel("embed", cancel),
            progress={"desc": f"Embedding cells ({record.name})"},
            on_returned=partial(self._embedded, record),
        )

    def _trained(self, record: RunRecord, cancel: threading.Event, outcome: tasks.TrainOutcome) -> None:
        controller = self.controller
        record.status, record.message = outcome.status, outcome.message
        controller.runs_changed.emit()
        controller.training_finished.emit(outcome)
        if outcome.status == "cancelled":
            self._cancelled(outcome.message, outcome.message)
        elif self.state.explore_after_training:
            controller.status.emit(f"{record.name}: {outcome.message}; embedding the cells...")
            self.embed(record, cancel=cancel)  # a Cancel pressed from now on stops the embedding
        else:
            controller.status.emit(f"{record.name}: {outcome.message}")

    def _failed(self, record: RunRecord, exc: BaseException) -> None:
        record.status, record.message = "failed", str(exc)
        self.controller.runs_changed.emit()
        self.controller.training_finished.emit(tasks.TrainOutcome("failed", str(exc), None))

    def _embedded(self, record: RunRecord, outcome: tasks.EmbedOutcome) -> None:
        if record.status == "measuring":
            record.status = "cancelled" if outcome.status == "cancelled" else "trained"
        if outcome.status == "cancelled":
            record.message = outcome.message
            self.controller.runs_changed.emit()
            self._cancelled(outcome.message, f"{record.name}: {outcome.message}")
            return
        record.space = record.clustering = record.umap = None
        self.controller.runs_changed.emit()
        self.controller.activate_run(record.name)

    def _cancelled(self, message: str, status: str) -> None:
        from napari.utils.notifications import show_info

        show_info(message)
        self.controller.status.emit(status)
