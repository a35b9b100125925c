"""Registries: objects by unique name, filled lazily from an entry-point group.

Built-ins are declared as entry points too, so the plugin path is always used. A duplicate
name raises; an unknown name raises with the closest matches; a plugin that fails to import
is kept as *broken* with its error, and everything else keeps working.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from irbench.core.config import describe_fields
from irbench.errors import DuplicateNameError, UnknownNameError

log = logging.getLogger(__name__)

T = TypeVar("T")


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


DISTRIBUTION = "irbench-harness"
"""The name irbench is installed under (`irbench` on PyPI is another project); its entry
points are the built-in ones, whose `source` is shown as `irbench`."""
BUILTIN = "irbench"


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
    """The distribution of an entry point (`irbench` for irbench's own)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown"
    name = dist.metadata["Name"]
    return BUILTIN if name.lower().replace("_", "-") == DISTRIBUTION else name


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
