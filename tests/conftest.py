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


@pytest.fixture
def official() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
