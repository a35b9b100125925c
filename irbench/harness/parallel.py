"""Per-item work in worker processes, in input order, with progress."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from irbench.harness.progress import NULL_PROGRESS, Progress

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """`IRBENCH_WORKERS`, else the number of CPUs this process may use (at most 8)."""
    env = os.environ.get("IRBENCH_WORKERS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 1,
                 progress: Progress = NULL_PROGRESS, description: str = "",
                 chunksize: int = 4) -> list[R]:
    """`[fn(x) for x in items]`, in `workers` spawned processes when workers > 1.

    `fn` must be a module-level function (it is pickled). Exceptions propagate. Spawned
    (not forked) workers avoid deadlocks with the thread pools of OpenCV, faiss and torch.
    """
    items = list(items)
    out: list[Any] = []
    with progress.task(description, total=len(items)) as advance:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                out.append(fn(item))
                advance(1)
            return out
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                out.append(result)
                advance(1)
    return out
