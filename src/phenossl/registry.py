"""Tables of named things (training methods, encoders) and the objects they name as ``"package.module:attribute"``
strings, imported when first needed, so that the configuration can read a table without importing torch."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from typing import Any, Generic, TypeVar

from phenossl.errors import ConfigError

Spec = TypeVar("Spec")


def load_object(path: str | None) -> Any:
    """The object named by ``"package.module:attribute"``."""
    if not path or ":" not in path:
        raise ConfigError(f"expected 'module:attribute', got {path!r}")
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


class Registry(Generic[Spec]):
    """Specs by their ``name``, in registration order (the order lists show); ``what`` names the kind in errors."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._specs: dict[str, Spec] = {}

    def register(self, spec: Spec, *, replace: bool = False) -> Spec:
        """Add ``spec`` (``replace`` to redefine a name)."""
        name = spec.name  # type: ignore[attr-defined]
        if name in self._specs and not replace:
            raise ConfigError(f"the {self.what} {name!r} is already registered")
        self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove ``name`` (plug-ins and tests)."""
        self._specs.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def get(self, name: str) -> Spec:
        """The spec called ``name``, or a clear error listing the choices."""
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.what} {name!r}: choose one of {', '.join(self._specs)}") from None

    def __iter__(self) -> Iterator[Spec]:
        return iter(self._specs.values())
