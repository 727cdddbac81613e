"""Every napari attribute phenossl uses that is private or underscored, in one place; checked against napari
0.9.2 (the version the tests run; phenossl asks for napari >= 0.5). The rest of the plugin calls this module
instead of touching them.

- ``_relay_error`` / ``_relay_warning`` of ``napari.qt.threading.FunctionWorker`` and ``GeneratorWorker``
  (napari's private ``_NotifyingMixin``, which connects them to a worker's ``errored`` / ``warned``
  signals). napari shows every worker error as a notification with a traceback button and every
  warning (numba, scikit-learn) as a notification. phenossl shows its own clean notification for an
  error (``workers.TaskRunner``) and logs warnings, so its workers override both. If a napari version
  no longer has them, the overrides are never called: an error is shown twice (napari's and
  phenossl's) and warnings become notifications; nothing else changes. A warning in the log says so.
- ``create_worker``'s underscored keywords ``_connect``, ``_progress``, ``_start_thread`` and
  ``_worker_class``: documented by napari (the underscore keeps them apart from the function's own
  keywords), used here only so that a change of them is one edit.
- A label colormap's ``_data_to_texture`` (``napari.utils.colormaps``' label colormaps): called on a
  tiny array in a worker, it fills napari's per-dtype mapping cache and compiles napari's numba colour
  mapping off the UI thread. If it is missing, nothing is precomputed: the first paint then spends
  1-2.5 s on the UI thread instead, and the colours are the same.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RELAYS = ("_relay_error", "_relay_warning")


@functools.cache
def _quiet_workers() -> tuple[type, type]:
    """napari's FunctionWorker and GeneratorWorker with their error relay silenced and their warning relay
    sent to the log. They must be napari's classes: ``create_worker`` makes a progress bar advance on
    ``yielded`` only for its own ``GeneratorWorker``."""
    from napari.qt.threading import FunctionWorker, GeneratorWorker

    missing = [name for name in RELAYS for cls in (FunctionWorker, GeneratorWorker) if not hasattr(cls, name)]
    if missing:
        logger.warning(
            "this napari's workers have no %s: worker errors may be shown twice, warnings as notifications",
            ", ".join(sorted(set(missing))),
        )

    def leave_to_caller(self, exc: BaseException) -> None:
        pass

    def log_warning(self, show_warn_args: tuple) -> None:
        message, category = show_warn_args[:2]
        logger.warning("%s: %s", getattr(category, "__name__", category), message)

    members = {"_relay_error": leave_to_caller, "_relay_warning": log_warning}
    return (
        type("QuietFunctionWorker", (FunctionWorker,), members),
        type("QuietGeneratorWorker", (GeneratorWorker,), members),
    )


def quiet_worker_class(func: Callable) -> type:
    """The quiet napari worker class for ``func``: a generator worker for generator functions."""
    function_worker, generator_worker = _quiet_workers()
    return generator_worker if inspect.isgeneratorfunction(func) else function_worker


def quiet_worker(
    func: Callable,
    args: tuple,
    kwargs: dict[str, Any],
    *,
    connect: dict[str, Callable],
    progress: dict | bool,
):
    """An unstarted napari worker running ``func(*args, **kwargs)``, its signals connected as ``connect``
    says, with napari's progress bar (``progress``: a dict with ``total`` advances it one per yield) and
    without napari's error and warning notifications."""
    from napari.qt.threading import create_worker

    return create_worker(
        func,
        *args,
        _connect=connect,
        _progress=progress,
        _start_thread=False,
        _worker_class=quiet_worker_class(func),
        **kwargs,
    )


def precompute_label_texture(colormap: Any, dtype: Any) -> None:
    """Fill ``colormap``'s per-dtype texture mapping for ``dtype`` label data (and compile napari's numba
    mapping), so that the UI thread only assigns it. Skipped where napari has no ``_data_to_texture``."""
    to_texture = getattr(colormap, "_data_to_texture", None)
    if to_texture is None:
        logger.debug("napari's label colormap has no _data_to_texture: its texture is made on the UI thread")
        return
    to_texture(np.zeros((2, 2), dtype=dtype))
