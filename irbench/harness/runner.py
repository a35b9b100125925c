"""The protocol: run(method, dataset) -> RunRecord, through fit -> index -> query -> evaluate.

Before anything long starts, `run` checks what would otherwise fail late: the results
and cache folders are writable, the device exists, the dataset has queries and database
images, and every image file is there and readable (all bad files are listed at once,
while the dataset's content fingerprint is taken). Each stage is timed (wall and CPU
seconds, peak resident memory). The method caches its own stage artifacts (keys derived
from its stage declarations, see `irbench.methods.base`); the runner caches the final
rankings keyed by the whole config, the method's code, the dataset's fingerprint, the
search depth, the backend and the seed, so a rerun reuses everything and says so, and
`overwrite=True` recomputes. Sweeps check every point's config first, then run the
cartesian product of values, sharing every cached stage.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import logging
import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import irbench
from irbench.core.cache import Cache, default_cache_dir
from irbench.core.config import (
    build_config,
    changed_fields,
    config_hash,
    config_to_dict,
    describe_fields,
)
from irbench.core.executor import make_executor
from irbench.core.parallel import default_workers
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.core.search import SearchSpec
from irbench.datasets.base import Dataset
from irbench.datasets.registry import load_dataset
from irbench.datasets.signature import ImageSigner
from irbench.errors import ConfigError, DatasetError
from irbench.harness.evaluate import evaluate
from irbench.methods.base import Method, RunContext, code_identity, library_versions
from irbench.methods.registry import METHODS
from irbench.results.store import RunRecord, StageTiming, default_results_dir, write_record

log = logging.getLogger(__name__)

STAGES = ("fit", "index", "query", "evaluate")

RANKING_BLOCK_BYTES = 256 << 20
"""Memory a block of rankings may take (database index int64 + score float32 per entry):
at a depth of 1,001,001 (R1M) that is 22 queries per block."""

RANKINGS_LAYOUT = 2
"""What the rankings artifact holds (part of its key): 2 is ranks int64[nq, depth] and
scores float32[nq, depth] written in query blocks, plus `offsets` (one row per query)."""


def query_block_size(n_queries: int, depth: int, requested: int = 0) -> int:
    """Queries per block: `requested`, else as many as fit in `RANKING_BLOCK_BYTES`."""
    if requested:
        return requested
    return max(1, min(max(1, n_queries), RANKING_BLOCK_BYTES // max(1, 12 * depth)))


def kept_ranking(ranks: np.ndarray, scores: np.ndarray, keep: int) -> dict[str, Any]:
    """The first `keep` columns of a ranking for the record (scores to 7 significant
    digits, float32's precision); {} when `keep` is 0."""
    if keep == 0:
        return {}
    top = np.asarray(ranks)[:, :keep]
    top_scores = np.asarray(scores, np.float64)[:, :keep]
    return {"depth": int(top.shape[1]), "indices": top.astype(np.int64).tolist(),
            "scores": [[float(f"{v:.7g}") if np.isfinite(v) else None for v in row]
                       for row in top_scores]}


@dataclass
class RunOptions:
    """Everything about a run that is not the method's config or the dataset."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    results_dir: Path | None = field(default_factory=default_results_dir)
    """Where run records go; None writes none."""
    data_root: Path | None = None
    """Dataset root (default: IRBENCH_DATA or <cache_dir>/data)."""
    topk: int = 0
    """Ranking depth evaluated; 0 ranks the whole database (the official protocols)."""
    seed: int = 0
    workers: int = field(default_factory=default_workers)
    device: str = "cpu"
    search: str = "exact"
    search_options: Mapping[str, Any] = field(default_factory=dict)
    """Options of an approximate search backend (`irbench.core.search.SEARCH_OPTIONS`)."""
    overwrite: bool = False
    """Recompute every stage instead of reusing cached artifacts (each once: the runs
    made with these options share `fresh_artifacts`)."""
    use_cache: bool = True
    progress: Progress = NULL_PROGRESS
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    verify_images: bool = False
    """Hash every image file again instead of trusting the memoized signatures of files
    whose size, mtime, ctime and inode are unchanged (`irbench.datasets.signature`)."""
    fresh_artifacts: set[str] = field(default_factory=set, repr=False, compare=False)
    """Artifacts recomputed under `overwrite` by runs with these options, reused by the
    later ones (a sweep trains its detector once)."""
    keep_ranking: int = 100
    """How much of each query's ranking the record keeps (database indices and scores,
    best first); 0 keeps none. The metrics always use the whole evaluated depth."""
    query_block: int = 0
    """Queries ranked (and evaluated) together; 0 picks as many as fit in
    `RANKING_BLOCK_BYTES` at the run's depth (all of them, but for very large databases).
    The rankings are stored a block at a time and evaluated from the memory-mapped file,
    so a full-depth ranking of a million-image database is never in memory whole. The
    metrics do not depend on it; it is not part of any cache key."""
    executor: str = "local"
    """Where the per-image stages' shards run: 'local' (this process and its worker
    pool) or 'ray' (Ray tasks; `irbench.core.executor`). Results are the same."""
    ray_address: str | None = None
    """The Ray cluster of `executor='ray'` ('auto', HOST:PORT); None starts a local Ray."""
    drop_descriptors: bool = False
    """Once the run is done, delete the cached local descriptors of its image lists
    (`Method.drop_descriptors`: the SIFT methods' 128 bytes per feature, most of their
    cache) and keep what was computed from them. A later run that needs them again (a
    new vocabulary) extracts SIFT again; its results are the same."""

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir).expanduser()
        if self.results_dir is not None:
            self.results_dir = Path(self.results_dir).expanduser()
        SearchSpec(self.search, self.search_options)  # ConfigError naming what is wrong
        if self.topk < 0:
            raise ConfigError("topk must be >= 0 (0 ranks the whole database)")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.keep_ranking < 0:
            raise ConfigError("keep_ranking must be >= 0 (0 keeps no ranking)")
        if self.query_block < 0:
            raise ConfigError("query_block must be >= 0 (0 picks the block size)")
        make_executor(self.executor, self.ray_address)  # ConfigError naming the problem

    def signer(self) -> ImageSigner:
        """The image signer of runs with these options (memo in the cache when enabled)."""
        memo = self.cache_dir / "signatures.sqlite" if self.use_cache else None
        return ImageSigner(memo, verify=self.verify_images)


def check_writable(folder: Path, what: str, option: str) -> None:
    """Create `folder` if needed and check a file can be written in it; ConfigError
    naming the folder and the option otherwise."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {folder} is not writable ({exc.strerror or exc}); "
                          f"choose another with {option}") from None


