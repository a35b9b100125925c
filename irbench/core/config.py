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
    "ANY_STAGE",
    "field_stage",
    "check_fields",
    "describe_fields",
    "build_config",
    "parse_value",
    "config_to_dict",
    "config_hash",
    "stable_hash",
    "changed_fields",
]


ANY_STAGE = "*"
"""The stage of a field that declares none: it is taken to feed every stage (safe)."""


def param(default: Any, help: str, *, choices: tuple[Any, ...] | None = None,
          minimum: float | None = None, maximum: float | None = None,
          stage: str = ANY_STAGE) -> Any:
    """A config field with a default and a one-line help text (shown by `bench methods`).

    `choices` restricts the values; `minimum` / `maximum` bound a number (inclusive; for
    a tuple, each element). `stage` names the one cached stage of the method the field
    feeds first (the method's `stages` say which stages come after it, and their cache
    keys include it too); `"query"` is a field used only when ranking, `"none"` one that
    does not change results (batch size, memory layout). A field without a stage feeds
    every stage: never wrong, only less shared.
    """
    metadata: dict[str, Any] = {"help": help, "stage": stage}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if minimum is not None:
        metadata["minimum"] = minimum
    if maximum is not None:
        metadata["maximum"] = maximum
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def field_stage(f: dataclasses.Field) -> str:
    """The stage a config field declares (`ANY_STAGE` when it declares none)."""
    return f.metadata.get("stage", ANY_STAGE)


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
                **{k: f.metadata[k] for k in ("minimum", "maximum") if k in f.metadata},
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
        values[name] = parse_value(hints[name], raw, field_name=name) if isinstance(raw, str) \
            else raw
    try:
        config = cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"invalid config{' of ' + owner if owner else ''}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{' of ' + owner if owner else ''}: {exc}") from None
    check_fields(config, owner=owner)
    return config


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """The Config of a method or dataset that has no fields."""


def _type_ok(tp: Any, value: Any) -> bool:
    """Whether `value` has type `tp` (bool is not an int, an int is a float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        inner = args[0] if args else Any
        return isinstance(value, tuple) and all(_type_ok(inner, v) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def check_fields(config: Any, *, owner: str = "") -> None:
    """Check every field of a config instance against its declared type, `choices`,
    `minimum` and `maximum`; raise ConfigError naming the field and the allowed values."""
    hints = _hints(type(config))
    where = f" of {owner}" if owner else ""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp = hints.get(f.name, Any)
        if not _type_ok(tp, value):
            raise ConfigError(f"{f.name}{where}: {value!r} is not a {_type_name(tp)}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{f.name}{where}: {value!r} is not one of "
                              f"{', '.join(map(str, choices))}")
        low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
        for v in (value if isinstance(value, tuple) else (value,)):
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if v != v:  # NaN
                raise ConfigError(f"{f.name}{where}: NaN is not a valid value")
            if low is not None and v < low:
                raise ConfigError(f"{f.name}{where}: {v!r} is below its minimum {low!r}")
            if high is not None and v > high:
                raise ConfigError(f"{f.name}{where}: {v!r} is above its maximum {high!r}")


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
