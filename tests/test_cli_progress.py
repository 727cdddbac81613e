"""What the command line prints while stages work (phenossl.cli_progress), fed events directly: a bar on a
terminal, plain rate-limited lines elsewhere, the training's set-up said as it happens, steps only with
--verbose. (tests/pipeline/test_cli_output.py runs the real command.)"""

from __future__ import annotations

import io
import re
from pathlib import Path

from phenossl.cli_progress import CliProgress, duration
from phenossl.train.trainer import SETUP_PHASES, EpochDone, SetUp, StepProgress

STEP_LINE = re.compile(r"^  epoch \d+/\d+ step \d+/\d+: loss")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _training(progress: CliProgress, clock: Clock, *, epochs: int = 3, steps: int = 50, step_s: float = 1.0) -> None:
    """A whole training's events, ``step_s`` seconds a step."""
    for phase in SETUP_PHASES:
        progress("train", SetUp(phase, f"doing {phase}"))
        clock.now += 2.0
    for epoch in range(epochs):
        for step in range(1, steps + 1):
            clock.now += step_s
            progress("train", StepProgress(epoch=epoch, epochs=epochs, step=step, steps_per_epoch=steps,
                                           global_step=epoch * steps + step, total_steps=epochs * steps, loss=4.0,
                                           branch_losses={"a": 4.0}, images_per_s=64.0, lr=0.1))
        progress("train", EpochDone(epoch, epochs, 4.0 - epoch, 0.5, Path("checkpoint.pt")))


def test_plain_lines_say_the_set_up_in_order_one_line_per_epoch_and_a_step_line_at_most_every_interval():
    out, clock = io.StringIO(), Clock()
    with CliProgress(out, tty=False, interval=20.0, clock=clock) as progress:
        _training(progress, clock)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert [line for line in lines if line.startswith("  train: doing")] == [
        f"  train: doing {phase}..." for phase in SETUP_PHASES
    ]
    assert "  train: set-up and first step took 11 s; training 3 epoch(s) of 50 steps" in lines
    epochs = [line for line in lines if line.startswith("  epoch") and ":" in line.split()[1]]
    assert [line.split(":")[0] for line in epochs] == ["  epoch 1/3", "  epoch 2/3", "  epoch 3/3"]
    assert "mean loss 4.0000" in epochs[0] and "(52 s; about 1 min 40 s of training left)" in epochs[0]
    assert epochs[-1].endswith("checkpoint saved (50 s)")
    step_lines = [line for line in lines if STEP_LINE.match(line)]
    assert 5 <= len(step_lines) <= 150 / 20  # 150 one-second steps: a line every 20 s, not one per step
    assert step_lines[0] == "  epoch 1/3 step 21/50: loss 4.0000 (64 cells/s), about 2 min 09 s of training left"
    assert len(lines) == len(SETUP_PHASES) + 1 + 3 + len(step_lines)


def test_verbose_prints_every_reported_step():
    out, clock = io.StringIO(), Clock()
    with CliProgress(out, tty=False, verbose=True, clock=clock) as progress:
        _training(progress, clock, epochs=2, steps=4)
    assert sum(bool(STEP_LINE.match(line)) for line in out.getvalue().splitlines()) == 8


def test_plain_counts_give_a_line_per_interval_with_rate_and_time_left_and_one_at_the_end():
    out, clock = io.StringIO(), Clock()
    progress = CliProgress(out, tty=False, interval=10.0, clock=clock)
    progress("embedding", (0, 1000))
    for done in range(10, 1001, 10):  # 100 batches, one a second
        clock.now += 1.0
        progress("embedding", (done, 1000))
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "  embedding 100/1000 cells (10 cells/s, about 1 min 30 s left)"
    assert len(lines) == 10 and lines[-1] == "  embedding: 1000 cells in 1 min 40 s, 10 cells/s"
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_bar_with_rate_and_time_left_and_lines_above_it():
    out, clock = io.StringIO(), Clock()
    with CliProgress(out, tty=True, clock=clock) as progress:
        progress("umap", "layout of 500 cells")
        for done in range(0, 201, 20):
            progress("umap", (done, 200))
        _training(progress, clock, epochs=2, steps=5, step_s=0.0)
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "  umap: 100%|" in text and "200/200" in text and "epochs/s" in text
    assert "  train: 100%|" in text and "10/10" in text and "loss 4.000" in text
    assert "  epoch 1/2: mean loss 4.0000" in text and "  epoch 2/2: mean loss 3.0000" in text
    assert "  train: doing model...\n" in text
    assert not any(STEP_LINE.match(line) for line in text.splitlines())  # not verbose: the bar, no step lines


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.42, 12.4, 185, 3720)] == ["0.4 s", "12 s", "3 min 05 s", "1 h 02 min"]
