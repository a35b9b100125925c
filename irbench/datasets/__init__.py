"""Datasets: images, queries, ground truth, train split and protocol, loaded by registered name."""

from irbench.datasets.base import Dataset, Image, Protocol, Query, QueryTruth
from irbench.datasets.registry import load_dataset

__all__ = ["Dataset", "Image", "Protocol", "Query", "QueryTruth", "load"]


def load(name: str, root: str | None = None, **options: object) -> Dataset:
    """Load a registered dataset by name (`demo`, `folder:PATH`, `manifest:FILE`, ...).

    `root` is the data root (default: `IRBENCH_DATA` or the cache's `data` folder);
    `options` set fields of the dataset's Config.
    """
    return load_dataset(name, data_root=root, options=options)
