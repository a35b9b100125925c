"""Where the shards of a per-image stage run: in this process (the default) or as Ray tasks.

`Cache.map_cached` cuts a per-image computation (SIFT extraction and quantization, CNN
features, DR-CNN detection and region features) into shards and hands the shards that
are not in the cache yet to an executor:

- `LocalExecutor` runs them one after the other in this process (a stage's own process
  pool, `irbench.core.parallel`, gives the parallelism). It imports no Ray.
- `RayExecutor` runs each shard as one Ray task (one CPU each, `ray` imported on first
  use only). A task writes its shard into the cache directory itself and returns a few
  facts; the driver reads the shard back from the same path, so the cache directory must
  be on a filesystem every Ray node shares (NFS and the like). Results are identical to
  the local executor's: the same function computes the same shards.

An executor never changes what is computed, so it enters no artifact key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from irbench.errors import ConfigError

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")
"""The names `--executor` accepts."""


class Executor:
    """Runs `fn(shared, task)` for each task and hands each result to `on_done(index,
    result)` in this process, in completion order. `shared` (the stage's compute
    function, whatever it closes over) is sent once, not once per task. An exception,
    raised by a task or by `on_done`, or KeyboardInterrupt stops the executor's
    outstanding tasks and propagates."""

    name: ClassVar[str] = ""
    in_process: ClassVar[bool] = True
    """Tasks run in this process: their results need not travel through the cache."""

    def run(self, fn: Callable[[S, T], R], shared: S, tasks: Sequence[T],
            on_done: Callable[[int, R], None]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """What ran the work, for the run record (`local`, `ray (address auto)`)."""
        return self.name


class LocalExecutor(Executor):
    """Runs every task here, in order (the default)."""

    name = "local"
    in_process = True

    def __reduce__(self) -> str:
        return "LOCAL"  # unpickles as the module's one instance

    def run(self, fn: Callable[[S, T], R], shared: S, tasks: Sequence[T],
            on_done: Callable[[int, R], None]) -> None:
        for index, task in enumerate(tasks):
            on_done(index, fn(shared, task))


LOCAL = LocalExecutor()


class RayExecutor(Executor):
    """Runs every task as a Ray task on the cluster at `address` (None: a Ray started
    here for this process, or the one `ray.init` already connected to).

    Each task asks Ray for one CPU and `gpus_per_task` GPUs; inside it, the stage runs
    with one worker process (Ray is the parallelism: `RunContext` travels as a worker
    context). Ray is started or joined on the first shard to compute, so a run whose
    artifacts are all cached never starts it.
    """

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, *, gpus_per_task: float = 0.0) -> None:
        self.address = address or None
        self.gpus_per_task = gpus_per_task

    def describe(self) -> str:
        return f"ray (address {self.address or 'local'})"

    def _ray(self) -> Any:
        """The `ray` module, connected: to `address`, or to a local Ray started now."""
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'irbench-harness[ray]' "
                              "(on the driver and on every node of the cluster)") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False}
            if self.address is None:  # a private Ray of this process: no dashboard to serve
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"--ray-address {self.address}: cannot connect to a Ray "
                                  f"cluster there ({exc}); start one with `ray start "
                                  f"--head` or leave --ray-address out to start Ray "
                                  f"here") from None
            log.info("Ray: %s", ray.cluster_resources())
        return ray

    def run(self, fn: Callable[[S, T], R], shared: S, tasks: Sequence[T],
            on_done: Callable[[int, R], None]) -> None:
        if not tasks:
            return
        ray = self._ray()
        # a task lost with its node is run again (Ray's default retries): shards are
        # written atomically, so a rerun is harmless
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task)(fn)
        shared_ref = ray.put(shared)
        pending = {remote.remote(shared_ref, task): index for index, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    on_done(pending.pop(ref), ray.get(ref))
        except BaseException:  # a failed task, a failed on_done, Ctrl-C: stop the rest
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def make_executor(name: str, address: str | None = None, *, device: str = "cpu") -> Executor:
    """The executor `--executor NAME` names; `address` is `--ray-address` (only with
    ray). A CUDA `device` makes each Ray task ask for one GPU."""
    if name == "local":
        if address:
            raise ConfigError(f"--ray-address {address} needs --executor ray (the local "
                              f"executor runs everything here)")
        return LOCAL
    if name == "ray":
        return RayExecutor(address, gpus_per_task=1.0 if device.startswith("cuda") else 0.0)
    raise ConfigError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
