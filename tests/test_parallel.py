"""parallel_map: workers die with their parent, stop promptly on errors, and every
unreadable image is reported in one error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irbench.core.parallel import default_workers, parallel_map, shared_pool
from irbench.datasets.images import read_image
from irbench.errors import BadImagesError, ConfigError, ImageReadError
from tests.conftest import REPO
from tests.tiny import make_image

# -- helpers (module level: pickled to the workers) ----------------------------------------


def record_and_sleep(path: str) -> str:
    """Record this worker's pid as `<path>.<pid>`, then sleep (or fail on `fail*` items)."""
    Path(f"{path}.{os.getpid()}").write_text(str(os.getpid()))
    if Path(path).name.startswith("fail"):
        raise ValueError(f"{path} fails")
    time.sleep(0 if Path(path).name.startswith("quick") else 60)
    return path


def read_and_mark(path: str) -> tuple[int, int]:
    """The image's size; marks a good image as done (`<path>.done`)."""
    h, w = read_image(path).shape[:2]
    Path(f"{path}.done").touch()
    return h, w


def pids_recorded(folder: Path, prefix: str) -> list[int]:
    return sorted({int(p.read_text()) for p in folder.glob(f"{prefix}*.*")
                   if p.suffix[1:].isdigit() and p.read_text()})


def is_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- workers die with their parent ------------------------------------------------------------