def check_device(device: str) -> None:
    """ConfigError unless `device` names a torch device that exists on this machine
    (`cpu` always does: checked without importing torch, which SIFT runs never need)."""
    if device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a torch device (use cpu, cuda, "
                          f"cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA GPU is available here "
                              f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 .. cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: device type {dev.type!r} is not supported "
                          f"(use cpu, cuda or mps)")


def preflight(options: RunOptions) -> None:
    """The checks of `run` that need no dataset: folders writable, device available."""
    if options.results_dir is not None:
        check_writable(options.results_dir, "results folder", "--results-dir")
    if options.use_cache:
        check_writable(options.cache_dir, "cache folder", "--cache-dir")
    check_device(options.device)


def check_dataset(ds: Dataset) -> None:
    """DatasetError when a dataset cannot give a meaningful number (no queries, no
    database images)."""
    if not len(ds.queries):
        raise DatasetError(f"dataset {ds.label} has no queries: there is nothing to "
                           f"evaluate")
    if not len(ds.database):
        raise DatasetError(f"dataset {ds.label}: its database is empty")


class _PeakRss:
    """Samples this process's resident memory during a stage (Linux /proc; else ru_maxrss)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> _PeakRss:
        self.peak = self.current()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.current())


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(timings: dict[str, StageTiming], stage: str, fn: Callable[[], Any],
           cache: Cache, *, accumulate: bool = False) -> Any:
    """Run `fn` as `stage`, recording its times and peak memory in `timings`; with
    `accumulate`, added to what earlier calls recorded for `stage` (a stage run in
    blocks: times summed, peak memory the highest)."""
    wall0, cpu0, first = time.perf_counter(), _cpu_seconds(), len(cache.events)
    with _PeakRss() as rss:
        out = fn()
    wall = time.perf_counter() - wall0
    cost = cache.cost_since(first, wall)
    timing = StageTiming(wall_s=round(wall, 4), cpu_s=round(_cpu_seconds() - cpu0, 4),
                         peak_rss_bytes=int(rss.peak),
                         compute_s=None if cost is None else round(cost, 4))
    earlier = timings.get(stage) if accumulate else None
    if earlier is not None:
        timing = StageTiming(
            wall_s=round(earlier.wall_s + timing.wall_s, 4),
            cpu_s=round(earlier.cpu_s + timing.cpu_s, 4),
            peak_rss_bytes=max(earlier.peak_rss_bytes, timing.peak_rss_bytes),
            compute_s=(None if earlier.compute_s is None or timing.compute_s is None
                       else round(earlier.compute_s + timing.compute_s, 4)))
    timings[stage] = timing
    return out


def with_intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` with each setting's `map_ci`: the 95% percentile-bootstrap interval of
    its mAP over queries (`irbench.results.stats.bootstrap_interval`: 10,000 resamples,
    seed 0, queries without positives left out); None when no query has an AP."""
    from irbench.results.stats import bootstrap_interval

    for m in metrics["settings"].values():
        ap = m.get("ap") or []
        has_ap = any(v is not None for v in ap)
        m["map_ci"] = [float(v) for v in bootstrap_interval(ap)] if has_ap else None
    return metrics


