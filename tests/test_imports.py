"""A SIFT-only run never imports torch (the CNN methods' modules are the only ones that do),
and a run on the local executor never imports Ray."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
atexit.register(lambda: print("ray imported:", "ray" in sys.modules))
from irbench.cli.main import main
sys.argv = ["bench", "run", "-q", "-m", "bow", "-d", "demo", "--dataset-option", "objects=6",
            "--set", "vocabulary_size=64", "--results-dir", sys.argv[1]]
main()
"""


def test_a_bow_run_imports_neither_torch_nor_ray(tmp_path):
    env = {"IRBENCH_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "results")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout, out.stdout[-2000:]
    assert "ray imported: False" in out.stdout, out.stdout[-2000:]
    assert list((tmp_path / "results").glob("bow__demo*.json"))


def test_the_registry_imports_only_the_method_asked_for():
    code = ("import sys; from irbench.methods.registry import create_method; "
            "create_method('he-wgc'); print('torch' in sys.modules, "
            "'irbench.methods.cnn.drcnn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


def test_the_public_api_resolves_every_name_lazily():
    """`import irbench` is cheap (no harness, numpy or torch), and every name of
    `irbench.__all__` resolves to the object of the module that defines it."""
    code = ("import sys, irbench; print(sorted(m for m in sys.modules if m.startswith("
            "('irbench.', 'numpy', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    import irbench
    from irbench.harness import runner
    from irbench.methods import base

    for name in irbench.__all__:
        assert getattr(irbench, name) is not None, name
    assert irbench.run is runner.run and irbench.GlobalDescriptorMethod is base.GlobalDescriptorMethod
    assert "bow" in irbench.list_methods() and "demo" in irbench.list_datasets()
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        irbench.nope  # noqa: B018


def test_the_example_plugin_uses_only_the_public_api():
    from pathlib import Path

    source = (Path(__file__).parents[1] / "examples" / "plugin" / "irbench_color_histogram"
              / "__init__.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from irbench",
                                                                        "import irbench"))]
    assert imports and all(line.startswith("from irbench import ") for line in imports)
