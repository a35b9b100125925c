"""irbench: a benchmark harness for instance-level image retrieval.

The public API: everything a notebook or a plugin needs is importable from here, e.g.

    import irbench
    record = irbench.run("bow", "demo", irbench.RunOptions(), {"vocabulary_size": 512})
    records, problems = irbench.read_records("results")

Names resolve lazily (PEP 562), so `import irbench` stays cheap and a SIFT run never
imports torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("irbench-harness")  # the distribution (core.registry.DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_API = {
    # running
    "run": "irbench.harness.runner",
    "sweep": "irbench.harness.runner",
    "RunOptions": "irbench.harness.runner",
    "create_method": "irbench.methods.registry",
    "load_dataset": "irbench.datasets.registry",
    "list_methods": "irbench.methods.registry",
    "list_datasets": "irbench.datasets.registry",
    "register_method": "irbench.methods.registry",
    "register_dataset": "irbench.datasets.registry",
    # writing a method or a dataset
    "Method": "irbench.methods.base",
    "GlobalDescriptorMethod": "irbench.methods.base",
    "param": "irbench.core.config",
    "Image": "irbench.datasets.base",
    "Query": "irbench.datasets.base",
    "Dataset": "irbench.datasets.base",
    "DatasetProvider": "irbench.datasets.base",
    "read_image": "irbench.datasets.images",
    # results
    "RunRecord": "irbench.results.store",
    "read_records": "irbench.results.store",
    "Metrics": "irbench.results.store",
    "SettingMetrics": "irbench.results.store",
    "compare_records": "irbench.results.compare",
    "bootstrap_interval": "irbench.results.stats",
    "paired_test": "irbench.results.stats",
    "IrbenchError": "irbench.errors",
    "ConfigError": "irbench.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'irbench' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
