"""A run that was cancelled or failed reopens as such, even before its first checkpoint (not as "new")."""

from __future__ import annotations

import json
import os

import pytest
from plugin_helpers import click, segment_and_tile, set_fast_training

from phenossl.napari.session import STATUS_FILE, RunRecord, Session, run_config, saved_status
from phenossl.pipeline import RunPaths


@pytest.mark.gui
def test_a_training_cancelled_before_its_first_checkpoint_reopens_as_cancelled(workflow, qtbot):
    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    set_fast_training(widget, epochs=3)
    with qtbot.waitSignal(controller.training_finished, timeout=120_000) as blocker:
        click(qtbot, widget.train.train_button)
        click(qtbot, widget.train.cancel_button)  # at once: before the first step, so before any checkpoint
    outcome = blocker.args[0]
    record = controller.session.runs["run-001"]
    assert outcome.status == "cancelled" and not record.has_checkpoint
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)

    reopened = Session.open(controller.session.folder).runs["run-001"]
    assert reopened.status == "cancelled" and reopened.disk_status() == "cancelled"
    assert "No checkpoint had been saved yet" in reopened.message

    controller.set_session_folder(controller.session.folder)  # reopened in the viewer (Runs > Open session)
    assert controller.session.runs["run-001"] is not record
    assert controller.session.runs["run-001"].disk_status() == "cancelled"


def _record(tmp_path) -> RunRecord:
    root = tmp_path / "runs" / "run-001"
    root.mkdir(parents=True)
    config = run_config(train={"device": "cpu"}, segmentation={}, tiles={"size": 16, "border": "pad"},
                        input_section={"kind": "plate"}, cluster={"k": 2})
    return RunRecord(RunPaths(root), config)


def test_the_status_file_follows_the_records_status(tmp_path):
    record = _record(tmp_path)
    path = record.paths.root / STATUS_FILE
    assert not path.exists()  # a new record writes nothing
    record.status = "training"
    assert not path.exists()
    record.status = "failed"
    record.message = "Training failed: the GPU ran out of memory."
    assert json.loads(path.read_text()) == {"status": "failed", "message": "Training failed: the GPU ran out of memory."}
    assert saved_status(record.paths) == ("failed", "Training failed: the GPU ran out of memory.")
    record.status = "training"  # trained again: the old ending no longer holds
    assert not path.exists() and saved_status(record.paths) == ("new", "")


def test_a_checkpoint_newer_than_the_status_file_wins(tmp_path):
    record = _record(tmp_path)
    record.status = "cancelled"
    status_file = record.paths.root / STATUS_FILE
    assert saved_status(record.paths)[0] == "cancelled"
    record.paths.checkpoint.write_bytes(b"a later checkpoint (e.g. phenossl train --resume)")
    later = status_file.stat().st_mtime + 5
    os.utime(record.paths.checkpoint, (later, later))
    assert saved_status(record.paths) == ("trained", "")
    status_file.write_text("{not json")
    os.utime(status_file, (later + 5, later + 5))
    assert saved_status(record.paths) == ("trained", "")  # unreadable: ignored, not an error
