"""What ``phenossl`` prints as it works, as a user sees it: in a log (output captured, not a terminal) plain lines
with the set-up's stages in order, one line per epoch, no per-step lines and no carriage return; on a terminal
(a pseudo-terminal) progress bars."""

from __future__ import annotations

import os
import re
import sys

import pytest
from pipeline_helpers import plate_folder, run_config

from phenossl.cli import main
from phenossl.config import save_config

SET_UP = ["loading PyTorch and choosing the device", "building the model: mocov2 / resnet18 on cpu (float32)",
          "starting the batches: 10 cells, 4 a batch", "preparing 10 probe cells", "first batch of epoch 1"]
STEP_LINE = re.compile(r"^  epoch \d+/\d+ step \d+/\d+: loss")


@pytest.fixture
def tiny_run(tmp_path):
    """A configuration file of the pipeline tests' two-field plate (10 cells, 2 epochs of 2 steps, CPU)."""
    config_file = tmp_path / "run.yaml"
    save_config(run_config(tmp_path, plate_folder(tmp_path / "plate"), epochs=2), config_file)
    return config_file


def test_a_log_gets_plain_lines_the_set_up_in_order_and_one_line_per_epoch(tiny_run, capsys):
    assert main(["run", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\r" not in out and "\x1b" not in out  # no bar's control characters in a log
    setup = [next(i for i, line in enumerate(lines) if line.startswith(f"  train: {text}")) for text in SET_UP]
    assert setup == sorted(setup)  # said in the order they happen
    assert lines[setup[-1] + 1].startswith("  train: set-up and first step took")
    epochs = [line for line in lines if re.match(r"^  epoch \d+/2: mean loss \d", line)]
    assert len(epochs) == 2 and "checkpoint saved" in epochs[0]
    assert not any(STEP_LINE.match(line) for line in lines)  # no per-step line without --verbose
    for stage in ("segmenting: 2 fields in", "tiling: 2 fields in", "embedding: 10 cells in", "umap: 500 epochs in"):
        assert sum(line.startswith(f"  {stage}") for line in lines) == 1, stage
    assert len(lines) < 40

    assert main(["-v", "train", str(tiny_run), "--overwrite"]) == 0  # --verbose: every reported step too
    steps = [line for line in capsys.readouterr().out.splitlines() if STEP_LINE.match(line)]
    assert len(steps) == 2 * 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal (pty) as on Linux")
def test_a_terminal_gets_progress_bars(tiny_run):
    import pty

    tmp = tiny_run.parent
    pid, fd = pty.fork()
    if pid == 0:  # the child: phenossl in a fresh process whose output is a terminal
        os.chdir(tmp)
        os.execv(sys.executable, [sys.executable, "-m", "phenossl.cli", "tile", str(tiny_run)])
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out.extend(chunk)
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\r  segmenting:" in text and "\r  tiling:" in text  # drawn and redrawn in place
    assert re.search(r"  tiling: 100%\|.*\| 2/2 \[.*fields/s\]", text), text
    assert "10 cells in" in text
