"""The controller's worker plumbing: start napari thread workers, count the tasks in flight, let the newest
request win, and relay errors as one clean notification.

Every long job is a ``tasks`` function run in a napari thread worker (``napari_compat.quiet_worker``);
the worker thread never touches a layer or a widget. Results come back through the worker's
``returned`` / ``yielded`` signals, which Qt delivers on the main thread. An error raised in a worker,
in a result handler or in a step of ``in_turns`` is shown once: a PhenosslError's own message, a short
"<step> failed" line otherwise (the traceback in the log); then the caller's ``on_failed`` hears of it.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from phenossl.napari.napari_compat import quiet_worker

TASK_NAMES = {
    "segment": "Segmentation",
    "tiles": "Making tiles",
    "preview": "The preview",
    "train": "Training",
    "embed": "Embedding",
    "cluster": "Clustering",
    "suggest-k": "Suggesting k",
    "umap": "The UMAP layout",
    "export": "The export",
    "compare": "Comparing runs",
    "warm-up": "Loading the training code",
    "paint": "Painting the nuclei",
    "nuclei": "Reopening the session's nuclei",
    "save-clustering": "Saving the clustering",
    "report": "The report",
    "save-report": "Saving the report",
}


class TaskRunner:
    """Runs named tasks in napari workers and says when each name starts and stops running.

    ``on_state(task, True)`` is called as each run of ``task`` starts, ``on_state(task, False)`` when
    none is left (tasks of one name may overlap: previews do); ``on_failed(what, exc)`` after a failure was
    shown (``what``: the task's name for people, e.g. "Clustering")."""

    def __init__(
        self, on_state: Callable[[str, bool], None], on_failed: Callable[[str, BaseException], None]
    ) -> None:
        self._on_state = on_state
        self._on_failed = on_failed
        self._running: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()

    def running(self, task: str) -> bool:
        return task in self._running

    @property
    def busy(self) -> bool:
        """True while any task runs."""
        return bool(self._running)

    def launch(
        self,
        task: str,
        func: Callable,
        *args: Any,
        progress: dict | bool = True,
        on_returned: Callable | None = None,
        on_yielded: Callable | None = None,
        on_errored: Callable | None = None,
        **kwargs: Any,
    ):
        """Start ``func(*args, **kwargs)`` in a napari thread worker; results and errors come back on the
        main thread. ``progress``: a napari progress bar (a dict with ``total`` makes it advance one per
        yield). ``on_errored`` runs after the failure was shown."""
        connect = {"errored": partial(self.failed, task, on_errored)}
        if on_returned is not None:
            connect["returned"] = self.reporting(task, on_returned)
        if on_yielded is not None:
            connect["yielded"] = self.reporting(task, on_yielded)
        worker = quiet_worker(func, args, kwargs, connect=connect, progress=progress)
        worker.finished.connect(partial(self._done, task))
        self._started(task)
        worker.start()
        return worker

    def reporting(self, task: str, handler: Callable) -> Callable:
        """``handler`` (run on the main thread with a worker's result) with its errors shown as a worker's
        own are: an exception escaping a Qt slot would end up in napari's traceback dialog instead."""

        @functools.wraps(handler)
        def report(*args: Any) -> None:
            try:
                handler(*args)
            except Exception as exc:  # noqa: BLE001 -- shown to the user, as a worker's own error is
                self.failed(task, None, exc)

        return report

    def failed(self, task: str, handler: Callable | None, exc: BaseException) -> None:
        """Show ``exc`` as one notification, tell ``on_failed``, then run ``handler(exc)`` if given."""
        from phenossl.napari.qt_helpers import notify_exception

        what = TASK_NAMES.get(task, task)
        notify_exception(exc, what)
        self._on_failed(what, exc)
        if handler is not None:
            handler(exc)

    def in_turns(self, task: str, *steps: Callable[[], None]) -> None:
        """Run ``steps`` one per event-loop turn, so that no single UI-thread block holds them all; ``task``
        counts as running until the last has run. A step that fails is reported like a worker's failure
        and the rest are dropped."""
        from qtpy.QtCore import QTimer

        remaining = list(steps)
        self._started(task)

        def next_step() -> None:
            try:
                remaining.pop(0)()
            except Exception as exc:  # noqa: BLE001 -- shown to the user, as a worker's own error is
                remaining.clear()
                self.failed(task, None, exc)
            if remaining:
                QTimer.singleShot(0, next_step)
            else:
                self._done(task)

        QTimer.singleShot(0, next_step)

    def newest(self, kind: str) -> Callable[[], bool]:
        """A new request of ``kind``: the returned check says whether it is still the newest one, so a
        result handler shows only the newest request's result (newest wins)."""
        self._requests[kind] += 1
        ticket = self._requests[kind]
        return lambda: self._requests[kind] == ticket

    def _started(self, task: str) -> None:
        self._running[task] += 1
        self._on_state(task, True)

    def _done(self, task: str) -> None:
        self._running[task] -= 1
        if self._running[task] <= 0:
            del self._running[task]
            self._on_state(task, False)