def environment() -> dict[str, Any]:
    """Versions of what changes numbers, the machine, and the git commit when available."""
    from importlib import metadata

    import cv2
    import faiss

    try:  # from the metadata, not by importing torch: SIFT runs never need it
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    env = {
        "irbench": irbench.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
        "torch": torch_version,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(irbench.__file__).parent, timeout=5)
        if commit.returncode == 0:
            env["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def resolve_dataset(dataset: str | Dataset, options: RunOptions) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset, data_root=options.data_root, cache_dir=options.cache_dir,
                        options=options.dataset_options, progress=options.progress)


def run(method: str | type[Method], dataset: str | Dataset,
        options: RunOptions | None = None,
        overrides: Mapping[str, Any] | Any = None) -> RunRecord:
    """Run one method (registered name or Method class) with config overrides on a dataset.

    `overrides` is a mapping of field -> value (strings are parsed to the field's type)
    or a ready Config instance. Returns the RunRecord, also written to
    `options.results_dir` unless that is None.
    """
    options = options or RunOptions()
    cls = METHODS.get(method) if isinstance(method, str) else method
    config = _config_of(cls, overrides)
    preflight(options)
    return _run(cls, config, resolve_dataset(dataset, options), options, options.signer())


def _config_of(cls: type[Method], overrides: Mapping[str, Any] | Any) -> Any:
    if overrides is not None and isinstance(overrides, cls.Config):
        return overrides
    return build_config(cls.Config, overrides, owner=f"method {cls.name!r}")


