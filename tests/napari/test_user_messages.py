"""What the biologist reads: the export's replace question in the dialog's words, one short status line for
a long segmentation error, and the composition preview starting on a typical cell, not a border tile."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import click, segment_and_tile, wait_task

from phenossl.errors import InputError, PhenosslError
from phenossl.napari import tasks
from phenossl.napari.session import Session, run_config
from phenossl.napari.widgets.augment_widget import preview_start_cell
from phenossl.napari.widgets.segment_widget import one_line

CELLPOSE_ERROR = (
    "Cellpose could not segment field P1_A01_s1: the model 'cpsam' was not found in /home/u/.cellpose/models. "
    "Download it or give a weights file.\n"
    + "\n".join(f"  File \"/site-packages/cellpose/models.py\", line {100 + i}, in load" for i in range(16))
    + "\nFileNotFoundError: cpsam"
)


# --------------------------------------------------------------------------------------------------
# The export's replace question


@pytest.fixture
def clustered_run(tmp_path):
    """A run of a tiny session (12 cells) with embeddings and a clustering, as if trained and clustered."""
    from phenossl.tiles.store import TileStoreWriter

    session = Session(tmp_path / "session")
    writer = TileStoreWriter(session.next_store_path(), 12, ["DNA"], 16)
    writer.append(np.random.default_rng(0).random((12, 1, 16, 16)).astype(np.float16))
    session.store = writer.finish(pd.DataFrame({"label": np.arange(1, 13), "field": "A01_s1"}), {})
    record = session.new_run(
        run_config(train={"device": "cpu"}, segmentation={}, tiles={"size": 16, "border": "pad"},
                   input_section={"kind": "plate"}, cluster={"k": 2})
    )
    np.save(record.paths.embeddings, np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32))
    record.clustering = tasks.cluster_run(record, k=2, n_nearest=2).clustering
    return record


def test_the_replace_question_names_the_files_and_no_command_line_flag(clustered_run, tmp_path):
    csv = tmp_path / "out" / "cells.csv"
    first = tasks.export_run(clustered_run, csv, overwrite=False)
    assert first.csv == csv and csv.is_file()
    question = tasks.export_run(clustered_run, csv, overwrite=False)
    assert isinstance(question, tasks.FilesExist)
    message = question.message
    assert "--" not in message and "command line" not in message
    assert "cells.csv, cells.embeddings.npy, cells.config.yaml" in message and str(csv.parent) in message
    assert "would replace 3 existing file(s)" in message and "Nothing has been written" in message
    before = csv.stat().st_mtime_ns
    assert tasks.export_run(clustered_run, csv, overwrite=True).csv == csv  # the user said yes
    assert csv.stat().st_mtime_ns >= before


def test_a_folder_in_the_way_is_an_error_not_a_replace_question(clustered_run, tmp_path):
    (tmp_path / "cells.embeddings.npy").mkdir()
    with pytest.raises(PhenosslError, match="is a folder, not a file") as error:
        tasks.export_run(clustered_run, tmp_path / "cells.csv", overwrite=False)
    assert "--overwrite" not in str(error.value)


# --------------------------------------------------------------------------------------------------
# One status line


def test_one_line_keeps_the_first_sentence_of_the_first_line():
    assert one_line(CELLPOSE_ERROR) == (
        "Cellpose could not segment field P1_A01_s1: the model 'cpsam' was not found in "
        "/home/u/.cellpose/models. …"
    )
    assert one_line("Segmentation failed: see e.g. The log. Then retry.\nTraceback ...") == (
        "Segmentation failed: see e.g. The log. …"  # "e.g." ends no sentence
    )
    short = "544 nuclei in 8 field(s). Check them, then make tiles."
    assert one_line(short) == short  # a short one-line message of several sentences stays whole
    assert one_line("12 cells tiled (48px) into /tmp/s/tiles-1") == "12 cells tiled (48px) into /tmp/s/tiles-1"
    long = one_line("x" * 500, limit=50)
    assert len(long) == 50 and long.endswith("…")


@pytest.mark.gui
def test_a_long_segmentation_error_is_one_status_line_with_the_whole_text_behind_it(
    workflow, qtbot, monkeypatch, caplog
):
    import phenossl.tiles.build

    _, widget = workflow
    segment = widget.segment

    def cellpose_fails(*args, **kwargs):
        raise InputError(CELLPOSE_ERROR)

    monkeypatch.setattr(phenossl.tiles.build, "segment_field", cellpose_fails)
    with caplog.at_level(logging.INFO, logger="phenossl.napari.widgets.segment_widget"):
        wait_task(qtbot, widget.controller, "segment", lambda: click(qtbot, segment.segment_button))
    text = segment.status.text()
    assert text.startswith("Segmentation failed: Cellpose could not segment field P1_A01_s1") and text.endswith("…")
    assert "\n" not in text and len(text) <= 200 and "FileNotFoundError" not in text
    assert segment.status.toolTip() == f"Segmentation failed: {CELLPOSE_ERROR}"
    assert any("FileNotFoundError: cpsam" in record.getMessage() for record in caplog.records)
    label, line = segment.status, segment.status.fontMetrics().height()
    assert label.heightForWidth(label.width()) <= 4 * line  # in the dock as it is: a few lines, not 18


# --------------------------------------------------------------------------------------------------
# The preview's first cell


def test_the_start_cell_is_the_median_sized_cell_well_inside_its_field():
    cells = pd.DataFrame(
        {
            "field": ["f1"] * 5 + ["f2"],
            "centroid_y": [2.0, 50.0, 50.0, 60.0, 98.0, 50.0],
            "centroid_x": [50.0, 50.0, 40.0, 60.0, 50.0, 10.0],
            "area": [300, 100, 120, 200, 150, 130],
            "padded": [True, False, False, False, True, True],
        }
    )
    shapes = {"f1": (100, 100), "f2": (100, 100)}
    # inside (half a tile = 16 px from every border): rows 1, 2, 3, with areas 100, 120, 200: median 120
    assert preview_start_cell(cells, 32, shapes) == 2
    assert preview_start_cell(cells, 32) == 2  # sizes unknown: the tiles that needed no padding
    assert preview_start_cell(cells.drop(columns=["area"]), 32, shapes) == 2  # the middle one inside
    assert preview_start_cell(cells.drop(columns=["padded", "area", "centroid_y"]), 32) == 3  # nothing known: the middle row
    assert preview_start_cell(cells.iloc[:0], 32) == 0
    assert preview_start_cell(cells, 200, shapes) == 4  # no tile fits inside: the median cell of all (150)


@pytest.mark.gui
def test_the_preview_starts_on_that_cell_after_tiling_and_keeps_the_users_pick(workflow, qtbot):
    _, widget = workflow
    controller = widget.controller
    segment_and_tile(qtbot, widget)
    store = controller.session.store
    start = widget.augment.cell.value()
    shapes = dict(zip(controller.plate.keys, controller.plate.shapes, strict=True))
    assert start == preview_start_cell(store.cells, store.tile_size, shapes) and start != 0
    assert not store.cells["padded"].iloc[start]
    assert store.cells["area"].iloc[start] == pytest.approx(store.cells.loc[~store.cells["padded"], "area"].median(),
                                                            rel=0.05)
    with qtbot.waitSignal(controller.preview_ready, timeout=60_000) as blocker:
        widget.augment._request_preview()
    assert blocker.args[0].cell_id == start
    widget.augment.cell.setValue(3)
    controller.active_run_changed.emit()  # the same store again: the user's pick stays
    assert widget.augment.cell.value() == 3
