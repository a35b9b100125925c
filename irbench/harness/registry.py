"""Method and dataset registries, filled from the `irbench.methods` / `irbench.datasets`
entry-point groups (built-ins are declared there too, so the plugin path is always used).

A duplicate name raises; an unknown name raises with the closest matches; a plugin that
fails to import is kept as *broken* with its error, and everything else keeps working.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

from irbench.errors import DatasetError, DuplicateNameError, IrbenchError, UnknownNameError
from irbench.harness.config import build_config, describe_fields

log = logging.getLogger(__name__)

T = TypeVar("T")

METHODS_GROUP = "irbench.methods"
DATASETS_GROUP = "irbench.datasets"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and where it came from (`irbench` or a plugin distribution)."""

    name: str
    obj: T
    source: str


@dataclass(frozen=True)
class Broken:
    """A plugin that could not be loaded, with the error it raised."""

    name: str
    target: str
    source: str
    error: str


class Registry(Generic[T]):
    """Objects by unique name, loaded lazily from one entry-point group."""

    def __init__(self, kind: str, group: str | None,
                 validate: Callable[[Any], None] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._validate = validate
        self._entries: dict[str, Entry[T]] = {}
        self._broken: dict[str, Broken] = {}
        self._imported: set[tuple[str, str, str]] = set()
        self._loaded = group is None

    def register(self, name: str, obj: T, source: str = "irbench") -> T:
        """Register `obj` under `name`; a name already taken raises DuplicateNameError."""
        if self._validate is not None:
            self._validate(obj)
        if name in self._entries:
            other = self._entries[name].source
            raise DuplicateNameError(
                f"{self.kind} name {name!r} is registered twice (by {other} and by {source})"
            )
        self._entries[name] = Entry(name, obj, source)
        return obj

    def load_entry_points(self) -> None:
        """Import every entry point of the group once; failures are recorded as broken."""
        if self._loaded:
            return
        self._loaded = True
        for ep in sorted(_entry_points(self.group), key=lambda e: (_dist_name(e) != "irbench",
                                                                  e.name)):
            self._load(ep)

    def _load(self, ep: metadata.EntryPoint) -> None:
        """Import one entry point (once) and register it, or record it as broken."""
        source = _dist_name(ep)
        ident = (ep.name, ep.value, source)
        if ident in self._imported:
            return
        self._imported.add(ident)
        try:
            obj = ep.load()
            self.register(ep.name, obj, source=source)
        except Exception as exc:  # a broken plugin must not break the harness
            self._broken[ep.name if ep.name not in self._broken else f"{ep.name}@{source}"] = (
                Broken(ep.name, ep.value, source, f"{type(exc).__name__}: {exc}"))
            log.warning("%s plugin %r from %s is broken: %s", self.kind, ep.name, source, exc)

    def get(self, name: str) -> T:
        """The object registered as `name`. Only the entry points of that name are
        imported (a SIFT run imports no CNN module, hence no torch); an unknown name
        imports them all, to list the known ones."""
        if not self._loaded:
            for ep in sorted((e for e in _entry_points(self.group) if e.name == name),
                             key=lambda e: _dist_name(e) != "irbench"):
                self._load(ep)
        if name not in self._entries and name not in self._broken:
            self.load_entry_points()
        if name in self._entries:
            return self._entries[name].obj
        if name in self._broken:
            b = self._broken[name]
            raise UnknownNameError(f"{self.kind} {name!r} (from {b.source}) failed to load: "
                                   f"{b.error}")
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}. "
            f"List them with `bench {self.kind}s`."
        )

    def entries(self) -> list[Entry[T]]:
        self.load_entry_points()
        return [self._entries[k] for k in sorted(self._entries)]

    def broken(self) -> list[Broken]:
        self.load_entry_points()
        return [self._broken[k] for k in sorted(self._broken)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]


def plugins_disabled() -> bool:
    """`IRBENCH_DISABLE_PLUGINS=1` loads only irbench's own entry points (for tests, debugging)."""
    return os.environ.get("IRBENCH_DISABLE_PLUGINS", "").lower() in {"1", "true", "yes"}


