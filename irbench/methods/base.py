"""The Method contract, the run context methods receive, and the global-descriptor helper.

A method is one module: one class with `name`, a one-line `description`, a frozen
`Config` dataclass (the paper's values as defaults, a help text per field, see
`irbench.core.config.param`), and `fit` / `index` / `query`. It registers through
the `irbench.methods` entry-point group, built-ins and plugins alike.

Cache keys are derived, never typed: a method declares its cached `stages` (which
stages each comes after, whether it draws random numbers), each config field declares
the stage it feeds (`param(..., stage=...)`), and `Method.cached` keys an artifact by
the fields of its stage and of every stage before it, the ids of the upstream
artifacts and the content identity of the images it consumed (`RunContext.identify`),
the seed when a stage before it is seeded, and the versions of the libraries that
compute numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irbench.core.cache import Artifact, Cache, default_cache_dir
from irbench.core.config import ANY_STAGE, NoConfig, check_fields, config_to_dict, field_stage
from irbench.core.executor import LOCAL, Executor
from irbench.core.parallel import default_workers
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.core.registry import DISTRIBUTION
from irbench.datasets.base import Image, Query, split_segments
from irbench.datasets.signature import ImageSigner

log = logging.getLogger(__name__)


QUERY_STAGE = "query"
"""The stage of config fields used only when ranking (they enter no artifact key, only
the key of the run's rankings, which covers the whole config)."""
NO_STAGE = "none"
"""The stage of config fields that do not change results (batch size, memory layout)."""


@dataclass(frozen=True)
class Stage:
    """A cached stage of a method (see `Method.stages`)."""

    after: tuple[str, ...] = ()
    """Stages whose config fields this one depends on too (directly or through an
    upstream artifact it consumes)."""
    seeded: bool = False
    """It draws random numbers: the run's seed is part of its key (and of every stage
    after it)."""
    shared: bool = False
    """Its artifacts are shared by every method with the same fields and inputs (the
    kind is the stage's name, not `<method>/<stage>`)."""


_LIBRARIES = ("numpy", "scipy", "faiss-cpu", "faiss-gpu-cu12", "torch", "torchvision",
              "scikit-learn", "opencv-contrib-python-headless", "opencv-contrib-python",
              "opencv-python-headless", "opencv-python", "efficientnet-lite-pytorch")


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of irbench and of the installed libraries that compute numbers; part of
    every artifact key, so an upgrade never serves artifacts the new code would not make."""
    out = {}
    for name, dist in (("irbench", DISTRIBUTION), *((n, n) for n in _LIBRARIES)):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class RunContext:
    """What the harness gives a method: cache, seed, workers, device, search backend,
    progress, and the executor its per-image stages run on.

    A context pickled into another process (an executor's task: a stage's compute
    function closes over it) arrives as a worker context: one worker process (the
    executor is the parallelism), the local executor, no progress bar (the driver counts
    finished shards), no dataset loading and an empty signature memo.
    """

    cache: Cache = field(default_factory=lambda: Cache(default_cache_dir()))
    seed: int = 0
    workers: int = field(default_factory=default_workers)
    device: str = "cpu"
    search: str = "exact"
    progress: Progress = NULL_PROGRESS
    dataset_id: str = ""
    """Name and version of the dataset being run, for messages (artifact keys name the
    content of the images instead: `identify`)."""
    dataset_name: str = ""
    """The name of the dataset being run (`Dataset.name`: `demo`, `folder:photos`); ""
    outside the runner."""
    signer: ImageSigner = field(default_factory=ImageSigner)
    """Content signatures of image files (memoized in the cache by the runner)."""
    independent_set: str = ""
    """The dataset's customary independent set for unsupervised training (`Dataset.
    independent_set`: Paris for Oxford); "" when it has none."""
    load_dataset: Callable[[str], Any] | None = None
    """Loads another registered dataset by name with the run's data root (for methods
    that train on an independent set); None outside the runner."""
    executor: Executor = LOCAL
    """Where the shards of per-image stages run (`Method.cached_map`): here, or as Ray
    tasks (`irbench.core.executor`)."""

    def __getstate__(self) -> dict[str, Any]:
        """The worker context a task receives (class docstring)."""
        return {**self.__dict__, "workers": 1, "executor": LOCAL, "progress": NULL_PROGRESS,
                "load_dataset": None, "signer": ImageSigner()}

    @classmethod
    def in_memory(cls, **kwargs: Any) -> RunContext:
        """A context whose cache keeps nothing on disk (for notebooks and tests)."""
        return cls(cache=Cache(Path("."), enabled=False), **kwargs)

    def identify(self, images: Sequence[Image | Query]) -> str:
        """Content identity of an image list: ids, paths, boxes, crop flags, labels and
        the signature of every file (`ImageSigner.identify`)."""
        return self.signer.identify(images)


class Method:
    """Base class of retrieval methods.

    Subclasses set `name`, `description`, `Config`, `stages`, and implement `index` and
    `query` (and `fit` when they learn something from the train split). Stage artifacts
    go through `self.cached(...)` / `self.cached_map(...)`, whose keys are derived from
    the stage declarations (module docstring), so a sweep's points share whatever stages
    they share and no key can forget what its artifact depends on.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    stages: ClassVar[Mapping[str, Stage]] = {}
    """The method's cached stages by name; config fields name one of them (or
    `QUERY_STAGE` / `NO_STAGE`) in `param(..., stage=...)`."""
    contract_overrides: ClassVar[dict[str, Any]] = {}
    """Config overrides for the registry-driven contract test (e.g. a small backbone);
    empty: the defaults are tested."""

    def __init__(self, config: Any = None, context: RunContext | None = None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name}: config must be a {self.Config.__qualname__}, got "
                            f"{type(self.config).__qualname__}")
        check_fields(self.config, owner=f"method {self.name!r}")
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

    def drop_descriptors(self, image_lists: Sequence[Sequence[Any]]) -> int:
        """Delete the cached local descriptors of these image lists (and of any other
        list this run extracted) that the run's cached results no longer need
        (`RunOptions.drop_descriptors`); returns the bytes freed. None by default: the
        SIFT methods drop their 128-byte descriptors and keep the geometry."""
        return 0

    def untrained(self) -> bool:
        """Whether the run uses random weights where trained ones belong (its record is
        marked `untrained`); False unless a method with weights says so."""
        return False

    # -- cache keys ----------------------------------------------------------------------

    @classmethod
    def upstream(cls, stage: str) -> tuple[str, ...]:
        """`stage` and every stage it comes after, transitively (declaration order)."""
        if stage not in cls.stages:
            known = ", ".join(cls.stages) or "(none)"
            raise RuntimeError(f"method {cls.name!r} declares no stage {stage!r} "
                               f"(its stages: {known})")
        seen: list[str] = []
        todo = [stage]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.append(s)
                todo.extend(cls.stages[s].after)
        return tuple(s for s in cls.stages if s in seen)

    def stage_fields(self, stage: str) -> dict[str, Any]:
        """The config fields (JSON-able values) that stage `stage` depends on: those
        declaring it or a stage before it, and those declaring no stage at all."""
        chain = set(self.upstream(stage))
        values = config_to_dict(self.config)
        return {f.name: values[f.name] for f in dataclasses.fields(self.config)
                if field_stage(f) == ANY_STAGE or field_stage(f) in chain}

    def stage_key(self, stage: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """(artifact kind, key) of `stage` computed from `inputs` (upstream artifact ids,
        image-list identities, anything else its computation consumes)."""
        chain = self.upstream(stage)
        shared = self.stages[stage].shared
        key = {
            "stage": stage,
            "fields": self.stage_fields(stage),
            "inputs": dict(inputs),
            "libraries": library_versions(),
        }
        if not shared:
            key["method"] = self.name
        if any(self.stages[s].seeded for s in chain):
            key["seed"] = self.context.seed
        return (stage if shared else f"{self.name}/{stage}"), key

    def cached(self, stage: str, compute: Callable[[], Mapping[str, Any]], *,
               inputs: Mapping[str, Any]) -> Artifact:
        """The artifact of `stage` for `inputs`, from the cache or computed and stored
        (`stage_key` names it; its `.id` goes into the inputs of later stages)."""
        kind, key = self.stage_key(stage, inputs)
        return self.context.cache.load_or_compute(kind, key, compute)

    def cached_files(self, stage: str, write: Callable[[Path | None], Mapping[str, Any]], *,
                     inputs: Mapping[str, Any]) -> Artifact:
        """Like `cached`, for a stage whose arrays are too large to hold in memory:
        `write(folder)` creates them as `.npy` files in `folder` (None when the cache
        keeps nothing on disk: then in memory) and returns the artifact's values; the
        result is memory-mapped from the cache (`Cache.load_or_write`)."""
        kind, key = self.stage_key(stage, inputs)
        return self.context.cache.load_or_write(kind, key, write)

    def cached_map(self, stage: str, items: Sequence[Any], compute_chunk, *,
                   inputs: Mapping[str, Any], shard_size: int = 512,
                   description: str = "") -> Artifact:
        """Like `cached`, for a per-item computation stored in shards: an interrupted
        extraction resumes from the last finished shard (`Cache.map_cached`). `inputs`
        must include the items' identity (`self.context.identify(items)`). The shards run
        on the context's executor: `compute_chunk` (and what it closes over, the method
        included) is pickled for an executor that runs them elsewhere."""
        kind, key = self.stage_key(stage, inputs)
        return self.context.cache.map_cached(kind, key, items, compute_chunk,
                                             shard_size=shard_size,
                                             progress=self.context.progress,
                                             description=description or f"{self.name}: {stage}",
                                             executor=self.context.executor)


class GlobalDescriptorMethod(Method):
    """A method that describes each image by one vector: implement `encode` only.

    Features are cached per image list (stage `features`: its key holds the config
    fields declaring it, the images' content identity and `feature_inputs()`), the
    database is searched with the context's search backend (cosine on L2-normalized
    vectors by default), and queries are encoded with their `crop_box`.
    """

    stages: ClassVar[Mapping[str, Stage]] = {"features": Stage()}
    normalize: ClassVar[bool] = True
    """L2-normalize features before search (cosine similarity)."""

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        """float32[n, d] descriptors; for a Query, describe `query.crop_box` when not None."""
        raise NotImplementedError

    def feature_inputs(self) -> dict[str, Any]:
        """Ids of the upstream artifacts `encode` uses (a fine-tuned network): part of
        the features' key. None by default."""
        return {}

    def features(self, role: str, images: Sequence[Image | Query]) -> np.ndarray:
        """Encoded (and cached) features of `images`; a shared segment of the list (a
        distractor set) is cached on its own, once for every base dataset."""
        parts = []
        for segment, start, stop in split_segments(images):
            part = tuple(images[start:stop])
            art = self.cached_map("features", part, self._encode_rows,
                                  inputs={"images": self.context.identify(part),
                                          **self.feature_inputs()},
                                  description=f"{self.name}: {role} features"
                                  + ("" if segment is None else f" ({segment.name})"))
            feats_part = art.get("features")
            if feats_part is None:  # an empty list
                feats_part = np.zeros((0, 0), np.float32)
            parts.append(np.asarray(feats_part, np.float32))
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if self.normalize:
            from irbench.core.search import l2_normalize

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
        from irbench.core.search import search

        q = self.features("queries", queries)
        return search(self._database, q, k, backend=self.context.search)

    def index_bytes(self) -> int | None:
        db = getattr(self, "_database", None)
        return None if db is None else int(db.nbytes)


# -- the code identity of a method ------------------------------------------------------------


def _imported_modules(module: str, within: str) -> list[str]:
    """`module` and every module it imports, transitively, whose name starts with
    `within` (read from the source with `ast`, nothing is imported)."""
    import ast
    import importlib.util

    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin).read_text("utf-8")
        seen[name] = source
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 \
                        else package
                    base = f"{parent}.{base}" if base else parent
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target.startswith(within) and target not in seen:
                    try:
                        if importlib.util.find_spec(target) is not None:
                            todo.append(target)
                    except (ImportError, ValueError):
                        continue
    return sorted(seen)


@functools.cache
def code_identity(cls: type) -> str:
    """SHA-256 of the source of a method's module and of every module of its package
    family it imports (for irbench's methods: `irbench.methods.*`; for a plugin: its
    top-level package). A run record keeps it; a record whose method's code has changed
    since is marked stale, and cached rankings are not reused across a change."""
    import hashlib
    import importlib.util

    module = cls.__module__
    top = module.split(".")[0]
    within = "irbench.methods" if top == "irbench" else top
    h = hashlib.sha256()
    for name in _imported_modules(module, within):
        spec = importlib.util.find_spec(name)
        h.update(name.encode() + b"\n")
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()
