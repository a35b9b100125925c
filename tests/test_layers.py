"""irbench's packages are layered: a package imports only packages of a lower rank or itself.

Every module is parsed (not imported): module-level and function-level imports, `import x`
and `from x import y`, relative imports resolved. `irbench/__init__.py` is the lazy public
API and may import anything; a module that imports the bare `irbench` package may read its
dunders (`__version__`, `__file__`) but not a name of that lazy API, which would be an
import by another route.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "irbench"

RANKS = {
    "errors": 0,
    "core": 1,
    "datasets": 2,
    "methods": 3,
    "results": 3,
    "harness": 4,
    "cli": 5,
    "__main__": 6,  # `python -m irbench`: runs the CLI
}
"""Lowest first. Two packages of one rank (methods, results) must not import each other."""


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    """Whether `name` (dotted, starting with irbench) is a module or package of irbench."""
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` written in `module`."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported irbench module) for every import in the file, at any depth."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    binds_root = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "irbench" or alias.name.startswith("irbench."):
                    found.append((node.lineno, alias.name))
                    binds_root |= alias.asname is None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module)
            if source != "irbench" and not source.startswith("irbench."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if _is_module(sub, root):
                    found.append((node.lineno, sub))
                elif source == "irbench" and not alias.name.startswith("__"):
                    found.append((node.lineno, sub))  # a name of the lazy public API
                else:
                    found.append((node.lineno, source))
    if binds_root:  # `irbench.X` read through a bare `import irbench`
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "irbench" and not node.attr.startswith("__")):
                found.append((node.lineno, f"irbench.{node.attr}"))
    return sorted(set(found))


def _package(name: str) -> str | None:
    """The top-level package of irbench that `name` belongs to; None for the root itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _violations(root: Path = PACKAGE_ROOT) -> list[str]:
    """`module (line N) imports target` for every import that does not run downward."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        own = _package(module)
        if own is None:  # irbench/__init__.py: the lazy public API
            continue
        assert own in RANKS, f"{module}: package {own!r} has no rank in tests/test_layers.py"
        for line, target in _imports(path, root):
            other = _package(target)
            if other is None:  # the bare root package: only its dunders are read
                continue
            if other == own:
                continue
            if other not in RANKS:
                out.append(f"{module} (line {line}) imports {target} (a lazy public API name "
                           f"or an unranked module)")
            elif RANKS[other] >= RANKS[own]:
                out.append(f"{module} (line {line}) imports {target}")
    return out


def test_every_package_imports_only_lower_layers():
    violations = _violations()
    layers = " < ".join(" = ".join(p for p in RANKS if RANKS[p] == r)
                        for r in sorted(set(RANKS.values())))
    assert not violations, (f"imports that run upward or sideways between layers ({layers}):"
                            "\n  " + "\n  ".join(violations))


def test_the_checker_sees_hidden_relative_and_sideways_imports(tmp_path):
    """The walk finds an import inside a function, relative ones (from a subpackage too),
    one between the two packages of rank 3, and a lazy-API read; downward ones pass."""
    files = {
        "__init__.py": "from irbench.harness.runner import run\n",
        "errors.py": "",
        "core/__init__.py": "",
        "harness/__init__.py": "",
        "harness/runner.py": "",
        "results/__init__.py": "",
        "results/store.py": "",
        "methods/__init__.py": "",
        "methods/sift/__init__.py": "",
        "methods/sift/bow.py": ("from ...core import config\n"
                                "from ..base import Method\n"
                                "from irbench.results.store import write_record\n"),
        "methods/base.py": ("import irbench\n"
                            "from irbench.errors import ConfigError\n"
                            "def f():\n"
                            "    from ..harness import runner\n"
                            "    return irbench.run, irbench.__version__\n"),
    }
    for name, text in files.items():
        path = tmp_path / "irbench" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _violations(tmp_path / "irbench") == [
        "irbench.methods.base (line 4) imports irbench.harness.runner",
        "irbench.methods.base (line 5) imports irbench.run (a lazy public API name or an "
        "unranked module)",
        "irbench.methods.sift.bow (line 3) imports irbench.results.store",
    ]
