"""The method and dataset registries under their historical path, for users' code.

The registries live with what they register: `irbench.methods.registry` (METHODS,
create_method) and `irbench.datasets.registry` (DATASETS, load_dataset); the generic
`Registry` is `irbench.core.registry`. Code inside irbench imports from those homes.
"""

from __future__ import annotations

from irbench.core.registry import Broken, Entry, Registry, describe, plugins_disabled
from irbench.datasets.registry import (
    DATASETS,
    DATASETS_GROUP,
    default_data_root,
    list_datasets,
    load_dataset,
    register_dataset,
    split_dataset_name,
)
from irbench.methods.registry import (
    METHODS,
    METHODS_GROUP,
    create_method,
    list_methods,
    register_method,
)

__all__ = [
    "DATASETS", "DATASETS_GROUP", "METHODS", "METHODS_GROUP", "Broken", "Entry", "Registry",
    "create_method", "default_data_root", "describe", "list_datasets", "list_methods",
    "load_dataset", "plugins_disabled", "register_dataset", "register_method",
    "split_dataset_name",
]
