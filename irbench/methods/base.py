"""The Method contract, the run context methods receive, and the global-descriptor helper.

A method is one module: one class with `name`, a one-line `description`, a frozen
`Config` dataclass (the paper's values as defaults, a help text per field, see
`irbench.harness.config.param`), and `fit` / `index` / `query`. It registers through
the `irbench.methods` entry-point group, built-ins and plugins alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irbench.datasets.base import Image, Query, image_list_digest, split_segments
from irbench.harness.cache import Cache, default_cache_dir
from irbench.harness.config import config_hash
from irbench.harness.parallel import default_workers
from irbench.harness.progress import NULL_PROGRESS, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoConfig:
    """This method has no options."""


@dataclass
class RunContext:
    """What the harness gives a method: cache, seed, workers, device, search backend, progress."""

    cache: Cache = field(default_factory=lambda: Cache(default_cache_dir()))
    seed: int = 0
    workers: int = field(default_factory=default_workers)
    device: str = "cpu"
    search: str = "exact"
    progress: Progress = NULL_PROGRESS
    dataset_id: str = ""
    """Name and version of the dataset being run; part of every artifact key."""
    independent_set: str = ""
    """The dataset's customary independent set for unsupervised training (`Dataset.
    independent_set`: Paris for Oxford); "" when it has none."""
    load_dataset: Callable[[str], Any] | None = None
    """Loads another registered dataset by name with the run's data root (for methods
    that train on an independent set); None outside the runner."""

    @classmethod
    def in_memory(cls, **kwargs: Any) -> RunContext:
        """A context whose cache keeps nothing on disk (for notebooks and tests)."""
        return cls(cache=Cache(Path("."), enabled=False), **kwargs)


class Method:
    """Base class of retrieval methods.

    Subclasses set `name`, `description`, `Config`, and implement `index` and `query`
    (and `fit` when they learn something from the train split). Stage artifacts go
    through `self.cached(...)`, keyed by the config fields they depend on, so a sweep's
    points share whatever stages they share.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    contract_overrides: ClassVar[dict[str, Any]] = {}
    """Config overrides for the registry-driven contract test (e.g. a small backbone);
    empty: the defaults are tested."""

    def __init__(self, config: Any = None, context: RunContext | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.context = context if context is not None else RunContext.in_memory()
        self._info: dict[str, Any] = {}

    # -- the contract ------------------------------------------------------------------

    def fit(self, train: Sequence[Image]) -> None:
        """Learn from the train split (may do nothing). `train` may be empty."""

    def index(self, database: Sequence[Image]) -> None:
        raise NotImplementedError

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rank the database for each query: (ranks int64[nq, k], scores float32[nq, k]),
        best first; ties broken by the lower database index."""
        raise NotImplementedError

    # -- facts for the run record ------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Facts the run record keeps besides the config (vocabulary size, trained on, ...)."""
        return dict(self._info)

    def index_bytes(self) -> int | None:
        """Size of the searchable index in bytes, when the method knows it."""
        return None

    # -- helpers -----------------------------------------------------------------------

    def cached(self, stage: str, key: dict[str, Any], compute, *,
               fields: Iterable[str] | None = None, dataset: str | None = None
               ) -> dict[str, Any]:
        """`context.cache.load_or_compute` with a key made of the method's name, the hash
        of `fields` of its config (all fields when None), the dataset id (or `dataset`,
        the name of a shared segment), and `key`."""
        full_key = {
            "method": self.name,
            "config": config_hash(self.config, fields),
            "dataset": self.context.dataset_id if dataset is None else dataset,
            "seed": self.context.seed,
            **key,
        }
        return self.context.cache.load_or_compute(f"{self.name}/{stage}", full_key, compute)

    def cached_map(self, stage: str, key: dict[str, Any], items: Sequence[Any],
                   compute_chunk, *, fields: Iterable[str] | None = None,
                   dataset: str | None = None, shard_size: int = 512,
                   description: str = "") -> dict[str, Any]:
        """Like `cached`, for a per-item computation stored in shards: an interrupted
        extraction resumes from the last finished shard (`Cache.map_cached`)."""
        full_key = {
            "method": self.name,
            "config": config_hash(self.config, fields),
            "dataset": self.context.dataset_id if dataset is None else dataset,
            "seed": self.context.seed,
            **key,
        }
        return self.context.cache.map_cached(f"{self.name}/{stage}", full_key, items,
                                             compute_chunk, shard_size=shard_size,
                                             progress=self.context.progress,
                                             description=description or f"{self.name}: {stage}")

    def images_key(self, images: Sequence[Image | Query]) -> dict[str, Any]:
        """Cache-key part naming a list of images (ids, boxes, crop flags)."""
        return {"images": image_list_digest(images), "count": len(images)}


class GlobalDescriptorMethod(Method):
    """A method that describes each image by one vector: implement `encode` only.

    Features are cached per image list (keyed by `feature_fields` of the config), the
    database is searched with the context's search backend (cosine on L2-normalized
    vectors by default), and queries are encoded with their `crop_box`.
    """

    feature_fields: ClassVar[tuple[str, ...] | None] = None
    """Config fields the features depend on (None: all of them)."""
    normalize: ClassVar[bool] = True
    """L2-normalize features before search (cosine similarity)."""

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        """float32[n, d] descriptors; for a Query, describe `query.crop_box` when not None."""
        raise NotImplementedError

    def features(self, role: str, images: Sequence[Image | Query]) -> np.ndarray:
        """Encoded (and cached) features of `images`; a shared segment of the list (a
        distractor set) is cached under its own name, once for every base dataset."""
        parts = []
        for segment, start, stop in split_segments(images):
            part = tuple(images[start:stop])
            stage = f"features-{role}" if segment is None else "features-shared"
            art = self.cached_map(stage, self.images_key(part), part, self._encode_rows,
                                  fields=self.feature_fields,
                                  dataset=None if segment is None else segment.name,
                                  description=f"{self.name}: {role} features"
                                  + ("" if segment is None else f" ({segment.name})"))
            feats_part = art.get("features")
            if feats_part is None:  # an empty list
                feats_part = np.zeros((0, 0), np.float32)
            parts.append(np.asarray(feats_part, np.float32))
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if self.normalize:
            from irbench.harness.search import l2_normalize

            feats = l2_normalize(feats)
        return feats

    def _encode_rows(self, chunk: Sequence[Image | Query]) -> list[dict[str, np.ndarray]]:
        feats = np.ascontiguousarray(self.encode(chunk), dtype=np.float32)
        if feats.shape[0] != len(chunk):
            raise RuntimeError(f"{self.name}.encode returned {feats.shape[0]} rows for "
                               f"{len(chunk)} images")
        return [{"features": row[None]} for row in feats]

    def index(self, database: Sequence[Image]) -> None:
        self._database = self.features("database", database)

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        from irbench.harness.search import search

        q = self.features("queries", queries)
        return search(self._database, q, k, backend=self.context.search)

    def index_bytes(self) -> int | None:
        db = getattr(self, "_database", None)
        return None if db is None else int(db.nbytes)
