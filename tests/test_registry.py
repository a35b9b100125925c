from importlib import metadata

import pytest

from irbench.core import registry as reg
from irbench.core.registry import Registry, describe
from irbench.datasets.base import DatasetProvider
from irbench.datasets.registry import DATASETS, load_dataset
from irbench.errors import DuplicateNameError, UnknownNameError
from irbench.methods.base import Method
from irbench.methods.registry import METHODS, _validate_method, create_method


class A(Method):
    name = "alpha"


def test_builtins_load_through_entry_points():
    names = METHODS.names()
    assert "bow" in names
    assert {e.name: e.source for e in METHODS.entries()}["bow"] == "irbench"
    assert {"demo", "folder", "manifest"} <= set(DATASETS.names())


def test_duplicate_name_raises():
    r = Registry("method", None)
    r.register("alpha", A)
    with pytest.raises(DuplicateNameError, match="alpha"):
        r.register("alpha", A, source="other")


def test_unknown_name_suggests_closest():
    r = Registry("method", None)
    r.register("spatial-coding", A)
    r.register("geometric-coding", A)
    with pytest.raises(UnknownNameError) as err:
        r.get("spatial-codng")
    assert "Did you mean: spatial-coding" in str(err.value)


def test_registry_rejects_non_methods():
    with pytest.raises(TypeError):
        METHODS.register("x", object)


def _ep(name, value, group):
    return metadata.EntryPoint(name=name, value=value, group=group)


def test_broken_plugin_is_listed_and_others_work(monkeypatch):
    eps = [_ep("good", "tests.test_registry:A", "g"),
           _ep("bad", "no_such_module_xyz:Thing", "g"),
           _ep("good", "tests.test_registry:A", "g2")]  # a second distribution, same name
    monkeypatch.setattr(reg, "_entry_points", lambda group: eps)
    monkeypatch.setattr(reg, "_dist_name", lambda ep: "pkg-" + ep.group)
    r = Registry("method", "g", _validate_method)
    assert r.get("good") is A
    broken = {b.name: b for b in r.broken()}
    assert "ModuleNotFoundError" in broken["bad"].error
    assert any("registered twice" in b.error for b in r.broken())
    with pytest.raises(UnknownNameError, match="failed to load"):
        r.get("bad")
    data = describe(r)
    assert [m["name"] for m in data["methods"]] == ["good"]
    assert {b["name"] for b in data["broken"]} >= {"bad"}


def test_describe_lists_fields_with_defaults():
    data = describe(METHODS)
    bow = next(m for m in data["methods"] if m["name"] == "bow")
    assert bow["description"] and bow["fields"]
    assert all({"name", "default", "help"} <= set(f) for f in bow["fields"])


def test_dataset_argument_rules(tmp_path):
    with pytest.raises(Exception, match="needs an argument"):
        load_dataset("folder")
    with pytest.raises(UnknownNameError, match="Did you mean"):
        load_dataset("dmeo")
    assert issubclass(DATASETS.get("folder"), DatasetProvider)


def test_the_historical_import_path_still_works():
    """`irbench.harness.registry` re-exports the registries from their homes, for users."""
    from irbench.harness import registry as old

    assert old.METHODS is METHODS and old.DATASETS is DATASETS
    assert old.load_dataset is load_dataset and old.Registry is Registry
    assert old.create_method is create_method and old.describe is describe
