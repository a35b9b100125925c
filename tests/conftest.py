"""Test isolation: caches, results and data under tmp dirs; no third-party plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "fixtures" / "official"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("irbench-home")
    monkeypatch.setenv("IRBENCH_CACHE", str(base / "cache"))
    monkeypatch.setenv("IRBENCH_RESULTS", str(base / "results"))
    monkeypatch.setenv("IRBENCH_DATA", str(base / "data"))
    monkeypatch.setenv("IRBENCH_DISABLE_PLUGINS", "1")
    monkeypatch.setenv("IRBENCH_WORKERS", "1")
    yield


@pytest.fixture(autouse=True)
def _fresh_logging():
    """The CLI sets up the `irbench` logger (handlers, no propagation); undo it after each
    test so that later tests' `caplog` sees irbench's warnings."""
    import logging

    yield
    logger = logging.getLogger("irbench")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: only loopback connections are allowed."""
    import socket

    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"tests may not open network connections (to {address!r})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            raise OSError(f"tests may not resolve network names ({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def toy_method():
    """The toy method `mean-color` (tests.tiny.MeanColor), registered for CLI tests."""
    from irbench.methods.registry import METHODS
    from tests.tiny import MeanColor

    if "mean-color" not in METHODS.names():
        METHODS.register("mean-color", MeanColor, source="tests")


@pytest.fixture
def official() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
