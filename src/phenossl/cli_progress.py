"""The command line's side of :mod:`phenossl.progress`: what ``phenossl run``, ``tile``, ``train`` and ``embed``
print while they work.

On a terminal, each long stage (segmenting, tiling, training, embedding, the UMAP) draws a tqdm bar with its
rate and the time left; training adds one line per epoch above its bar. Anywhere else (a log file, CI, a pipe),
no bar and no carriage return: plain lines, at most one every ``interval`` seconds per stage (20 s unless
``PHENOSSL_PROGRESS_INTERVAL`` says otherwise) besides one line per epoch and one when a stage ends. In both,
what training does before its first step is said as it starts (loading PyTorch, building the model, starting
the batches, the first batch), and ``--verbose`` adds a line for every reported training step.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Self, TextIO

from phenossl.progress import STAGE_UNITS

DEFAULT_INTERVAL_S = 20.0
#: tqdm's bar with the rate always as units per second (``0.25 steps/s``, never ``4.00s/ steps``)
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a bar may be drawn on it)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
    """A duration for people: ``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _terminal_width(stream: TextIO) -> int | None:
    """None where ``stream`` is a terminal that knows its width (the bar follows it), else 100 columns."""
    try:
        return None if os.get_terminal_size(stream.fileno()).columns > 0 else 100
    except (AttributeError, OSError, ValueError):
        return 100


