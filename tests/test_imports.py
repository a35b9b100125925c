"""A SIFT-only run never imports torch (the CNN methods' modules are the only ones that do)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
from irbench.cli.main import main
sys.argv = ["bench", "run", "-q", "-m", "bow", "-d", "demo", "--dataset-option", "objects=6",
            "--set", "vocabulary_size=64", "--results-dir", sys.argv[1]]
main()
"""


def test_a_bow_run_imports_no_torch(tmp_path):
    env = {"IRBENCH_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "results")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout, out.stdout[-2000:]
    assert list((tmp_path / "results").glob("bow__demo*.json"))


def test_the_registry_imports_only_the_method_asked_for():
    code = ("import sys; from irbench.harness.registry import create_method; "
            "create_method('he-wgc'); print('torch' in sys.modules, "
            "'irbench.methods.cnn.drcnn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
