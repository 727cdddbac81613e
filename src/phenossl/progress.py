"""How the core says what it is doing, to any front end: one callback, ``on_event(stage, payload)``.

The stages (tiling, training, embedding, clustering and UMAP; no Qt and no terminal here) call it from whatever
thread runs them, and a front end turns the events into what its user sees: the command line into progress bars
on a terminal and plain, rate-limited lines in a log (:mod:`phenossl.cli_progress`); napari into its workers'
yields, progress bars and the Train step's text (the training events come to napari as the training
generator's yields: :func:`phenossl.train.iter_training`). The stage logic is written once, here in the core.

Payloads:

- ``(done, total)``: a counted stage advanced (:data:`STAGE_UNITS` says what it counts);
- ``str``: what the stage is about to do, said before it is done (a long step with no count);
- for the ``"train"`` stage, the trainer's own events: :class:`~phenossl.train.trainer.SetUp` before each
  set-up phase (loading PyTorch, building the model, starting the batches, the first batch),
  :class:`~phenossl.train.trainer.StepProgress` for reported steps and
  :class:`~phenossl.train.trainer.EpochDone` after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: on_event(stage, payload): see the module's docstring for the payloads.
EventHandler = Callable[[str, Any], None]

#: What a counted stage counts, for the front ends' bars and lines.
STAGE_UNITS = {
    "segmenting": "fields",
    "tiling": "fields",
    "importing": "cells",
    "measuring": "cells",
    "embedding": "cells",
    "umap": "epochs",
    "placing": "cells",
}


def counter(on_event: EventHandler | None, stage: str | None = None) -> Callable[..., None] | None:
    """``on_event`` as the ``progress`` callback a counting function takes: ``progress(done, total)`` with
    ``stage`` given, else ``progress(stage, done, total)``; None without ``on_event``."""
    if on_event is None:
        return None
    if stage is None:
        return lambda name, done, total: on_event(name, (done, total))
    return lambda done, total: on_event(stage, (done, total))
