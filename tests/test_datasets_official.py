"""Loaders on the official ground-truth files, with placeholder images."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import scipy.io

import irbench.datasets as ds
from irbench.errors import DatasetError
from tests.conftest import OFFICIAL
from tests.placeholders import make_instre, make_oxford

pytestmark = pytest.mark.skipif(not OFFICIAL.is_dir(), reason="official fixtures not found")
GT = OFFICIAL / "oxford5k_gt"


def _names(path):
    return {x.strip() for x in path.read_text().splitlines() if x.strip()}


@pytest.fixture(scope="module")
def oxford_root(tmp_path_factory):
    return make_oxford(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def instre_root(tmp_path_factory):
    return make_instre(tmp_path_factory.mktemp("data"))


def test_oxford5k_matches_the_official_files(oxford_root):
    d = ds.load("oxford5k", root=oxford_root)
    assert len(d.queries) == 55
    ids = [im.id for im in d.database]
    assert len(set(ids)) == len(ids)
    for q, truth in zip(d.queries, d.ground_truth, strict=True):
        pos = {ids[i] for i in truth["positives"]}
        junk = {ids[i] for i in truth["junk"]}
        assert pos == _names(GT / f"{q.id}_good.txt") | _names(GT / f"{q.id}_ok.txt")
        assert junk == _names(GT / f"{q.id}_junk.txt")
        image, *box = (GT / f"{q.id}_query.txt").read_text().split()
        assert ids[q.db_index] == image.removeprefix("oxc1_")
        assert q.box == tuple(float(v) for v in box) and q.crop and q.crop_box == q.box
    first = d.queries[0]
    assert first.id == "all_souls_1"
    assert len(d.ground_truth[0]["positives"]) == 78  # the duplicate line counts once
    assert d.protocol.crop_query and not d.protocol.exclude_query


def test_oxford_train_split_is_the_55_query_crops(oxford_root):
    d = ds.load("oxford5k", root=oxford_root)
    assert len(d.train) == 55
    counts = collections.Counter(im.label for im in d.train)
    assert len(counts) == 11 and set(counts.values()) == {5}
    assert all(im.box is not None for im in d.train)


def test_oxford_gt_error_names_file_and_line(tmp_path):
    root = make_oxford(tmp_path, extra=0)
    (root / "oxford5k" / "gt" / "balliol_2_query.txt").write_text("oxc1_balliol_000051 1 2 x\n")
    with pytest.raises(DatasetError, match=r"balliol_2_query.txt, line 1"):
        ds.load("oxford5k", root=root)


def test_oxford_missing_image_is_named(tmp_path):
    root = make_oxford(tmp_path, extra=0)
    (root / "oxford5k" / "jpg" / "all_souls_000091.jpg").unlink()
    with pytest.raises(DatasetError, match=r"all_souls_1_good.txt: all_souls_000091"):
        ds.load("oxford5k", root=root)


def test_missing_dataset_names_layout_and_fetch_command(tmp_path):
    with pytest.raises(DatasetError) as err:
        ds.load("oxford5k", root=tmp_path)
    msg = str(err.value)
    assert "oxford5k/jpg/<name>.jpg" in msg and "bench data fetch oxford5k" in msg


def test_instre_standard_protocol(instre_root):
    d = ds.load("instre", root=instre_root)
    assert len(d.queries) == 1250 and len(d.database) == 27293
    mat = scipy.io.loadmat(OFFICIAL / "instre" / "gnd_instre.mat")
    for i in (0, 600, 1249):
        g = mat["gnd"][0][i]
        np.testing.assert_array_equal(d.ground_truth[i]["positives"],
                                      np.unique(g["ok"].ravel() - 1))
        assert d.queries[i].box == tuple(float(v) for v in g["bbx"].ravel())
        assert len(d.ground_truth[i]["junk"]) == 0
    assert d.queries[0].id == "INSTRE-S1/01a_canada_book/013.jpg"
    assert not {q.id for q in d.queries} & {im.id for im in d.database}


def test_instre_s_counts_and_fixed_train_split(instre_root):
    d = ds.load("instre-s", root=instre_root)
    assert len(d.queries) == 1000 and len(d.database) == 22070
    assert len({im.label for im in d.database}) == 200
    assert len(d.train) == 15000
    per_class = collections.Counter(im.label for im in d.train)
    assert len(per_class) == 200 and set(per_class.values()) == {75}
    again = ds.load("instre-s", root=instre_root)
    assert [im.id for im in again.train] == [im.id for im in d.train]
    other = ds.load("instre-s", root=instre_root, train_seed=1)
    assert [im.id for im in other.train] != [im.id for im in d.train]
    db_ids = {im.id for im in d.database}
    assert {im.id for im in d.train} <= db_ids  # train images stay in the database
    # boxes from the x y w h files
    first = d.train[0]
    x, y, w, h = (float(v) for v in first.path.with_suffix(".txt").read_text().split())
    assert first.box == (x, y, x + w, y + h)
    # positives are same-class database images
    labels = np.array([im.label for im in d.database])
    for q, t in zip(d.queries[::97], d.ground_truth[::97], strict=True):
        assert len(t["positives"]) > 0 and set(labels[t["positives"]]) == {q.label}


def test_instre_s_exclude_train(instre_root):
    full = ds.load("instre-s", root=instre_root)
    d = ds.load("instre-s", root=instre_root, exclude_train=True)
    assert len(d.database) == 22070 - 15000 and len(d.train) == 15000
    assert not {im.id for im in d.train} & {im.id for im in d.database}
    full_ids = [im.id for im in full.database]
    ids = [im.id for im in d.database]
    train_ids = {im.id for im in full.train}
    for t_full, t in zip(full.ground_truth[:50], d.ground_truth[:50], strict=True):
        expected = {full_ids[i] for i in t_full["positives"]} - train_ids
        assert {ids[i] for i in t["positives"]} == expected


def test_instre_missing_image_is_an_error(tmp_path):
    root = make_instre(tmp_path)
    (root / "instre" / "INSTRE-S2" / sorted(p.name for p in (root / "instre" / "INSTRE-S2")
                                            .iterdir())[0] / "001.jpg").unlink()
    with pytest.raises(DatasetError, match="missing under"):
        ds.load("instre", root=root)