CHILD = """
import sys, threading, time
from pathlib import Path
from multiprocessing import resource_tracker
from irbench.core.parallel import parallel_map
from tests.test_parallel import record_and_sleep

folder = Path(sys.argv[1])

def report_tracker():
    while resource_tracker._resource_tracker._pid is None:
        time.sleep(0.01)
    (folder / "tracker.pid").write_text(str(resource_tracker._resource_tracker._pid))

threading.Thread(target=report_tracker, daemon=True).start()
parallel_map(record_and_sleep, [str(folder / "w0"), str(folder / "w1")], workers=2, chunksize=1)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_exit_when_the_main_process_is_killed(tmp_path, sig):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, env=env)
    pids: list[int] = []
    try:
        wait_for(lambda: len(pids_recorded(tmp_path, "w")) == 2
                 and (tmp_path / "tracker.pid").exists(), 120, "two workers to start")
        pids = pids_recorded(tmp_path, "w") + [int((tmp_path / "tracker.pid").read_text())]
        assert all(is_alive(p) for p in pids)
        child.send_signal(sig)
        assert child.wait(timeout=30) == -sig
        assert wait_dead(pids, 5.0) == [], "workers or resource tracker outlived their parent"
    finally:
        if child.poll() is None:
            child.kill()
        kill_leftovers(pids)


def test_an_exception_stops_the_pool_without_waiting(tmp_path):
    items = [str(tmp_path / "fail0")] + [str(tmp_path / f"slow{i}") for i in range(1, 6)]
    start = time.monotonic()
    try:
        with pytest.raises(ValueError, match="fail0 fails"):
            parallel_map(record_and_sleep, items, workers=2, chunksize=1)
        assert time.monotonic() - start < 45  # the slow items sleep 60 s each
        assert wait_dead(pids_recorded(tmp_path, ""), 5.0) == []
    finally:
        kill_leftovers(pids_recorded(tmp_path, ""))


class _InterruptAfterFirst:
    """A Progress whose first advance raises KeyboardInterrupt (Ctrl-C mid-run)."""

    def task(self, description, total=None):
        import contextlib

        @contextlib.contextmanager
        def cm():
            def advance(n=1, status=None):
                raise KeyboardInterrupt

            yield advance

        return cm()


def test_keyboard_interrupt_stops_the_pool_without_waiting(tmp_path):
    items = [str(tmp_path / "quick0")] + [str(tmp_path / f"slow{i}") for i in range(1, 6)]
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            parallel_map(record_and_sleep, items, workers=2, chunksize=1,
                         progress=_InterruptAfterFirst())
        assert time.monotonic() - start < 45
        assert wait_dead(pids_recorded(tmp_path, ""), 5.0) == []
    finally:
        kill_leftovers(pids_recorded(tmp_path, ""))


def worker_pid(_: int) -> int:
    return os.getpid()


def test_a_shared_pool_serves_every_call_of_its_block_and_ends_with_it():
    """Calls in a `shared_pool` block run in the same worker processes, which have
    exited when the block ends (their CPU time then counts in the caller's stage);
    outside a block each call has its own pool."""
    with shared_pool():
        first = set(parallel_map(worker_pid, range(8), workers=2, chunksize=1))
        second = set(parallel_map(worker_pid, range(8), workers=2, chunksize=1))
        with shared_pool():  # nested: the outer block's pool
            third = set(parallel_map(worker_pid, range(8), workers=2, chunksize=1))
        assert all(is_alive(pid) for pid in first)
    assert second <= first and third <= first and os.getpid() not in first
    assert wait_dead(sorted(first), 5.0) == []
    alone = [set(parallel_map(worker_pid, range(4), workers=2, chunksize=1))
             for _ in range(2)]
    assert not alone[0] & alone[1]


def test_an_error_in_a_shared_pool_stops_it_and_the_next_call_starts_another(tmp_path):
    """An exception stops the block's pool at once (as a call's own pool), a later call
    of the block runs on a new pool, and an exception leaving the block stops that."""
    items = [str(tmp_path / "fail0")] + [str(tmp_path / f"slow{i}") for i in range(1, 4)]
    try:
        with pytest.raises(RuntimeError, match="out"), shared_pool():
            with pytest.raises(ValueError, match="fail0 fails"):
                parallel_map(record_and_sleep, items, workers=2, chunksize=1)
            failed = pids_recorded(tmp_path, "")
            assert wait_dead(failed, 5.0) == []
            again = set(parallel_map(worker_pid, range(4), workers=2, chunksize=1))
            assert again and not again & set(failed)
            raise RuntimeError("out")
        assert wait_dead(sorted(again), 5.0) == []
    finally:
        kill_leftovers(pids_recorded(tmp_path, ""))


# -- every unreadable image in one error ------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_all_unreadable_images_are_reported_together(tmp_path, workers):
    paths = []
    for i in range(6):
        make_image(tmp_path / f"good{i}.png", i, 0)
        paths.append(str(tmp_path / f"good{i}.png"))
    (tmp_path / "bad_a.png").write_bytes((tmp_path / "good0.png").read_bytes()[:40])
    (tmp_path / "bad_b.jpg").write_bytes(b"not an image")
    paths.insert(1, str(tmp_path / "bad_a.png"))
    paths.insert(5, str(tmp_path / "bad_b.jpg"))
    with pytest.raises(BadImagesError) as info:
        parallel_map(read_and_mark, paths, workers=workers, chunksize=2)
    err = info.value
    assert isinstance(err, ImageReadError)
    assert [p for p, _ in err.problems] == [str(tmp_path / "bad_a.png"),
                                            str(tmp_path / "bad_b.jpg")]
    message = str(err)
    assert message.startswith("2 images cannot be read:")
    assert "bad_a.png" in message and "bad_b.jpg" in message
    assert all(Path(f"{p}.done").exists() for p in paths if "good" in p)
    assert parallel_map(read_and_mark, [p for p in paths if "good" in p],
                        workers=workers) == [(64, 64)] * 6


def test_bad_images_error_lists_at_most_twenty():
    errors = [ImageReadError(f"/x/{i}.jpg", "not a decodable image") for i in range(23)]
    combined = BadImagesError.combine([BadImagesError([("/y/a.jpg", "file not found")]),
                                       *errors, errors[0]])
    assert len(combined.problems) == 24
    lines = str(combined).splitlines()
    assert lines[0] == "24 images cannot be read:"
    assert lines[1] == "  /y/a.jpg: file not found"
    assert lines[-1] == "  ... and 4 more"
    assert len(lines) == 22


# -- IRBENCH_WORKERS ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_bad_irbench_workers_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("IRBENCH_WORKERS", value)
    with pytest.raises(ConfigError, match="IRBENCH_WORKERS"):
        default_workers()


def test_irbench_workers(monkeypatch):
    monkeypatch.setenv("IRBENCH_WORKERS", " 3 ")
    assert default_workers() == 3
    monkeypatch.delenv("IRBENCH_WORKERS")
    assert 1 <= default_workers() <= 8


@pytest.mark.parametrize("workers", [1, 2])
def test_cnn_extraction_reports_all_unreadable_images_together(tmp_path, workers):
    import torch

    from irbench.methods.cnn.extract import Resize, extract

    items = []
    for i in range(5):
        make_image(tmp_path / f"good{i}.png", i, 1)
        items.append((str(tmp_path / f"good{i}.png"), None))
    (tmp_path / "bad_a.png").write_bytes((tmp_path / "good0.png").read_bytes()[:40])
    items.insert(0, (str(tmp_path / "bad_a.png"), None))
    items.insert(4, (str(tmp_path / "missing.png"), None))
    described: list[int] = []

    def describe(x: torch.Tensor) -> torch.Tensor:
        described.append(len(x))
        return x.mean(dim=(2, 3))

    net = torch.nn.Identity()
    with pytest.raises(BadImagesError) as info:
        extract(net, describe, items, Resize("square", 32), batch_size=2, workers=workers,
                channels_last=False)
    assert [p for p, _ in info.value.problems] == [str(tmp_path / "bad_a.png"),
                                                   str(tmp_path / "missing.png")]
    assert "file not found" in str(info.value)
    assert sum(described) == 5  # every readable image was still described
