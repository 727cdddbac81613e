"""Objects named as ``"package.module:attribute"`` strings, imported when first needed: the registries
(methods, encoders) name their classes this way so that the configuration can read them without torch."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from phenossl.errors import ConfigError


def load_object(path: str | None) -> Any:
    """The object named by ``"package.module:attribute"``."""
    if not path or ":" not in path:
        raise ConfigError(f"expected 'module:attribute', got {path!r}")
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)