def _run(cls: type[Method], config: Any, ds: Dataset, options: RunOptions,
         signer: ImageSigner) -> RunRecord:
    check_dataset(ds)
    fingerprint = ds.fingerprint(signer)  # lists every missing or unreadable image
    cache = Cache(options.cache_dir, overwrite=options.overwrite, enabled=options.use_cache,
                  fresh=options.fresh_artifacts)
    spec = SearchSpec(options.search, options.search_options, device=options.device,
                      seed=options.seed)
    context = RunContext(cache=cache, seed=options.seed, workers=options.workers,
                         device=options.device, search=spec,
                         progress=options.progress, dataset_id=f"{ds.name}@{ds.version}",
                         dataset_name=ds.name,
                         independent_set=ds.independent_set, signer=signer,
                         load_dataset=functools.partial(
                             load_dataset, data_root=options.data_root,
                             cache_dir=options.cache_dir),
                         executor=make_executor(options.executor, options.ray_address,
                                                device=options.device))
    _seed_everything(options.seed)
    method_obj = cls(config, context)
    n_db = len(ds.database)
    depth = n_db if options.topk == 0 else min(options.topk, n_db)
    timings: dict[str, StageTiming] = {}
    code = code_identity(cls)

    key = {"method": cls.name, "config": config_hash(config), "code": code,
           "dataset": fingerprint, "depth": depth, "seed": options.seed,
           **spec.key(), "libraries": library_versions()}

    nq = len(ds.queries)
    block = query_block_size(nq, depth, options.query_block)
    ready = False

    def prepare() -> None:
        """Fit and index, once, before the first block of queries is ranked."""
        nonlocal ready
        if not ready:
            _timed(timings, "fit", lambda: method_obj.fit(ds.train), cache)
            _timed(timings, "index", lambda: method_obj.index(ds.database), cache)
            ready = True

    def rank_block(indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        prepare()
        queries = [ds.queries[i] for i in indices]
        ranks, scores = _timed(timings, "query", lambda: method_obj.query(queries, depth),
                               cache, accumulate=True)
        _check_ranking(cls.name, ranks, scores, len(queries), depth, n_db)
        ranks, scores = np.asarray(ranks, np.int64), np.asarray(scores, np.float32)
        return [{"ranks": ranks[j:j + 1], "scores": scores[j:j + 1]}
                for j in range(len(queries))]

    def run_facts() -> dict[str, Any]:
        prepare()  # all blocks were resumed from an interrupted run: its facts are here
        return {"timings": {k: vars(v) for k, v in timings.items()},
                "index_bytes": method_obj.index_bytes(),
                "method_info": method_obj.info(),
                "search_report": dict(spec.report)}

    stage_out = cache.map_cached("rankings", {**key, "layout": RANKINGS_LAYOUT},
                                 list(range(nq)), rank_block, shard_size=block,
                                 progress=options.progress, description=f"{cls.name}: rank",
                                 meta=run_facts)
    reused = not timings
    if reused:
        log.info("reusing cached rankings of %s on %s: fit, index and query skipped "
                 "(use --overwrite to recompute)", cls.name, ds.label)
        for name, t in stage_out["timings"].items():
            timings[name] = StageTiming(**{**t, "cached": True})
    ranks = np.asarray(stage_out["ranks"]).reshape(nq, depth)
    scores = np.asarray(stage_out["scores"]).reshape(nq, depth)
    metrics = _timed(timings, "evaluate", lambda: with_intervals(evaluate(
        ranks, ds.ground_truth, ds.protocol, [q.db_index for q in ds.queries], n_db,
        block=block)), cache)
    method_info = dict(stage_out.get("method_info") or {})
    if options.drop_descriptors and options.use_cache:
        freed = method_obj.drop_descriptors([ds.database, ds.queries, ds.train])
        method_info["descriptors_dropped_bytes"] = int(freed)
        log.info("dropped %d bytes of cached descriptors (--drop-descriptors)", freed)
    record = RunRecord(
        method=cls.name,
        config=config_to_dict(config),
        config_hash=config_hash(config),
        config_changed=changed_fields(config),
        dataset=ds.name,
        dataset_version=ds.version,
        dataset_options=dict(ds.config),
        dataset_fingerprint=fingerprint,
        dataset_root=None if ds.root is None else os.path.abspath(ds.root),
        protocol=ds.protocol.to_dict(),
        metrics=metrics,
        timings=timings,
        index_bytes=stage_out.get("index_bytes"),
        seed=options.seed,
        topk=depth,
        search=options.search,
        search_options=dict(spec.options),
        search_report=dict(stage_out.get("search_report") or {}),
        database_size=n_db,
        method_code=code,
        method_info=method_info,
        cache_events=[e.to_dict() for e in cache.events],
        untrained=method_obj.untrained(),
        environment={**environment(), "executor": context.executor.describe()},
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        query_ids=[str(q.id) for q in ds.queries],
        ranking=kept_ranking(ranks, scores, options.keep_ranking),
    )
    if options.results_dir is not None:
        path = write_record(record, options.results_dir)
        log.info("run record written to %s", path)
    return record


def sweep(method: str | type[Method], dataset: str | Dataset,
          sweeps: Mapping[str, Sequence[str]], options: RunOptions | None = None,
          overrides: Mapping[str, Any] | None = None) -> list[RunRecord]:
    """Run the cartesian product of `sweeps` (field -> values) on top of `overrides`.

    Every point's config is built (and checked) before the first runs, so a bad value
    fails at once; the dataset is loaded and fingerprinted once; each point's stages are
    cached, so points that share a stage (same values of the fields that stage depends
    on) compute it once. One bar counts the points done (its status names the last).
    """
    options = options or RunOptions()
    cls = METHODS.get(method) if isinstance(method, str) else method
    known = {f["name"] for f in describe_fields(cls.Config)}
    for name, values in sweeps.items():
        if name.replace("-", "_") not in known:
            build_config(cls.Config, {name: ""}, owner=f"method {cls.name!r}")  # raises
        if not values:
            raise ConfigError(f"--sweep {name}= lists no values (expected {name}=V1,V2,...)")
    names = list(sweeps)
    points = []
    for values in itertools.product(*(sweeps[n] for n in names)):
        point = {**dict(overrides or {}), **dict(zip(names, values, strict=True))}
        config = _config_of(cls, point)
        cls(config, RunContext.in_memory())  # the method's own checks, for every point
        points.append((values, config))
    preflight(options)
    ds = resolve_dataset(dataset, options)
    signer = options.signer()
    records = []
    with options.progress.task(f"{cls.name}: sweep points", total=len(points)) as advance:
        for values, config in points:
            point = ", ".join(f"{k}={v}" for k, v in zip(names, values, strict=True))
            log.info("sweep point %s", point)
            records.append(_run(cls, config, ds, options, signer))
            advance(1, point)
    return records


def _check_ranking(name: str, ranks: np.ndarray, scores: np.ndarray, nq: int, depth: int,
                   n_db: int) -> None:
    ranks = np.asarray(ranks)
    if ranks.shape != (nq, depth) or np.asarray(scores).shape != (nq, depth):
        raise RuntimeError(f"method {name!r} returned ranks {ranks.shape} and scores "
                           f"{np.asarray(scores).shape}; expected ({nq}, {depth}) each")
    if ranks.size and (ranks.min() < -1 or ranks.max() >= n_db):
        raise RuntimeError(f"method {name!r} returned database indices outside [0, {n_db})")
    if not np.all(np.isfinite(np.asarray(scores, np.float64))):
        raise RuntimeError(f"method {name!r} returned non-finite scores")


def _seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and, when the method's code has imported it, torch's
    generators (a method without torch never imports it: SIFT runs stay torch-free)."""
    import random
    import sys

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
