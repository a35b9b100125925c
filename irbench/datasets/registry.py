"""The dataset registry, filled from the `irbench.datasets` entry-point group, and
`load_dataset`, which builds a registered dataset from its name and options."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from irbench.core.cache import default_cache_dir
from irbench.core.config import build_config
from irbench.core.progress import Progress
from irbench.core.registry import Registry
from irbench.datasets.base import DatasetProvider
from irbench.errors import DatasetError, IrbenchError

T = TypeVar("T")

DATASETS_GROUP = "irbench.datasets"


def _validate_dataset(obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, DatasetProvider)):
        raise TypeError(f"{obj!r} is not a subclass of irbench.datasets.base.DatasetProvider")


DATASETS: Registry[Any] = Registry("dataset", DATASETS_GROUP, _validate_dataset)


def register_dataset(cls: T) -> T:
    """Decorator for notebooks and tests: register a DatasetProvider under `cls.name`."""
    DATASETS.register(cls.name, cls, source="runtime")
    return cls


def list_datasets() -> list[str]:
    """The names of the registered datasets (built-in and plugins), sorted."""
    return DATASETS.names()


def default_data_root(cache_dir: Path | None = None) -> Path:
    """`IRBENCH_DATA`, else `<cache dir>/data`."""
    env = os.environ.get("IRBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return (cache_dir or default_cache_dir()) / "data"


def split_dataset_name(spec: str) -> tuple[str, str | None]:
    """`folder:PATH` -> ("folder", "PATH"); `oxford5k` -> ("oxford5k", None)."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def load_dataset(spec: str, *, data_root: str | Path | None = None,
                 cache_dir: str | Path | None = None,
                 options: Mapping[str, Any] | None = None, progress: Progress | None = None):
    """Load a dataset by registered name (with `NAME:ARGUMENT` for those that take one);
    `progress` draws the bars of long loads (generating `demo`)."""
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
    if progress is not None:
        provider.progress = progress
    try:
        return provider.load()
    except IrbenchError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"dataset {spec!r} could not be loaded: {exc}") from exc
