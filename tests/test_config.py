from pathlib import Path

import pytest

from phenossl.config import RunConfig, TrainConfig, config_from_dict, load_config, save_config
from phenossl.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers_morphology_composition_with_mocov2():
    config = RunConfig()
    assert config.train.method == "mocov2"
    assert config.train.composition_a.name == "morphology"
    assert config.tiles.size == 196
    assert list(config.train.compositions()) == ["a"]  # weight 1: single-composition training


def test_dual_loss_weight_selects_branches():
    assert list(TrainConfig(weight_a=0.0).compositions()) == ["b"]
    assert list(TrainConfig(weight_a=0.25).compositions()) == ["a", "b"]
    assert TrainConfig(weight_a=0.25).branch_weights() == {"a": 0.25, "b": 0.75}


def test_round_trip_writes_every_default_and_compositions_inline(tmp_path):
    config = config_from_dict({"name": "x", "train": {"composition_b": "none", "weight_a": 0.5}})
    path = save_config(config, tmp_path / "config.yaml")
    text = path.read_text()
    assert "kind: center_crop" in text and "queue_size" in text  # full configuration, not just overrides
    again = load_config(path)
    assert again == config.model_copy(update={})
    assert again.train.composition_b.name == "none"


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train.epochz: unknown key \(did you mean 'epochs'\?\)"):
        load_config(path)


def test_values_out_of_range_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="train.weight_a"):
        config_from_dict({"train": {"weight_a": 1.5}})
    with pytest.raises(ConfigError, match="tiles.percentiles"):
        config_from_dict({"tiles": {"percentiles": [99, 1]}})
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict({"train": {"composition_a": "no-such-preset"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "c.yaml"
    path.parent.mkdir()
    path.write_text("input:\n  paths: [plate]\n  metadata: meta.csv\noutput:\n  dir: /abs/run\n")
    config = load_config(path)
    assert config.input.paths == [tmp_path / "sub" / "plate"]
    assert config.input.metadata == tmp_path / "sub" / "meta.csv"
    assert str(config.output.dir) == "/abs/run"


@pytest.mark.parametrize("example", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_configuration_is_valid_and_points_inside_the_checkout(example):
    config = load_config(example)
    assert config.run_dir().resolve().parent == (REPO_ROOT / "runs").resolve()
    for path in config.input.paths:  # the data itself may be absent (shared data), its place is not
        assert path.is_absolute() and (path.parent.exists() or "shared" in path.parts)
