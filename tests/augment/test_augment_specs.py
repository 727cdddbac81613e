"""Composition specs: presets, YAML round trip, and configuration errors a user can act on."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from phenossl.augment import (
    PRESETS,
    CenterCrop,
    Composition,
    Rotation,
    load_composition,
    save_composition,
    transform_from_dict,
)
from phenossl.errors import ConfigError, OutputExistsError


def test_presets_are_listed_and_loadable_by_name():
    assert set(PRESETS) == {"none", "context", "morphology", "morphology-jitter", "context-jitter"}
    for name in PRESETS:
        assert load_composition(name).name == name
    assert load_composition("none").transforms == ()


def test_morphology_preset_keeps_the_central_cell_at_any_orientation_and_its_stain_levels():
    kinds = {spec.kind: spec for spec in load_composition("morphology").transforms}
    assert set(kinds) == {"rotation", "center_crop", "affine", "flip", "blur"}  # no intensity jitter
    assert kinds["center_crop"].fraction == "auto"
    kinds = {spec.kind: spec for spec in load_composition("morphology-jitter").transforms}
    assert set(kinds) == {"rotation", "center_crop", "intensity", "flip"}
    assert (
        kinds["rotation"].degrees == 180
        and not kinds["rotation"].multiples_of_90
        and kinds["rotation"].p == 1
    )
    assert kinds["center_crop"].fraction == 0.5 and kinds["center_crop"].p == 1


def test_context_preset_crops_anywhere_and_keeps_stain_levels():
    kinds = [spec.kind for spec in load_composition("context").transforms]
    assert kinds == ["flip", "rotation", "affine", "random_crop", "blur"]
    kinds = [spec.kind for spec in load_composition("context-jitter").transforms]
    assert kinds == ["intensity", "flip", "rotation", "affine", "random_crop"]


@pytest.mark.parametrize("name", PRESETS)
def test_yaml_round_trip_of_each_preset(name, tmp_path):
    composition = load_composition(name)
    assert Composition.from_yaml(composition.to_yaml()) == composition
    path = save_composition(composition, tmp_path / f"{name}.yaml")
    assert load_composition(path) == composition
    assert load_composition(str(path)) == composition


def test_yaml_writes_every_value_out():
    text = Composition(name="c", transforms=[Rotation()]).to_yaml()
    assert "degrees: 180.0" in text and "multiples_of_90: false" in text and "p: 1.0" in text


def test_save_refuses_to_overwrite(tmp_path):
    path = save_composition(load_composition("context"), tmp_path / "c.yaml")
    with pytest.raises(OutputExistsError):
        save_composition(load_composition("context"), path)
    save_composition(load_composition("morphology"), path, overwrite=True)
    assert load_composition(path).name == "morphology"


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"unknown composition 'morphologie'.*none, context, context-jitter, morphology, morphology-jitter"):
        load_composition("morphologie")


def test_unknown_key_is_named_with_the_allowed_keys():
    text = "name: x\ntransforms:\n- kind: rotation\n  degree: 90\n"
    with pytest.raises(ConfigError) as error:
        Composition.from_yaml(text, source="my.yaml")
    message = str(error.value)
    assert "my.yaml" in message and "transforms[0] (rotation).degree" in message
    assert "unknown key 'degree'" in message and "allowed keys: kind, p, degrees, multiples_of_90" in message


def test_unknown_top_level_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'transform'"):
        Composition.from_dict({"name": "x", "transform": []})


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(
        ConfigError, match=r"unknown transform kind 'hue'; known kinds: rotation, center_crop"
    ):
        Composition.from_dict({"name": "x", "transforms": [{"kind": "hue"}]})


def test_resize_is_explained_as_implicit():
    with pytest.raises(ConfigError, match="resizing is implicit"):
        Composition.from_dict({"name": "x", "transforms": [{"kind": "resize", "size": 96}]})


def test_missing_kind_is_explained():
    with pytest.raises(ConfigError, match="each transform needs a 'kind'"):
        Composition.from_dict({"name": "x", "transforms": [{"degrees": 90}]})


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ({"kind": "rotation", "degrees": 200}, r"degrees: .*less than or equal to 180 \(got 200\)"),
        ({"kind": "rotation", "p": 1.5}, r"p: .*less than or equal to 1 \(got 1.5\)"),
        (
            {"kind": "rotation", "degrees": 30, "multiples_of_90": True},
            "degrees has no effect with multiples_of_90",
        ),
        ({"kind": "center_crop", "fraction": 0}, r"fraction: .*auto or in \(0, 1\], got 0"),
        ({"kind": "center_crop", "fraction": 1.5}, r"fraction: .*auto or in \(0, 1\], got 1.5"),
        ({"kind": "center_crop", "fraction": "big"}, r"fraction"),
        ({"kind": "random_crop", "scale": [0.8, 0.2]}, r"scale .* 0 < min <= max <= 1, got \[0.8, 0.2\]"),
        ({"kind": "random_crop", "ratio": [0, 1]}, r"ratio .* 0 < min <= max, got \[0, 1\]"),
        ({"kind": "random_crop", "scale": 0.5}, r"expected a \[min, max\] pair \(got 0.5\)"),
        ({"kind": "flip", "horizontal": False, "vertical": False}, "horizontal: true and/or vertical: true"),
        ({"kind": "affine", "shear": 90}, r"shear: .*less than 90"),
        ({"kind": "affine", "translate": -0.1}, r"translate: .*greater than or equal to 0"),
        ({"kind": "intensity", "contrast": 1.0}, r"contrast: .*less than 1"),
        ({"kind": "intensity", "gamma": [0.0, 1.0]}, r"gamma must be \[min, max\] with 0 < min"),
        ({"kind": "blur", "sigma": [-1, 1]}, r"sigma .* 0 < min"),
        ({"kind": "blur", "sigma": [1, math.inf]}, "finite"),
        ({"kind": "erasing", "scale": [0.1, 2.0]}, r"scale .*<= 1, got \[0.1, 2\]"),
    ],
)
def test_out_of_range_values_are_named(transform, expected):
    with pytest.raises(ConfigError, match=expected):
        Composition.from_dict({"name": "x", "transforms": [transform]})
    with pytest.raises(ConfigError, match=expected):
        transform_from_dict(transform)


def test_every_problem_is_reported_at_once():
    data = {"name": "x", "transforms": [{"kind": "rotation", "degrees": 200}, {"kind": "blur", "sigmas": 1}]}
    with pytest.raises(ConfigError) as error:
        Composition.from_dict(data)
    assert "transforms[0] (rotation).degrees" in str(error.value)
    assert "transforms[1] (blur).sigmas" in str(error.value)


def test_bad_yaml_and_bad_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        Composition.from_yaml("name: [", source="broken.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        Composition.from_yaml("- kind: rotation")
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntransforms:\n- kind: center_crop\n  fraction: 2\n")
    with pytest.raises(ConfigError, match=r"(?s)composition file .*bad.yaml.*fraction"):
        load_composition(path)


def test_specs_are_immutable_and_hashable():
    spec = CenterCrop(fraction=0.5)
    with pytest.raises(ValidationError, match="frozen"):
        spec.fraction = 0.7
    assert hash(spec) == hash(CenterCrop(fraction=0.5))


def test_reading_compositions_does_not_import_torch():
    """Configuration and the CLI's --help read compositions; torch loads only when a view is made."""
    code = "import sys, phenossl.augment as a; a.load_composition('context'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
