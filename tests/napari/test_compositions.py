"""The composition panel's model: presets in, validated compositions out, one knob per transform kind."""

from __future__ import annotations

import pytest

from phenossl.augment.specs import TRANSFORM_TYPES, load_composition
from phenossl.errors import ConfigError
from phenossl.napari.compositions import KNOBS, CompositionDraft, magnitude, preset_names, weight_text


def test_every_transform_kind_has_a_knob_whose_default_is_in_range():
    assert list(KNOBS) == list(TRANSFORM_TYPES)
    for kind, knob in KNOBS.items():
        value = magnitude(TRANSFORM_TYPES[kind]())
        assert value is None or knob.minimum <= value <= knob.maximum or value == knob.special_value, kind


def test_the_centre_crop_knob_shows_auto_below_its_smallest_fraction():
    draft = CompositionDraft.from_preset("morphology")
    knob = KNOBS["center_crop"]
    assert magnitude(draft.specs["center_crop"]) == knob.special_value == pytest.approx(0.05)
    draft.set_magnitude("center_crop", 0.6)
    assert draft.specs["center_crop"].fraction == 0.6
    draft.set_magnitude("center_crop", knob.special_value)
    assert draft.specs["center_crop"].fraction == "auto"


@pytest.mark.parametrize("preset", ["morphology", "context", "none"])
def test_an_untouched_preset_gives_back_the_preset(preset):
    draft = CompositionDraft.from_preset(preset)
    assert draft.composition() == load_composition(preset)


def test_edits_keep_the_order_and_the_other_fields_and_rename():
    draft = CompositionDraft.from_preset("context-jitter")
    draft.set_magnitude("random_crop", 0.5)
    draft.set_enabled("center_crop", True)
    comp = draft.composition()
    kinds = [t.kind for t in comp.transforms]
    assert (
        kinds[:5] == ["intensity", "flip", "rotation", "affine", "random_crop"] and kinds[5] == "center_crop"
    )
    crop = comp.transforms[4]
    assert crop.scale == (0.5, 1.0) and crop.ratio == pytest.approx((0.75, 4 / 3))
    assert comp.name == "context-jitter-edited"


def test_range_knobs_move_the_other_end_when_they_would_cross():
    draft = CompositionDraft.from_preset("none")
    draft.set_enabled("blur", True)
    draft.set_magnitude("blur", 0.05 + 0.05)  # below the default minimum sigma 0.1
    assert draft.specs["blur"].sigma == (0.1, 0.1)


def test_rotation_in_90_degree_steps_needs_no_angle():
    draft = CompositionDraft.from_preset("morphology")
    draft.set_magnitude("rotation", 45)
    draft.set_option("rotation", True)
    assert draft.specs["rotation"].multiples_of_90 and draft.specs["rotation"].degrees == 180
    with pytest.raises(ConfigError, match="no effect"):
        draft.set_magnitude("rotation", 30)


def test_values_the_core_rejects_are_config_errors_and_change_nothing():
    draft = CompositionDraft.from_preset("morphology")
    before = draft.composition()
    with pytest.raises(ConfigError, match="fraction"):
        draft.set_magnitude("center_crop", 1.5)
    with pytest.raises(ConfigError):
        draft.set_probability("flip", 1.5)
    assert draft.composition() == before


def test_presets_list_the_papers_two_first_and_weight_reads_as_words():
    assert preset_names()[:2] == ("morphology", "context") and preset_names()[-1] == "none"
    assert weight_text(1.0, "morphology", "context") == "loss = A (morphology) only; B is not used"
    assert weight_text(0.25, "m", "c") == "loss = 0.25 × A (m) + 0.75 × B (c)"
