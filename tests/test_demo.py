"""The built-in `demo` dataset: counts, splits, boxes, ground truth, caching, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from irbench.core.config import build_config
from irbench.datasets import demo as demo_module
from irbench.datasets.base import Dataset
from irbench.datasets.demo import INDEX_NAME, DemoConfig, DemoDataset
from irbench.datasets.images import read_image
from irbench.datasets.signature import ImageSigner
from irbench.errors import ConfigError

SMALL = {"objects": 3, "train_views": 1, "query_views": 2, "database_views": 2,
         "distractors": 2, "width": 160, "height": 120}


def _provider(cache: Path, **options) -> DemoDataset:
    return DemoDataset(DemoConfig(**options), data_root=cache / "data", cache_dir=cache)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _same(a: Dataset, b: Dataset) -> None:
    assert (a.name, a.version, a.root, dict(a.config)) == (b.name, b.version, b.root,
                                                           dict(b.config))
    assert a.database == b.database and a.queries == b.queries and a.train == b.train
    assert a.protocol == b.protocol
    assert len(a.ground_truth) == len(b.ground_truth)
    for ta, tb in zip(a.ground_truth, b.ground_truth, strict=True):
        assert sorted(ta) == sorted(tb)
        for key in ta:
            assert np.array_equal(ta[key], tb[key])
    assert a.fingerprint(ImageSigner()) == b.fingerprint(ImageSigner())


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[DemoDataset, Dataset]:
    cache = tmp_path_factory.mktemp("demo-cache")
    provider = _provider(cache)
    return provider, provider.load()


def test_identity_and_location(generated):
    provider, ds = generated
    assert ds.name == "demo" and ds.config == {}
    assert ds.root == provider.folder() and ds.root.parent == provider.cache_dir / "demo"
    assert ds.version == ds.root.name and ds.version.startswith(demo_module.GENERATOR_VERSION + "-")
    assert (ds.root / INDEX_NAME).is_file()


def test_counts_and_splits(generated):
    _, ds = generated
    cfg = DemoConfig()
    objects = {q.label for q in ds.queries}
    assert len(objects) == cfg.objects >= 20
    views = Counter(im.label for im in (*ds.train, *ds.queries, *ds.database)
                    if im.label is not None)
    assert set(views) == objects and min(views.values()) >= 8
    queries = Counter(q.label for q in ds.queries)
    assert min(queries.values()) >= 2
    assert Counter(im.label for im in ds.train) == dict.fromkeys(objects, cfg.train_views)
    distractors = [im for im in ds.database if im.label is None]
    assert len(distractors) == cfg.distractors
    assert len(ds.database) == cfg.objects * cfg.database_views + cfg.distractors
    train_ids, train_files = {im.id for im in ds.train}, {im.path for im in ds.train}
    other = (*ds.database, *ds.queries)
    assert train_ids.isdisjoint(im.id for im in other)
    assert train_files.isdisjoint(im.path for im in other)
    assert {q.path for q in ds.queries}.isdisjoint(im.path for im in ds.database)
    all_ids = [im.id for im in (*ds.train, *ds.queries, *ds.database)]
    assert len(all_ids) == len(set(all_ids))


def test_boxes_inside_and_images_decode_at_size(generated):
    _, ds = generated
    cfg = DemoConfig()
    for im in (*ds.train, *ds.queries, *ds.database):
        image = read_image(im.path)
        assert image.shape == (cfg.height, cfg.width, 3), im.id
        if im.label is None:
            assert im.box is None
            continue
        x1, y1, x2, y2 = im.box
        assert 0 <= x1 < x2 <= cfg.width and 0 <= y1 < y2 <= cfg.height, im.id
        assert x2 - x1 >= 20 and y2 - y1 >= 20, im.id
        assert read_image(im.path, im.box).size > 0


def test_ground_truth_and_protocol(generated):
    _, ds = generated
    assert ds.protocol.crop_query and not ds.protocol.exclude_query
    assert ds.protocol.precision_at == (1, 5, 10) and ds.protocol.description
    assert list(ds.protocol.settings) == [""]
    for q, truth in zip(ds.queries, ds.ground_truth, strict=True):
        assert q.crop and q.crop_box == q.box and q.db_index is None and q.label
        expected = [i for i, im in enumerate(ds.database) if im.label == q.label]
        assert truth["positives"].tolist() == expected and len(expected) > 0
        assert truth["junk"].size == 0
    # The database is shuffled: an object's views are not one contiguous run.
    firsts = [truth["positives"] for truth in ds.ground_truth]
    assert any(np.any(np.diff(p) > 1) for p in firsts)


def test_reload_from_index_without_regenerating(generated, monkeypatch):
    provider, ds = generated
    stamps = {p: p.stat().st_mtime_ns for p in ds.root.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although index.json exists")

    monkeypatch.setattr(demo_module, "generate", fail)
    again = DemoDataset(DemoConfig(), data_root=provider.data_root,
                        cache_dir=provider.cache_dir).load()
    _same(ds, again)
    assert {p: p.stat().st_mtime_ns for p in ds.root.rglob("*") if p.is_file()} == stamps


def test_deterministic(tmp_path):
    a = _provider(tmp_path / "a", **SMALL).load()
    b = _provider(tmp_path / "b", **SMALL).load()
    assert a.root.name == b.root.name
    digests = _digests(a.root)
    assert digests == _digests(b.root) and INDEX_NAME in digests
    assert len(digests) == 1 + 3 * (1 + 2 + 2) + 2
    # Another seed gives other images.
    c = _provider(tmp_path / "c", **SMALL, seed=1).load()
    assert c.root.name != a.root.name
    other = _digests(c.root)
    assert set(other) == set(digests)
    assert all(other[k] != v for k, v in digests.items() if k != INDEX_NAME)


def test_partial_generation_is_regenerated(tmp_path):
    provider = _provider(tmp_path, **SMALL)
    ds = provider.load()
    good = _digests(ds.root)
    # An interrupted run: no index.json, one image truncated, another missing.
    (ds.root / INDEX_NAME).unlink()
    ds.database[0].path.write_bytes(ds.database[0].path.read_bytes()[:100])
    ds.train[0].path.unlink()
    again = _provider(tmp_path, **SMALL).load()
    _same(ds, again)
    assert _digests(ds.root) == good


@pytest.mark.parametrize("damage", ["corrupt", "missing-image", "changed-image"])
def test_damaged_index_is_regenerated(tmp_path, damage):
    ds = _provider(tmp_path, **SMALL).load()
    good = _digests(ds.root)
    if damage == "corrupt":
        (ds.root / INDEX_NAME).write_text('{"format": 1, "train": [')
    elif damage == "missing-image":
        ds.queries[0].path.unlink()
    else:  # same size, other bytes: a damaged image is never used
        data = bytearray(ds.database[1].path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        ds.database[1].path.write_bytes(bytes(data))
    again = _provider(tmp_path, **SMALL).load()
    _same(ds, again)
    assert _digests(ds.root) == good


def test_options_and_registry_load(tmp_path):
    from irbench.datasets import load

    ds = load("demo", objects="2", train_views="0", query_views="2", database_views="1",
              distractors="0", width="96", height="80")
    assert ds.config == {"objects": 2, "train_views": 0, "database_views": 1,
                         "distractors": 0, "width": 96, "height": 80}
    assert len(ds.database) == 2 and len(ds.queries) == 4 and ds.train == ()
    assert all(len(t["positives"]) == 1 for t in ds.ground_truth)
    assert ds.label.startswith("demo[")


def test_more_objects_than_the_catalogue_uses_patterns(tmp_path):
    n = len(demo_module.CATALOGUE) + 2
    ds = _provider(tmp_path, objects=n, train_views=0, query_views=1, database_views=1,
                   distractors=0, width=96, height=96).load()
    labels = [q.label for q in ds.queries]
    assert len(set(labels)) == n and labels[-1].startswith("pattern-")



def test_small_objects_among_clutter_objects(tmp_path):
    """object_scale=small: a small object (5-20% of the image's area) over clutter
    objects that are never instances; the default set keeps its folder and index."""
    base = dict(SMALL, width=320, height=240, database_views=6)
    large, small = _provider(tmp_path, **base), _provider(tmp_path, **base,
                                                          object_scale="small")
    assert large.folder().name == _provider(tmp_path / "other", **base).folder().name
    assert large.folder() != small.folder()
    ds_large, ds_small = large.load(), small.load()
    assert ds_small.config == {**ds_large.config, "object_scale": "small"}
    index = (ds_large.root / INDEX_NAME).read_text()
    assert "object_scale" not in index  # the default is left out, as before the option

    def box_share(ds):
        return np.median([(im.box[2] - im.box[0]) * (im.box[3] - im.box[1]) / (320 * 240)
                          for im in ds.database if im.box is not None])

    assert box_share(ds_small) < box_share(ds_large)
    assert {q.label for q in ds_small.queries} == {q.label for q in ds_large.queries}
    # the pixels outside the object's box differ more from a plain background in small
    # mode: clutter objects are there (a proxy: more strong edges outside the box)
    import cv2

    def edges_outside(ds):
        out = []
        for im in ds.database:
            if im.box is None:
                continue
            grey = cv2.cvtColor(read_image(im.path), cv2.COLOR_RGB2GRAY)
            e = cv2.Canny(grey, 100, 200) > 0
            x1, y1, x2, y2 = (int(v) for v in im.box)
            e[y1:y2, x1:x2] = False
            out.append(e.mean())
        return float(np.mean(out))

    assert edges_outside(ds_small) > edges_outside(ds_large)


def test_the_default_demo_keeps_its_identity():
    """The folder of the default demo set, on which the reference records were made:
    adding an option must not move it (that would orphan every cached artifact)."""
    assert demo_module._identity_hash(DemoConfig()) == "0f102931168d"

@pytest.mark.parametrize("field,value", [
    ("objects", 0), ("objects", 100000), ("query_views", 0), ("database_views", 0),
    ("train_views", -1), ("distractors", -1), ("width", 10), ("height", 0),
    ("max_rotation", -5.0), ("occlusion", 1.5), ("seed", -1), ("object_scale", "tiny"),
])
def test_bad_config_raises(field, value):
    with pytest.raises(ConfigError, match=field):
        DemoConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        build_config(DemoConfig, {field: str(value)}, owner="dataset 'demo'")


def test_config_fields_are_documented():
    for f in dataclasses.fields(DemoConfig):
        assert f.metadata.get("help"), f.name
    assert DemoDataset.name == "demo" and DemoDataset.description
    assert "\n" not in DemoDataset.description


def test_library_does_not_import_rich():
    source = Path(demo_module.__file__).read_text()
    assert "import rich" not in source and "from rich" not in source
    assert "print(" not in source


def test_generating_moves_a_bar_per_image(tmp_path):
    import contextlib

    from irbench.datasets.registry import load_dataset

    seen = []

    class Bar:
        @contextlib.contextmanager
        def task(self, description, total=None):
            seen.append((description, total))
            yield lambda n=1, status=None: seen.append(n)

    ds = load_dataset("demo", cache_dir=tmp_path, progress=Bar(),
                      options={"objects": 2, "distractors": 3, "database_views": 2})
    images = len(ds.database) + len(ds.queries) + len(ds.train)
    assert seen[0] == ("demo: generating images", images)
    assert seen[1:] == [1] * images  # one step per image written
