"""Typed, documented config dataclasses: field help, `--set key=value` parsing, stable hashing."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from irbench.errors import ConfigError

__all__ = [
    "param",
    "describe_fields",
    "build_config",
    "parse_value",
    "config_to_dict",
    "config_hash",
    "stable_hash",
    "changed_fields",
]


def param(default: Any, help: str, *, choices: tuple[Any, ...] | None = None) -> Any:
    """A config field with a default and a one-line help text (shown by `bench methods`)."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        inner = _type_name(args[0]) if args else "any"
        return f"tuple[{inner}, ...]"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def describe_fields(cls: type) -> list[dict[str, Any]]:
    """Name, type, default, help and choices of each field of a config dataclass."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        tp = hints.get(f.name, Any)
        if choices is None and typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
        out.append(
            {
                "name": f.name,
                "type": _type_name(tp),
                "default": _jsonable(f.default),
                "help": f.metadata.get("help", ""),
                "choices": list(choices) if choices else None,
            }
        )
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(tp: Any, text: str, *, field_name: str = "value") -> Any:
    """Parse a command-line string into a value of type `tp` (bool, int, float, str,
    Optional, Literal, tuple[...]); raise ConfigError naming the field on failure."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in {"none", "null", ""}:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(arg, text, field_name=field_name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{field_name}: cannot parse {text!r} as {_type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text or (isinstance(choice, str) and choice == text.strip()):
                return choice
        raise ConfigError(
            f"{field_name}: {text!r} is not one of {', '.join(str(a) for a in args)}"
        )
    if origin is tuple:
        inner = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip() != ""]
        return tuple(parse_value(inner, p.strip(), field_name=field_name) for p in parts)
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{field_name}: {text!r} is not a boolean (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{field_name}: {text!r} is not an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{field_name}: {text!r} is not a number") from None
    if tp is str or tp is Any:
        return text
    raise ConfigError(f"{field_name}: fields of type {_type_name(tp)} cannot be set from text")


def build_config(cls: type, overrides: Mapping[str, Any] | None = None, *, owner: str = "") -> Any:
    """Instantiate config `cls` with overrides; string values are parsed to the field's type.

    An unknown key raises ConfigError listing the fields (with the closest match first).
    """
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        name = key.replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            listing = ", ".join(fields) if fields else "(none)"
            where = f" of {owner}" if owner else ""
            raise ConfigError(f"unknown config field {key!r}{where}.{hint} Fields: {listing}")
        value = parse_value(hints[name], raw, field_name=name) if isinstance(raw, str) else raw
        choices = fields[name].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{' for ' + owner if owner else ''}: {exc}") from None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is dataclasses.MISSING:
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict (tuples become lists)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def changed_fields(config: Any) -> dict[str, Any]:
    """The fields whose values differ from the defaults."""
    defaults = config_to_dict(type(config)())
    return {k: v for k, v in config_to_dict(config).items() if defaults.get(k) != v}


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of `obj` (dicts sorted, tuples as lists)."""
    payload = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def config_hash(config: Any, fields: typing.Iterable[str] | None = None) -> str:
    """Hash of a config (or of only `fields` of it), with the class name."""
    data = config_to_dict(config)
    if fields is not None:
        data = {k: data[k] for k in fields}
    return stable_hash({"config": type(config).__qualname__, "fields": data})
