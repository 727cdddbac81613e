"""The field slider of a plate names its field (plate · well · site) instead of a bare number."""

from __future__ import annotations

import pytest
from plugin_helpers import add_layers, small_plate_layers

from phenossl.napari.field_names import field_caption, install_field_names, text_overlay
from phenossl.napari.plate import PlateInfo


def test_field_caption_names_plate_well_and_site_else_the_key():
    info = PlateInfo(
        keys=["Week1_150607_B02_s1", "x_f2", "Week1_150607_C03_s4"],
        shapes=[(8, 8)] * 3,
        plates=["Week1_22123", None, None],
        wells=["B02", None, "C03"],
        sites=[1, None, 4],
    )
    assert field_caption(info, 0) == "Week1_22123 · B02 · site 1"
    assert field_caption(info, 1) == "x_f2"  # nothing known but its key
    assert field_caption(info, 2) == "C03 · site 4"
    with pytest.raises(IndexError, match="outside this plate's 3 field"):
        field_caption(info, 3)


@pytest.mark.gui
def test_the_slider_axis_is_field_and_the_overlay_follows_it(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    install_field_names(viewer)
    layers = add_layers(viewer, small_plate_layers(3))
    info = PlateInfo.from_metadata(layers[0].metadata)
    overlay = text_overlay(viewer)
    assert viewer.dims.axis_labels[0] == "field"
    for index in (0, 2, 1):
        viewer.dims.set_current_step(0, index)
        assert overlay.visible and overlay.text == f"field {index + 1}/3: {field_caption(info, index)}"
    assert overlay.text == "field 2/3: SYNTH01 · B03 · site 1"
    for layer in layers:
        viewer.layers.remove(layer)
    assert not overlay.visible and overlay.text == ""  # no plate: no caption left behind
    assert install_field_names(viewer) is install_field_names(viewer)  # one per viewer


@pytest.mark.gui
def test_opening_a_plate_names_its_fields_without_any_widget(make_napari_viewer, phenossl_plugin):
    from phenossl.synthetic import sample_data_path

    viewer = make_napari_viewer(show=True)
    viewer.open(str(sample_data_path()), plugin="phenossl")
    viewer.dims.set_current_step(0, 7)
    assert viewer.dims.axis_labels[0] == "field"
    assert text_overlay(viewer).text == "field 8/8: SYNTH01 · E03 · site 1"
