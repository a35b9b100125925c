"""The method registry, filled from the `irbench.methods` entry-point group, and
`create_method`, which builds a registered method from its name and config overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from irbench.core.config import build_config
from irbench.core.registry import Registry
from irbench.methods.base import Method

T = TypeVar("T")

METHODS_GROUP = "irbench.methods"


def _validate_method(obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise TypeError(f"{obj!r} is not a subclass of irbench.methods.base.Method")


METHODS: Registry[Any] = Registry("method", METHODS_GROUP, _validate_method)


def register_method(cls: T) -> T:
    """Decorator for notebooks and tests: register a Method subclass under `cls.name`."""
    METHODS.register(cls.name, cls, source="runtime")
    return cls


def list_methods() -> list[str]:
    """The names of the registered methods (built-in and plugins), sorted."""
    return METHODS.names()


def create_method(name: str, overrides: Mapping[str, Any] | None = None, context=None):
    """Instantiate a registered method with config overrides (strings are parsed)."""
    cls = METHODS.get(name)
    config = build_config(cls.Config, overrides, owner=f"method {name!r}")
    return cls(config, context)
