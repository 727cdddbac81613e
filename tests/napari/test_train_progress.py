"""The Train step says what training's first seconds are spent on, as the command line does (the same events
from the core: phenossl.train.SetUp), before the first step's progress replaces it."""

from __future__ import annotations

import pytest
from plugin_helpers import click, segment_and_tile, set_fast_training

pytestmark = pytest.mark.gui


def test_the_train_step_shows_each_set_up_phase_before_the_first_step(workflow, qtbot):
    from phenossl.train import SETUP_PHASES

    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget, epochs=1)
    controller.explore_after_training = False  # the training alone
    shown = []  # (event kind, phase, what the Train step's progress text says once the widget has it)
    controller.train_event.connect(lambda event: shown.append(
        (type(event).__name__, getattr(event, "phase", None), widget.train.progress_label.text())))
    with qtbot.waitSignal(controller.training_finished, timeout=180_000) as blocker:
        click(qtbot, widget.train.train_button)
    assert blocker.args[0].status == "trained"

    set_up = [(phase, text) for kind, phase, text in shown if kind == "SetUp"]
    assert [phase for phase, _ in set_up] == list(SETUP_PHASES)
    assert [kind for kind, *_ in shown[: len(SETUP_PHASES) + 1]] == ["SetUp"] * len(SETUP_PHASES) + ["StepProgress"]
    texts = [text for _, text in set_up]
    assert texts[0].startswith("loading PyTorch") and texts[1].startswith("building the model: ")
    assert "on cpu (float32)" in texts[1] and texts[4].startswith("first batch of epoch 1")
    assert all(text.endswith("…") for text in texts)
    assert shown[len(SETUP_PHASES)][2].startswith("epoch 1/1, step 1/")  # then the steps' own progress