class CliProgress:
    """``on_event(stage, payload)`` for the command line (see the module's docstring). Use it as a context
    manager, or call :meth:`close`, so that a bar still open is ended before the command prints its result.

    ``tty`` forces bars (True) or plain lines (False) instead of asking ``stream``; ``clock`` is for tests."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False, tty: bool | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = is_terminal(self.stream) if tty is None else bool(tty)
        if interval is None:
            interval = float(os.environ.get("PHENOSSL_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
        self.interval = interval
        self.verbose = verbose
        self._clock = clock
        self._bar: Any = None  # the open tqdm bar (terminal only)
        self._bar_stage: str | None = None
        self._stage: str | None = None  # the stage of the last count
        self._stage_start = clock()  # when the counted stage started (the previous event)
        self._last_event = clock()
        self._last_line: dict[str, float] = {}
        self._setup_start: float | None = None
        self._train_start: tuple[float, int] | None = None  # (time, global step) of the first step seen
        self._last_step: Any = None
        self._epoch_start: float | None = None

    # -- the callback -------------------------------------------------------------------------------------

    def __call__(self, stage: str, payload: Any) -> None:
        from phenossl.train.trainer import EpochDone, SetUp, StepProgress

        if self._bar is not None and stage != self._bar_stage:
            self._close_bar()
        if isinstance(payload, StepProgress):
            self._step(payload)
        elif isinstance(payload, EpochDone):
            self._epoch(payload)
        elif isinstance(payload, SetUp):
            self._set_up(stage, payload)
        elif isinstance(payload, str):
            self._line(f"  {stage}: {payload}")
        else:
            done, total = payload
            self._count(stage, int(done), int(total))
        self._last_event = self._clock()

    def close(self) -> None:
        self._close_bar()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- counted stages ------------------------------------------------------------------------------------

    def _count(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        unit = STAGE_UNITS.get(stage, "items")
        if stage != self._stage:  # a new stage: it started now (its 0 count) or with the previous event
            self._stage, self._stage_start = stage, now if done == 0 else self._last_event
            self._last_line[stage] = self._stage_start
        if self.tty:
            bar = self._open_bar(stage, total, unit, initial=0)
            bar.update(max(0, done - bar.n))
            if done >= total:
                self._close_bar()
                self._stage = None
            return
        elapsed = now - self._stage_start
        if done >= total:
            rate = f", {done / elapsed:.0f} {unit}/s" if elapsed > 0 and done / elapsed >= 1 else ""
            self._line(f"  {stage}: {total} {unit} in {duration(elapsed)}{rate}", stage)
            self._stage = None
        elif now - self._last_line.get(stage, 0.0) >= self.interval:
            self._line(f"  {stage} {done}/{total} {unit}{self._rate(done, total, elapsed, unit)}", stage)

    @staticmethod
    def _rate(done: int, total: int, elapsed: float, unit: str) -> str:
        if done <= 0 or elapsed <= 0:
            return ""
        rate = done / elapsed
        shown = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
        return f" ({shown} {unit}/s, about {duration((total - done) / rate)} left)"

    # -- training ------------------------------------------------------------------------------------------

    def _set_up(self, stage: str, event: Any) -> None:
        if self._setup_start is None:
            self._setup_start = self._clock()
        if event.phase == "first-step":
            self._epoch_start = self._clock()
        self._line(f"  {stage}: {event.text}...")

    def _step(self, event: Any) -> None:
        now = self._clock()
        if self._train_start is None:
            self._train_start = (now, event.global_step)  # the rate leaves the first (slowest) step out
            if self._epoch_start is None:
                self._epoch_start = now
            took = "" if self._setup_start is None else f"set-up and first step took {duration(now - self._setup_start)}; "
            self._line(f"  train: {took}training {event.epochs - event.epoch} epoch(s) of {event.steps_per_epoch} "
                       "steps", "train")
        self._last_step = event
        text = (f"epoch {event.epoch + 1}/{event.epochs} step {event.step}/{event.steps_per_epoch}: "
                f"loss {event.loss:.4f} ({event.images_per_s:.0f} cells/s)")
        if self.tty:
            bar = self._open_bar("train", event.total_steps, "steps", initial=self._train_start[1])
            bar.set_postfix_str(f"epoch {event.epoch + 1}/{event.epochs}, loss {event.loss:.3f}, "
                                f"{event.images_per_s:.0f} cells/s", refresh=False)
            bar.update(max(0, event.global_step - bar.n))
            if self.verbose:
                self._line(f"  {text}")
            return
        last_of_epoch = event.step == event.steps_per_epoch  # the epoch's own line follows at once
        if self.verbose or (not last_of_epoch and now - self._last_line.get("train", now) >= self.interval):
            left = self._time_left(now, event.global_step, event.total_steps)
            self._line(f"  {text}{', ' + left if left else ''}", "train")

    def _time_left(self, now: float, global_step: int, total_steps: int) -> str:
        """``about 3 min 05 s of training left`` from the steps run since the first one seen; "" at the end."""
        if self._train_start is None:
            return ""
        start, first = self._train_start
        steps = global_step - first
        if steps <= 0 or now <= start or global_step >= total_steps:
            return ""
        return f"about {duration((total_steps - global_step) * (now - start) / steps)} of training left"

    def _epoch(self, event: Any) -> None:
        now = self._clock()
        last = self._last_step
        timing = [] if self._epoch_start is None else [duration(now - self._epoch_start)]
        left = "" if last is None else self._time_left(now, last.global_step, last.total_steps)
        timing += [left] if left else []
        shown = f" ({'; '.join(timing)})" if timing else ""
        self._epoch_start = now
        self._line(f"  epoch {event.epoch + 1}/{event.epochs}: mean loss {event.mean_loss:.4f}, "
                   f"embedding spread {event.spread:.3f}, checkpoint saved{shown}", "train")
        if self._bar is not None and event.epoch + 1 >= event.epochs:
            self._close_bar()

    # -- output --------------------------------------------------------------------------------------------

    def _open_bar(self, stage: str, total: int, unit: str, *, initial: int):
        if self._bar is not None and (self._bar_stage != stage or self._bar.total != total):
            self._close_bar()
        if self._bar is None:
            from tqdm import tqdm

            width = _terminal_width(self.stream)  # a terminal that says it has 0 x 0 (a bare pty): 100 x 24
            self._bar = tqdm(total=total, initial=initial, desc=f"  {stage}", unit=f" {unit}", file=self.stream,
                             bar_format=BAR_FORMAT, leave=True, mininterval=0.25, smoothing=0.1,
                             dynamic_ncols=width is None, ncols=width, nrows=None if width is None else 24,
                             position=0)
            self._bar_stage = stage
        return self._bar

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_stage = None, None

    def _line(self, text: str, stage: str | None = None) -> None:
        """Print ``text`` (above the bar on a terminal); ``stage``: a line of this stage, so its next plain
        progress line waits ``interval`` from now."""
        if stage is not None:
            self._last_line[stage] = self._clock()
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
