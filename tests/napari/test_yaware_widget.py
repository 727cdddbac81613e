"""y-aware from the Train step: listed by the registry, its label column (the numeric columns of the cell table) and
kernel width shown only while it is chosen, and a run trained on a tiny tiled plate by dose."""

from __future__ import annotations

import pytest
from plugin_helpers import click, segment_and_tile, set_fast_training

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("workflow", [3], indirect=True)  # DMSO (0 uM) twice and compound_A at 0.6 uM
def test_yaware_trains_from_the_widget_on_the_dose(workflow, qtbot):
    _, widget = workflow
    train = widget.train
    controller = widget.controller
    label = train.label_form
    assert train.method.findData("yaware") >= 0  # the registry's list
    assert not label["label_column"].native.isVisibleTo(train)  # mocov2: no label
    train.method.setCurrentIndex(train.method.findData("yaware"))
    assert label["label_column"].native.isVisibleTo(train)
    assert train.method_forms["yaware"]["sigma"].native.isVisibleTo(train)

    segment_and_tile(qtbot, widget)
    choices = list(label["label_column"].choices)
    assert choices[1] == "concentration" and "compound" not in choices  # None (unset), then the numeric columns
    assert label["label_column"].value == "concentration"
    train.method_forms["yaware"]["sigma"].value = 0.5
    set_fast_training(widget)
    settings = train.settings()
    assert settings["label_column"] == "concentration"
    assert settings["method_params"] == {"yaware": {"sigma": 0.5, "label_transform": "none"}}

    with qtbot.waitSignal(controller.training_finished, timeout=180_000) as blocker:
        click(qtbot, train.train_button)
    assert blocker.args[0].status == "trained", blocker.args[0].message
    record = controller.session.runs["run-001"]
    assert record.config.train.method == "yaware" and record.config.train.label_column == "concentration"
    qtbot.waitUntil(lambda: record.has_embeddings, timeout=180_000)

    train.method.setCurrentIndex(train.method.findData("simclr"))
    assert not label["label_column"].native.isVisibleTo(train)
    assert "label_column" not in train.settings() and "method_params" not in train.settings()
