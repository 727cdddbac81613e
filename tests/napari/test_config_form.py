"""The form helper's mapping from config fields to widgets, without a viewer (pure), and one real form."""

from __future__ import annotations

from pathlib import Path

import pytest

from phenossl.config import RunConfig, SegmentConfig, TileConfig, TrainConfig
from phenossl.napari.config_form import Row, base_type, field_bounds, read_value, widget_options


def test_ranges_come_from_the_field_constraints():
    assert field_bounds(TrainConfig, "resolution") == (16, 512)  # ge/le
    assert field_bounds(TrainConfig, "epochs") == (1, None)  # open above
    assert field_bounds(TrainConfig, "lr") == (0, None)  # a float's gt=0 starts at 0
    assert field_bounds(TileConfig, "size") == (16, 1024)
    assert field_bounds(RunConfig, "seed") == (None, None)


def test_optional_annotations_are_unwrapped():
    assert base_type(SegmentConfig.model_fields["diameter"].annotation) == (float, True)
    assert base_type(SegmentConfig.model_fields["weights"].annotation) == (Path, True)
    assert base_type(TrainConfig.model_fields["epochs"].annotation) == (int, False)


def test_a_number_takes_its_range_default_and_tooltip_from_the_field():
    spec = widget_options(TrainConfig, Row("resolution", "Resolution"))
    options = spec["options"]
    assert spec["value"] == TrainConfig().resolution and spec["label"] == "Resolution"
    assert options["widget_type"] == "FloatSpinBox" and (options["min"], options["max"]) == (16, 512)
    assert spec["qt"]["decimals"] == 0 and options["step"] == 1  # a whole number
    assert options["tooltip"] == TrainConfig.model_fields["resolution"].description


def test_a_row_says_only_what_the_gui_changes():
    spec = widget_options(TrainConfig, Row("epochs", "Epochs", value=10, high=10_000, tooltip="passes"))
    assert spec["value"] == 10 and (spec["options"]["min"], spec["options"]["max"]) == (1, 10_000)
    assert spec["options"]["tooltip"] == "passes"  # the field has no description
    with_unit = widget_options(TrainConfig, Row("resolution", "Resolution", step=16, suffix=" px"))
    assert with_unit["qt"]["suffix"] == " px" and with_unit["options"]["step"] == 16


def test_literals_become_combo_boxes_with_their_choices():
    spec = widget_options(SegmentConfig, Row("backend", "Backend"))
    assert spec["options"]["widget_type"] == "ComboBox"
    assert spec["options"]["choices"] == [("classical", "classical"), ("cellpose", "cellpose")]
    labelled = widget_options(TileConfig, Row("border", "At the border", choices=(("pad it", "pad"),)))
    assert labelled["options"]["choices"] == [("pad it", "pad")]


def test_booleans_texts_and_files():
    assert widget_options(TrainConfig, Row("amp", "AMP"))["options"]["widget_type"] == "CheckBox"
    assert widget_options(SegmentConfig, Row("model", "Model"))["options"]["widget_type"] == "LineEdit"
    weights = widget_options(SegmentConfig, Row("weights", "Weights"))["options"]
    assert weights["widget_type"] == "FileEdit" and weights["nullable"] is True


def test_an_optional_number_at_its_lowest_value_reads_as_none():
    row = Row("diameter", "Nucleus diameter", high=500, none_text="estimate")
    spec = widget_options(SegmentConfig, row)
    assert spec["value"] == 0 and spec["qt"]["none_text"] == "estimate"
    assert read_value(SegmentConfig, row, 0.0) is None and read_value(SegmentConfig, row, 30.0) == 30.0


def test_values_read_back_as_the_field_takes_them():
    assert read_value(TileConfig, Row("size", "Tile size", suffix=" px"), 48.0) == 48
    assert isinstance(read_value(TileConfig, Row("size", "Tile size", suffix=" px"), 48.0), int)
    assert read_value(SegmentConfig, Row("model", "Model"), "  ") == SegmentConfig().model


def test_a_field_without_a_widget_is_refused():
    with pytest.raises(TypeError, match="percentiles"):
        widget_options(TileConfig, Row("percentiles", "Percentiles"))


@pytest.mark.gui
def test_a_form_builds_magicgui_widgets_and_validates(qtbot):
    from qtpy.QtWidgets import QFormLayout, QWidget

    from phenossl.napari.config_form import ConfigForm

    rows = [Row("size", "Tile size", suffix=" px"), Row("border", "At the border", value="pad")]
    form = ConfigForm(TileConfig, rows)
    holder = QWidget()
    qtbot.addWidget(holder)
    form.add_rows(QFormLayout(holder))
    assert form.native("size").suffix() == " px" and form.labels["border"].text() == "At the border"
    form.native("size").setValue(64)
    assert form.values() == {"size": 64, "border": "pad"}
    assert TileConfig().model_copy(update=form.values()).size == 64
    form.set_visible("border", False)
    assert not form.native("border").isVisibleTo(holder) and not form.labels["border"].isVisibleTo(holder)