def _entry_points(group: str | None) -> Iterable[metadata.EntryPoint]:
    if group is None:
        return []
    only_builtin = plugins_disabled()
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in metadata.entry_points(group=group):
        ident = (ep.name, ep.value, _dist_name(ep))
        if only_builtin and ident[2] != "irbench":
            continue
        if ident in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ident)
        out.append(ep)
    return out


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "unknown"


def _validate_method(obj: Any) -> None:
    from irbench.methods.base import Method

    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise TypeError(f"{obj!r} is not a subclass of irbench.methods.base.Method")


def _validate_dataset(obj: Any) -> None:
    from irbench.datasets.base import DatasetProvider

    if not (isinstance(obj, type) and issubclass(obj, DatasetProvider)):
        raise TypeError(f"{obj!r} is not a subclass of irbench.datasets.base.DatasetProvider")


METHODS: Registry[Any] = Registry("method", METHODS_GROUP, _validate_method)
DATASETS: Registry[Any] = Registry("dataset", DATASETS_GROUP, _validate_dataset)


def register_method(cls: T) -> T:
    """Decorator for notebooks and tests: register a Method subclass under `cls.name`."""
    METHODS.register(cls.name, cls, source="runtime")
    return cls


def register_dataset(cls: T) -> T:
    """Decorator for notebooks and tests: register a DatasetProvider under `cls.name`."""
    DATASETS.register(cls.name, cls, source="runtime")
    return cls


def list_methods() -> list[str]:
    """The names of the registered methods (built-in and plugins), sorted."""
    return METHODS.names()


def list_datasets() -> list[str]:
    """The names of the registered datasets (built-in and plugins), sorted."""
    return DATASETS.names()


def create_method(name: str, overrides: Mapping[str, Any] | None = None, context=None):
    """Instantiate a registered method with config overrides (strings are parsed)."""
    cls = METHODS.get(name)
    config = build_config(cls.Config, overrides, owner=f"method {name!r}")
    return cls(config, context)


def default_data_root(cache_dir: Path | None = None) -> Path:
    """`IRBENCH_DATA`, else `<cache dir>/data`."""
    env = os.environ.get("IRBENCH_DATA")
    if env:
        return Path(env).expanduser()
    from irbench.harness.cache import default_cache_dir

    return (cache_dir or default_cache_dir()) / "data"


def split_dataset_name(spec: str) -> tuple[str, str | None]:
    """`folder:PATH` -> ("folder", "PATH"); `oxford5k` -> ("oxford5k", None)."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def load_dataset(spec: str, *, data_root: str | Path | None = None,
                 cache_dir: str | Path | None = None,
                 options: Mapping[str, Any] | None = None):
    """Load a dataset by registered name (with `NAME:ARGUMENT` for those that take one)."""
    from irbench.harness.cache import default_cache_dir

    name, arg = split_dataset_name(spec)
    cls = DATASETS.get(name)
    if cls.takes_argument and not arg:
        raise DatasetError(f"dataset {name!r} needs an argument: --dataset {name}:PATH")
    if arg and not cls.takes_argument:
        raise DatasetError(f"dataset {name!r} takes no argument (got {spec!r})")
    config = build_config(cls.Config, options, owner=f"dataset {name!r}")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    root = Path(data_root).expanduser() if data_root else default_data_root(cache)
    provider = cls(config, data_root=root, cache_dir=cache, argument=arg)
    try:
        return provider.load()
    except IrbenchError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"dataset {spec!r} could not be loaded: {exc}") from exc


def describe(registry: Registry[Any]) -> dict[str, Any]:
    """Everything `bench methods` / `bench datasets` show, as JSON-able data."""
    items = []
    for e in registry.entries():
        items.append({
            "name": e.name,
            "description": getattr(e.obj, "description", ""),
            "source": e.source,
            "argument": bool(getattr(e.obj, "takes_argument", False)),
            **({"packages": list(e.obj.packages)} if getattr(e.obj, "packages", ()) else {}),
            "fields": describe_fields(e.obj.Config),
        })
    broken = [{"name": b.name, "target": b.target, "source": b.source, "error": b.error}
              for b in registry.broken()]
    return {registry.kind + "s": items, "broken": broken}
