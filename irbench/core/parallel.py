"""Per-item work in worker processes, in input order, with progress; workers die with their parent."""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from irbench.core.progress import NULL_PROGRESS, Advance, Progress
from irbench.errors import BadImagesError, ConfigError, ImageReadError

T = TypeVar("T")
R = TypeVar("R")

PARENT_POLL_S = 0.5
"""How often a worker checks that the process that started it is still alive (seconds)."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_SHARED: contextvars.ContextVar[dict[int, ProcessPoolExecutor] | None] = (
    contextvars.ContextVar("irbench_shared_pools", default=None))
"""The pools of the innermost `shared_pool` block, by number of workers."""


def default_workers() -> int:
    """`IRBENCH_WORKERS`, else the number of CPUs this process may use (at most 8).

    A value that is not a whole number >= 1 raises `ConfigError` naming the variable.
    """
    env = os.environ.get("IRBENCH_WORKERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"IRBENCH_WORKERS={env!r} is not a number of worker processes: "
                              "set it to a whole number >= 1 (e.g. IRBENCH_WORKERS=4) or "
                              "unset it to use the CPUs available")
        return n
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 1,
                 progress: Progress = NULL_PROGRESS, description: str = "",
                 chunksize: int = 4, advance: Advance | None = None) -> list[R]:
    """`[fn(x) for x in items]`, in `workers` spawned processes when workers > 1.

    Progress goes to a new bar of `progress`, or, with `advance`, to the caller's bar
    (moved as items finish: per item here, per chunk in workers).

    `fn` must be a module-level function (it is pickled). An item that raises
    `ImageReadError` does not stop the others: once every item is done, one
    `BadImagesError` lists all unreadable images. Any other exception propagates at once,
    as does KeyboardInterrupt: pending items are cancelled and the workers terminated.
    Workers exit within `PARENT_POLL_S` of this process's death, however it dies.
    Spawned (not forked) workers avoid deadlocks with the thread pools of OpenCV, faiss
    and torch.
    """
    items = list(items)
    out: list[Any] = [None] * len(items)
    unreadable: list[tuple[int, ImageReadError]] = []

    def keep(index: int, ok: bool, value: Any) -> None:
        if ok:
            out[index] = value
        else:
            unreadable.append((index, value))

    bar = (contextlib.nullcontext(advance) if advance is not None
           else progress.task(description, total=len(items)))
    with bar as step:
        if workers <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                keep(index, *_attempt(fn, item))
                step(1)
        else:
            _map_in_pool(fn, items, workers=workers, chunksize=max(1, chunksize), keep=keep,
                         advance=step)
    if unreadable:
        raise BadImagesError.combine([exc for _, exc in sorted(unreadable, key=lambda e: e[0])])
    return out


def _attempt(fn: Callable[[T], R], item: T) -> tuple[bool, R | ImageReadError]:
    """(True, fn(item)), or (False, the ImageReadError it raised)."""
    try:
        return True, fn(item)
    except ImageReadError as exc:
        return False, exc


@contextlib.contextmanager
def shared_pool() -> Iterator[None]:
    """Within the block, the `parallel_map` calls of this thread with the same `workers`
    share one spawned pool, started at the first such call and ended with the block
    (else each call starts and ends its own). A per-image stage calls `parallel_map`
    once per shard, and every start costs each worker a spawn and its imports (OpenCV,
    numpy, irbench): about 0.45 s for 2 workers on a 2-core Xeon, which made SIFT
    extraction of 320 x 240 images 1.15x slower in 256-image shards
    (`benchmarks/bench_pool.py`).

    Keep the block inside one timed stage: a worker's CPU time reaches this process's
    `RUSAGE_CHILDREN` (a stage's `cpu_s`) only when the worker has exited. A block
    nested in another uses the outer block's pools. An exception (Ctrl-C included)
    stops the pools at once, as `parallel_map` stops its own.
    """
    if _SHARED.get() is not None:
        yield
        return
    pools: dict[int, ProcessPoolExecutor] = {}
    token = _SHARED.set(pools)
    try:
        yield
    except BaseException:
        for pool in pools.values():
            _stop(pool)
        raise
    else:
        for pool in pools.values():
            pool.shutdown(wait=True)
    finally:
        _SHARED.reset(token)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
        initargs=(os.getpid(), threading.current_thread() is threading.main_thread()))


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[tuple[bool, R | ImageReadError]]:
    """`_attempt` on each item of a chunk (runs in a worker)."""
    return [_attempt(fn, item) for item in chunk]


def _map_in_pool(fn: Callable[[T], R], items: list[T], *, workers: int, chunksize: int,
                 keep: Callable[[int, bool, Any], None], advance: Advance) -> None:
    """Run `items` in chunks on a spawned process pool (the `shared_pool` block's, or
    one of its own); `keep(index, ok, value)` per item, as chunks complete. On any
    exception (or KeyboardInterrupt) the pool is stopped at once (a shared one is then
    started again by the block's next call)."""
    starts = range(0, len(items), chunksize)
    shared = _SHARED.get()
    if shared is None:
        pool = _new_pool(min(workers, len(starts)))
    elif workers in shared:
        pool = shared[workers]
    else:
        pool = shared[workers] = _new_pool(workers)
    try:
        with _sigint_blocked():  # workers start deaf to Ctrl-C; this process gets it after
            futures: dict[Future, int] = {
                pool.submit(_run_chunk, fn, items[start:start + chunksize]): start
                for start in starts}
        for future in as_completed(futures):
            start, outcomes = futures.pop(future), future.result()  # pop: free it once used
            for offset, (ok, value) in enumerate(outcomes):
                keep(start + offset, ok, value)
            advance(len(outcomes))
    except BaseException:
        _stop(pool)
        if shared is not None:
            shared.pop(workers, None)
        raise
    if shared is None:
        pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor, grace_s: float = 2.0) -> None:
    """Cancel the pool's pending work and end its workers now (SIGTERM, then SIGKILL)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public accessor
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(1.0)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread within the block: processes started here inherit the
    mask, so a Ctrl-C that reaches the whole process group cannot interrupt their start-up
    with a traceback; here it is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(parent_pid: int, parent_is_main_thread: bool) -> None:
    """Worker start-up: leave Ctrl-C to the parent (which stops the pool) and exit when the
    parent process dies, whatever kills it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if parent_is_main_thread and sys.platform.startswith("linux"):
        # The kernel's parent-death signal follows the creating *thread*; only the main
        # thread lives as long as its process. Best effort: the watchdog below covers all.
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="irbench-parent-watch",
                     daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker at once when its parent process is gone (it was re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
