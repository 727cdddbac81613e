"""The method registry is the one place a method is named: the configuration, napari, the CLI help and the
trainer read it, and a new method is one module plus one registry line."""

import pytest

from phenossl.config import TrainConfig, config_from_dict
from phenossl.errors import ConfigError
from phenossl.methods.params import MethodParams
from phenossl.methods.registry import MethodSpec, method_names, method_spec, register_method
from phenossl.models.registry import encoder_names


def test_every_builtin_method_has_its_parameter_section_and_its_builder():
    params = MethodParams()
    for name in method_names():
        spec = method_spec(name)
        assert getattr(params, spec.section) is params.for_method(name)
        built = spec.branch_class() if spec.branch else spec.model_builder()
        assert callable(built)


def test_the_configuration_accepts_exactly_the_registered_names():
    for name in method_names():
        assert TrainConfig(method=name).method == name
    for name in encoder_names():
        assert TrainConfig(encoder=name).encoder == name
    with pytest.raises(ConfigError, match="unknown training method 'dino': choose one of mocov2"):
        config_from_dict({"method": "dino"}, TrainConfig)
    with pytest.raises(ConfigError, match="unknown encoder 'vit': choose one of resnet18, vgg13"):
        config_from_dict({"encoder": "vit"}, TrainConfig)


def test_cli_help_lists_every_method_and_encoder(capsys):
    from phenossl.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    for name in (*method_names(), *encoder_names()):
        assert name in shown


def test_a_spec_needs_exactly_one_builder():
    with pytest.raises(ConfigError, match="exactly one of branch= or model="):
        MethodSpec("half", "no builder", "half")
    with pytest.raises(ConfigError, match="already registered"):
        register_method(MethodSpec("simclr", "again", "simclr", branch="phenossl.methods.simclr:SimCLRBranch"))
