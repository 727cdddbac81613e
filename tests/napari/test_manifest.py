"""The napari manifest lives in one place, inside the package, where the ``napari.manifest`` entry point
finds it (so a wheel ships it); its commands must name functions that exist."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources

from npe2 import PluginManifest


def packaged_manifest() -> PluginManifest:
    return PluginManifest.from_file(str(importlib.resources.files("phenossl").joinpath("napari.yaml")))


def test_entry_point_names_the_packaged_manifest():
    (entry,) = [e for e in importlib.metadata.entry_points(group="napari.manifest") if e.name == "phenossl"]
    assert entry.value == "phenossl:napari.yaml"
    assert importlib.resources.files("phenossl").joinpath("napari.yaml").is_file()


def test_every_manifest_command_points_at_an_existing_function():
    manifest = packaged_manifest()
    assert manifest.name == "phenossl"
    for command in manifest.contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), command.id
