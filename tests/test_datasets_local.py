import json

import numpy as np
import pytest

from irbench.datasets import load
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
    a = load(f"manifest:{path}").fingerprint()
    doc = json.loads(path.read_text())
    doc["database"] = doc["database"][:-1]
    doc["queries"][-1]["positives"] = doc["queries"][-1]["positives"][:-1]
    path.write_text(json.dumps(doc))
    assert load(f"manifest:{path}").fingerprint() != a
    assert isinstance(np.asarray(load(f"manifest:{path}").ground_truth[0]["junk"]), np.ndarray)
