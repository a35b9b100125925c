import json

import numpy as np
import pytest

from irbench.datasets import load
from irbench.datasets.signature import ImageSigner
from irbench.errors import DatasetError
from tests.tiny import make_folder, make_manifest


def test_folder_dataset(tmp_path):
    make_folder(tmp_path / "photos", classes=3, per_class=3)
    ds = load(f"folder:{tmp_path / 'photos'}")
    assert len(ds.database) == 9 and len(ds.queries) == 9
    assert ds.protocol.exclude_query
    q0 = ds.queries[0]
    assert q0.db_index == 0
    pos = ds.ground_truth[0]["positives"].tolist()
    assert pos == [1, 2]  # same folder, the query itself excluded
    assert ds.version == load(f"folder:{tmp_path / 'photos'}").version


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "one" / "a").mkdir(parents=True)
    make_folder(tmp_path / "one", classes=1, per_class=1)
    with pytest.raises(DatasetError, match="at least 2"):
        load(f"folder:{tmp_path / 'one'}")


def test_manifest_dataset(tmp_path):
    path = make_manifest(tmp_path)
    ds = load(f"manifest:{path}")
    assert ds.name == "tiny" and len(ds.database) == 12 and len(ds.queries) == 4
    assert ds.queries[1].crop and ds.queries[1].crop_box == (4.0, 4.0, 60.0, 60.0)
    assert ds.ground_truth[1]["positives"].tolist() == [3, 4, 5]
    assert ds.protocol.precision_at == (1, 3) and not ds.protocol.exclude_query


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["queries"][0].update(positives=["nope.png"]), "not in the database"),
    (lambda d: d["queries"][0].update(box=[5, 5, 1, 1]), "empty"),
    (lambda d: d.pop("database"), "database"),
    (lambda d: d["database"].append(d["database"][0]), "duplicate id"),
])
def test_manifest_errors_name_file_and_entry(tmp_path, mutate, message):
    path = make_manifest(tmp_path)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as err:
        load(f"manifest:{path}")
    assert str(path) in str(err.value) and message in str(err.value)


def test_manifest_bad_json_names_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"database": [\n  "a.png",\n  oops]}')
    with pytest.raises(DatasetError, match="line 3"):
        load(f"manifest:{path}")


def test_fingerprint_changes_with_images(tmp_path):
    path = make_manifest(tmp_path)
    a = load(f"manifest:{path}").fingerprint(ImageSigner())
    doc = json.loads(path.read_text())
    doc["database"] = doc["database"][:-1]
    doc["queries"][-1]["positives"] = doc["queries"][-1]["positives"][:-1]
    path.write_text(json.dumps(doc))
    assert load(f"manifest:{path}").fingerprint(ImageSigner()) != a
    assert isinstance(np.asarray(load(f"manifest:{path}").ground_truth[0]["junk"]), np.ndarray)


def _set(entry: dict, **values) -> None:
    entry.update(values)


@pytest.mark.parametrize("mutate,where,message", [
    (lambda d: _set(d["queries"][0], box=[0, 0, float("nan"), 10]), "queries[0]",
     "box [0, 0, NaN, 10] is not finite"),
    (lambda d: _set(d["queries"][0], box=[0, 0, float("inf"), 10]), "queries[0]", "not finite"),
    (lambda d: _set(d["database"][2], box=[0, 0, 10**400, 10]), "database[2]", "not finite"),
    (lambda d: _set(d["queries"][1], box=[True, False, 50, 50]), "queries[1]",
     "four numbers, got [true, false, 50, 50]"),
    (lambda d: _set(d["queries"][0], box=[1, 2, 3]), "queries[0]", "four numbers"),
    (lambda d: _set(d["queries"][0], box="0 0 10 10"), "queries[0]", "four numbers"),
    (lambda d: _set(d["protocol"], crop_query="no"), "protocol.crop_query",
     'must be true or false, got "no"'),
    (lambda d: _set(d["protocol"], exclude_query=0), "protocol.exclude_query",
     "must be true or false, got 0"),
    (lambda d: _set(d["protocol"], precision_at=[True, 5]), "protocol.precision_at",
     "positive integers"),
    (lambda d: _set(d["protocol"], crop_queries=False), "protocol",
     "unknown key 'crop_queries' (did you mean 'crop_query'?)"),
    (lambda d: _set(d["queries"][2], bbox=[0, 0, 9, 9]), "queries[2]",
     "unknown key 'bbox' (did you mean 'box'?)"),
    (lambda d: _set(d, name=["x"]), "name", 'must be a non-empty string, got ["x"]'),
    (lambda d: _set(d, version=["1"]), "version", "string"),
    (lambda d: _set(d, version=2), "version", 'write "2", not 2'),
    (lambda d: _set(d, root=3), "root", "string"),
    (lambda d: _set(d["database"][0], id=7), "database[0].id", "string, got 7"),
    (lambda d: _set(d["database"][0], path=["a.png"]), "database[0].path", "string"),
    (lambda d: _set(d["database"][0], label=3), "database[0].label", "string, got 3"),
    (lambda d: d["queries"].append(dict(d["queries"][0])), "queries[4]",
     "duplicate id 'q/c0.png' (also queries[0])"),
    (lambda d: _set(d, queries=[]), "queries", "has no queries"),
    (lambda d: (_set(d, database=[]), [_set(q, positives=[]) for q in d["queries"]]),
     "database", "database is empty"),
    (lambda d: (_set(d["database"][0], id="1"), _set(d["queries"][0], positives=[1])),
     "queries[0].positives[0]", "must be a database id (a string), got 1"),
    (lambda d: _set(d["queries"][0], junk=[None]), "queries[0].junk[0]", "got null"),
    (lambda d: _set(d, train="t.png"), "train", "not a list"),
], ids=["box-nan", "box-inf", "box-huge-int", "box-booleans", "box-3-numbers", "box-string",
        "crop-query-string", "exclude-query-number", "precision-at-boolean",
        "protocol-unknown-key", "query-unknown-key", "name-list", "version-list",
        "version-number", "root-number", "id-number", "path-list", "label-number",
        "duplicate-query-id", "no-queries", "empty-database", "positive-number", "junk-null",
        "train-string"])
def test_manifest_values_are_checked_not_coerced(tmp_path, mutate, where, message):
    path = make_manifest(tmp_path)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as err:
        load(f"manifest:{path}")
    text = str(err.value)
    assert text.startswith(f"manifest {path}: {where}: "), text
    assert message in text and "\n" not in text


def test_manifest_error_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from irbench.cli.main import cli

    path = make_manifest(tmp_path)
    doc = json.loads(path.read_text())
    doc["queries"] = []
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["run", "-m", "bow", "-d", f"manifest:{path}",
                                      "--no-record", "-q"])
    assert result.exit_code == 2
    assert result.output == f"error: manifest {path}: queries: the manifest has no queries; " \
                            "list at least one\n"
