"""The example plugin package, installed with pip into a temporary folder, used via `bench`."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.tiny import make_manifest


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
           "--no-build-isolation", "--no-index", "--target", str(target),
           str(REPO / "examples" / "plugin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return target


def bench(args, site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(site), "IRBENCH_DISABLE_PLUGINS": "0",
           "IRBENCH_CACHE": str(tmp_path / "cache"), "IRBENCH_RESULTS": str(tmp_path / "r")}
    return subprocess.run([sys.executable, "-m", "irbench.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path)


def test_plugin_is_listed_and_runs(plugin_site, tmp_path):
    out = bench(["methods", "--json"], plugin_site, tmp_path)
    assert out.returncode == 0, out.stderr
    methods = {m["name"]: m for m in json.loads(out.stdout)["methods"]}
    assert methods["color-histogram"]["source"] == "irbench-example-plugin"
    assert {f["name"] for f in methods["color-histogram"]["fields"]} >= {"hue_bins"}
    manifest = make_manifest(tmp_path / "data")
    out = bench(["run", "-m", "color-histogram", "-d", f"manifest:{manifest}", "-q",
                 "--set", "hue_bins=8"], plugin_site, tmp_path)
    assert out.returncode == 0, out.stderr
    records = list((tmp_path / "r").glob("*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["method"] == "color-histogram" and rec["config"]["hue_bins"] == 8
    assert rec["metrics"]["settings"][""]["map"] > 0.5  # colours separate the tiny classes


def test_plugins_can_be_disabled(plugin_site, tmp_path):
    env_off = bench(["methods", "--json"], plugin_site, tmp_path)
    assert "color-histogram" in env_off.stdout
    env = {**os.environ, "PYTHONPATH": str(plugin_site), "IRBENCH_DISABLE_PLUGINS": "1"}
    out = subprocess.run([sys.executable, "-m", "irbench.cli.main", "methods", "--json"],
                         capture_output=True, text=True, env=env)
    assert "color-histogram" not in out.stdout
