"""Executors: the shards of `Cache.map_cached` computed elsewhere give the same artifact as
here; a shard a task stored but this machine cannot see, unreadable images across shards,
and Ray's task plumbing (against a stand-in `ray` module: no Ray needed)."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.core.executor import LOCAL, Executor, RayExecutor, make_executor
from irbench.core.progress import NullProgress
from irbench.errors import BadImagesError, ConfigError, ImageReadError
from irbench.methods.base import RunContext


def rows(chunk):
    """Item i gets i % 3 rows of [i, i]: some items have none."""
    return [{"v": np.full((i % 3, 2), i, np.float32)} for i in chunk]


class Elsewhere(Executor):
    """Runs each task on a pickled copy of its arguments, as another process would,
    in an order of its own (`order`); `after` may tamper with what a task left behind."""

    name = "elsewhere"
    in_process = False

    def __init__(self, order=reversed, after=None):
        self.order, self.after, self.ran = order, after, 0

    def run(self, fn, shared, tasks, on_done):
        shared = pickle.loads(pickle.dumps(shared))
        for index in self.order(range(len(tasks))):
            task = pickle.loads(pickle.dumps(tasks[index]))
            done = fn(shared, task)
            self.ran += 1
            if self.after:
                self.after(task)
            on_done(index, pickle.loads(pickle.dumps(done)))


def test_shards_computed_elsewhere_give_the_local_artifact(tmp_path):
    items = list(range(23))
    local = Cache(tmp_path / "local").map_cached("t", {"k": 1}, items, rows, shard_size=5)
    elsewhere = Elsewhere()
    remote = Cache(tmp_path / "remote").map_cached("t", {"k": 1}, items, rows, shard_size=5,
                                                   executor=elsewhere)
    assert elsewhere.ran == 5
    assert remote.id == local.id and set(remote) == set(local) == {"offsets", "v"}
    for name in local:
        np.testing.assert_array_equal(remote[name], local[name])
    stored = Cache(tmp_path / "remote").map_cached("t", {"k": 1}, items, rows, shard_size=5,
                                                   executor=Elsewhere())
    np.testing.assert_array_equal(stored["v"], local["v"])  # the merged artifact is reused


def test_shards_elsewhere_without_a_cache_come_back_in_memory():
    items = list(range(7))
    art = Cache(".", enabled=False).map_cached("t", {"k": 1}, items, rows, shard_size=2,
                                               executor=Elsewhere())
    np.testing.assert_array_equal(art["v"], Cache(".", enabled=False).map_cached(
        "t", {"k": 1}, items, rows, shard_size=2)["v"])


def test_only_the_missing_shards_are_sent(tmp_path):
    items = list(range(10))
    calls = []

    def failing_after_two(chunk):
        calls.append(list(chunk))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return rows(chunk)

    cache = Cache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.map_cached("t", {"k": 1}, items, failing_after_two, shard_size=3)
    elsewhere = Elsewhere(order=iter)
    art = cache.map_cached("t", {"k": 1}, items, rows, shard_size=3, executor=elsewhere)
    assert elsewhere.ran == 2  # shards 0-3 and 3-6 were stored by the interrupted run
    np.testing.assert_array_equal(art["offsets"], np.cumsum([0] + [i % 3 for i in items]))


def test_a_shard_this_machine_cannot_see_names_the_node_and_the_path(tmp_path):
    import shutil

    def vanish(task):  # as if written to a disk of the node only
        shutil.rmtree(task.path)

    with pytest.raises(ConfigError, match="filesystem every node shares") as caught:
        Cache(tmp_path).map_cached("t", {"k": 1}, list(range(4)), rows, shard_size=2,
                                   executor=Elsewhere(after=vanish))
    message = str(caught.value)
    assert str(tmp_path) in message and "node " in message and "--cache-dir" in message


def bad_three_and_eight(chunk):
    for i in chunk:
        if i in (3, 8):
            raise ImageReadError(f"img{i}.jpg", "truncated")
    return rows(chunk)


def test_unreadable_images_of_every_shard_are_reported_together(tmp_path):
    with pytest.raises(BadImagesError) as caught:
        Cache(tmp_path).map_cached("t", {"k": 1}, list(range(10)), bad_three_and_eight,
                                   shard_size=2, executor=Elsewhere())
    assert "img3.jpg" in str(caught.value) and "img8.jpg" in str(caught.value)
    # the good shards are stored: a second run computes only the two bad ones
    elsewhere = Elsewhere()
    Cache(tmp_path).map_cached("t", {"k": 1}, list(range(10)), rows, shard_size=2,
                               executor=elsewhere)
    assert elsewhere.ran == 2


def test_a_context_sent_to_a_task_runs_one_worker_without_progress():
    from irbench.datasets.signature import ImageSigner

    signer = ImageSigner()
    signer._known["/x.jpg"] = "abc"
    ctx = RunContext.in_memory(workers=6, executor=RayExecutor("auto"), progress=object(),
                               load_dataset=print, signer=signer)
    copy = pickle.loads(pickle.dumps(ctx))
    assert (copy.workers, copy.executor, copy.load_dataset) == (1, LOCAL, None)
    assert isinstance(copy.progress, NullProgress)
    assert copy.signer._known == {} and copy.seed == ctx.seed
    assert ctx.workers == 6 and ctx.executor.address == "auto"  # the original is untouched


def test_executor_options_are_checked():
    assert make_executor("local") is LOCAL
    ray = make_executor("ray", "auto", device="cuda:0")
    assert (ray.address, ray.gpus_per_task, ray.describe()) == ("auto", 1.0, "ray (address auto)")
    assert make_executor("ray").describe() == "ray (address local)"
    with pytest.raises(ConfigError, match="--ray-address 10.0.0.1:6379 needs --executor ray"):
        make_executor("local", "10.0.0.1:6379")
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        make_executor("dask")
    from irbench.harness.runner import RunOptions

    with pytest.raises(ConfigError, match="needs --executor ray"):
        RunOptions(ray_address="auto")


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'irbench-harness\[ray\]'"):
        RayExecutor().run(lambda shared, task: task, None, [1], lambda i, r: None)


def fake_ray(finish_order):
    """A stand-in for the `ray` module: tasks run when submitted, `wait` hands them back
    in `finish_order`, and what was put, submitted and cancelled is recorded."""
    ray = types.SimpleNamespace(puts=[], submitted=[], cancelled=[], inits=[])
    ray.is_initialized = lambda: bool(ray.inits)
    ray.init = lambda **kw: ray.inits.append(kw)
    ray.cluster_resources = lambda: {"CPU": 2.0}
    ray.put = lambda value: ray.puts.append(value) or ("ref", value)
    ray.get = lambda ref: ref.result
    ray.cancel = lambda ref, force: ray.cancelled.append(ref.index)

    class Ref:
        def __init__(self, index, result):
            self.index, self.result = index, result

    def remote(**options):
        ray.options = options

        def wrap(fn):
            def submit(shared_ref, task):
                ref = Ref(len(ray.submitted), fn(shared_ref[1], task))
                ray.submitted.append(ref)
                return ref
            return types.SimpleNamespace(remote=submit)
        return wrap

    ray.remote = remote

    def wait(refs, num_returns):
        first = min(refs, key=lambda r: finish_order.index(r.index))
        return [first], [r for r in refs if r is not first]

    ray.wait = wait
    return ray


def test_ray_executor_sends_the_shared_part_once_and_reports_as_tasks_finish(monkeypatch):
    ray = fake_ray(finish_order=[2, 0, 1])
    monkeypatch.setitem(sys.modules, "ray", ray)
    seen = []
    RayExecutor().run(lambda shared, task: shared * task, 10, [1, 2, 3],
                      lambda index, result: seen.append((index, result)))
    assert seen == [(2, 30), (0, 10), (1, 20)]
    assert ray.puts == [10] and ray.options == {"num_cpus": 1, "num_gpus": 0.0}
    assert ray.inits == [{"address": None, "log_to_driver": False, "include_dashboard": False}]


def test_ray_executor_cancels_the_outstanding_tasks_on_failure(monkeypatch):
    ray = fake_ray(finish_order=[1, 0, 2, 3])
    monkeypatch.setitem(sys.modules, "ray", ray)

    def interrupted(index, result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RayExecutor("auto").run(lambda shared, task: task, None, [0, 1, 2, 3], interrupted)
    assert sorted(ray.cancelled) == [0, 2, 3]
    assert ray.inits[0]["address"] == "auto" and "include_dashboard" not in ray.inits[0]


def test_a_cluster_that_cannot_be_reached_is_a_config_error(monkeypatch):
    ray = fake_ray(finish_order=[0])

    def refuse(**kwargs):
        raise ConnectionError("no cluster at 10.0.0.1:6379")

    ray.init = refuse
    monkeypatch.setitem(sys.modules, "ray", ray)
    with pytest.raises(ConfigError, match="--ray-address 10.0.0.1:6379: cannot connect"):
        RayExecutor("10.0.0.1:6379").run(lambda s, t: t, None, [0], lambda i, r: None)
