"""Revisited, Paris, Holidays, UKBench and distractor loaders on small made-up data."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import irbench.datasets as ds
from irbench.datasets.base import Image, split_segments
from irbench.datasets.catalog import PARIS_CORRUPT
from irbench.errors import DatasetError
from irbench.harness.evaluate import evaluate
from irbench.harness.runner import RunOptions, run
from tests.placeholders import write_images
from tests.tiny import MeanColor


def _write_revisited(root, name="roxford5k", images="oxford5k"):
    imlist = [f"img_{i:03d}" for i in range(12)]
    qimlist = ["q_a", "q_b"]
    gnd = [
        {"bbx": np.array([1.0, 2.0, 50.0, 40.0]), "easy": [0, 1], "hard": np.array([2]),
         "junk": [3]},
        {"bbx": [0, 0, 20, 20], "easy": [], "hard": [4, 5], "junk": []},
    ]
    (root / name).mkdir(parents=True, exist_ok=True)
    with open(root / name / f"gnd_{name}.pkl", "wb") as fh:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, fh)
    write_images([root / images / "jpg" / f"{n}.jpg" for n in imlist + qimlist])
    return imlist


def test_revisited_from_documented_schema(tmp_path):
    _write_revisited(tmp_path)
    d = ds.load("roxford5k", root=tmp_path)
    assert len(d.database) == 12 and len(d.queries) == 2
    assert d.queries[0].box == (1.0, 2.0, 50.0, 40.0) and d.queries[0].crop
    assert set(d.protocol.settings) == {"easy", "medium", "hard"}
    assert d.protocol.precision_at == (1, 5, 10)
    # a perfect Medium ranking for query 0: easy+hard first
    ranks = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                      [4, 5, 0, 1, 2, 3, 6, 7, 8, 9, 10, 11]])
    m = evaluate(ranks, d.ground_truth, d.protocol)
    assert m["settings"]["medium"]["map"] == pytest.approx(1.0)
    assert m["settings"]["hard"]["ap"][0] == pytest.approx(1.0)  # easy 0,1 are junk in Hard
    assert m["settings"]["easy"]["queries_without_positives"] == 1  # query 1 has no easy


def test_revisited_pickle_cannot_run_code(tmp_path):
    (tmp_path / "roxford5k").mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as fh:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": [Evil()]}, fh)
    with pytest.raises(DatasetError, match=r"gnd_roxford5k.pkl: not a readable .*posix.system"):
        ds.load("roxford5k", root=tmp_path)


def test_revisited_bad_index_names_file(tmp_path):
    _write_revisited(tmp_path)
    path = tmp_path / "roxford5k" / "gnd_roxford5k.pkl"
    data = pickle.loads(path.read_bytes())
    data["gnd"][1]["hard"] = [99]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError, match=r"gnd_roxford5k.pkl: gnd\[1\]\['hard'\]"):
        ds.load("roxford5k", root=tmp_path)


def _write_paris(root, corrupt):
    base = root / "paris6k"
    names = ["paris_defense_000001", "paris_defense_000002", "paris_eiffel_000003", corrupt]
    write_images([base / "jpg" / n.split("_")[1] / f"{n}.jpg" for n in names])
    (base / "jpg" / "louvre").mkdir(parents=True, exist_ok=True)
    (base / "gt").mkdir(parents=True)
    (base / "gt" / "defense_1_query.txt").write_text("paris_defense_000001 1 2 30 40\n")
    (base / "gt" / "defense_1_good.txt").write_text(f"paris_defense_000002\n{corrupt}\n")
    (base / "gt" / "defense_1_ok.txt").write_text("paris_defense_000001\n")
    (base / "gt" / "defense_1_junk.txt").write_text("paris_eiffel_000003\n")
    return base


def test_paris_drops_the_known_corrupt_images(tmp_path):
    corrupt = sorted(PARIS_CORRUPT)[0]
    _write_paris(tmp_path, corrupt)
    d = ds.load("paris6k", root=tmp_path)
    ids = [im.id for im in d.database]
    assert corrupt not in ids and len(ids) == 3
    assert {ids[i] for i in d.ground_truth[0]["positives"]} == {"paris_defense_000001",
                                                               "paris_defense_000002"}
    assert d.queries[0].box == (1.0, 2.0, 30.0, 40.0)


def test_paris_unknown_name_is_an_error(tmp_path):
    base = _write_paris(tmp_path, "paris_defense_000009")  # not a known-corrupt name
    (base / "jpg" / "defense" / "paris_defense_000009.jpg").unlink()
    with pytest.raises(DatasetError, match="defense_1_good.txt: paris_defense_000009"):
        ds.load("paris6k", root=tmp_path)


def _write_holidays(root, folder="jpg"):
    names = ["100000", "100001", "100002", "100100", "100101", "100200", "100201", "100202"]
    write_images([root / "holidays" / folder / f"{n}.jpg" for n in names], distinct=True)
    return names


def test_holidays_groups_and_query_exclusion(tmp_path):
    _write_holidays(tmp_path, "jpg_upright")
    d = ds.load("holidays", root=tmp_path)  # the upright copy by default
    assert d.root.name == "jpg_upright" and d.config == {}
    assert [q.id for q in d.queries] == ["100000", "100100", "100200"]
    assert d.protocol.exclude_query
    assert list(d.ground_truth[0]["positives"]) == [1, 2]
    # the query ranked first is ignored, not a position
    ranks = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [3, 4, 0, 1, 2, 5, 6, 7], [5, 6, 7, 0, 1, 2, 3, 4]])
    m = evaluate(ranks, d.ground_truth, d.protocol, [q.db_index for q in d.queries])
    assert m["settings"][""]["map"] == pytest.approx(1.0)


def test_holidays_orientation_default_and_missing_copies(tmp_path):
    from irbench.datasets.holidays import HolidaysConfig

    assert HolidaysConfig().orientation == "upright"
    _write_holidays(tmp_path)  # only the files as distributed
    with pytest.raises(DatasetError) as err:
        ds.load("holidays", root=tmp_path)
    message = str(err.value)
    assert "`bench data fetch holidays-upright`" in message
    assert "--dataset-option orientation=original" in message
    assert "holidays/jpg_upright/<nnnnnn>.jpg" in message  # the expected layout
    d = ds.load("holidays", root=tmp_path, orientation="original")
    assert d.root.name == "jpg" and d.config == {"orientation": "original"}
    assert [q.id for q in d.queries] == ["100000", "100100", "100200"]
    (tmp_path / "holidays" / "jpg_upright").mkdir()  # present but empty
    with pytest.raises(DatasetError, match="(?s)images.*bench data fetch holidays-upright"
                                           ".*orientation=original"):
        ds.load("holidays", root=tmp_path)
    _write_holidays(tmp_path / "other", "jpg_upright")  # only the upright copy
    assert ds.load("holidays", root=tmp_path / "other").root.name == "jpg_upright"
    with pytest.raises(DatasetError, match="bench data fetch holidays`") as err:
        ds.load("holidays", root=tmp_path / "other", orientation="original")
    assert "orientation=original" not in str(err.value)


def test_ukbench_groups_of_four(tmp_path):
    write_images([tmp_path / "ukbench" / "full" / f"ukbench{i:05d}.jpg" for i in range(8)])
    d = ds.load("ukbench", root=tmp_path)
    assert len(d.queries) == len(d.database) == 8 and d.protocol.ns_score
    assert list(d.ground_truth[5]["positives"]) == [4, 5, 6, 7]
    ranks = np.array([[4 * (i // 4) + j for j in range(4)] + [4 * (1 - i // 4) + j
                                                               for j in range(4)]
                      for i in range(8)])
    m = evaluate(ranks, d.ground_truth, d.protocol, [q.db_index for q in d.queries])
    assert m["ns_score"] == pytest.approx(4.0) and m["settings"][""]["map"] == pytest.approx(1.0)
    (tmp_path / "ukbench" / "full" / "ukbench00006.jpg").unlink()
    with pytest.raises(DatasetError, match="ukbench00006.jpg"):
        ds.load("ukbench", root=tmp_path)


def _oxford_like(root, name, prefix):
    base = root / name
    write_images([base / "jpg" / f"{prefix}_{i:06d}.jpg" for i in range(4)], distinct=True)
    (base / "gt").mkdir(parents=True)
    (base / "gt" / f"{prefix}_1_query.txt").write_text(f"{prefix}_000000 0 0 40 30\n")
    (base / "gt" / f"{prefix}_1_good.txt").write_text(f"{prefix}_000001\n")
    (base / "gt" / f"{prefix}_1_ok.txt").write_text("")
    (base / "gt" / f"{prefix}_1_junk.txt").write_text("")


def test_distractors_are_a_shared_segment_cached_once(tmp_path):
    _oxford_like(tmp_path, "oxford5k", "all_souls")
    _oxford_like(tmp_path, "paris6k", "paris_defense")
    write_images([tmp_path / "flickr100k" / "jpg" / f"part{i % 2}" / f"f{i}.jpg"
                  for i in range(6)], distinct=True)
    ox = ds.load("oxford105k", root=tmp_path)
    pa = ds.load("paris106k", root=tmp_path)
    assert len(ox.database) == 10 and ox.database[4].id == "flickr100k/part0/f0.jpg"
    assert [(s.name, s.start, s.stop) for s in ox.database.segments] == [("flickr100k@1", 4, 10)]
    assert [s for s, *_ in split_segments(ox.database)] == [None, ox.database.segments[0]]
    assert list(ox.ground_truth[0]["positives"]) == [1]  # base indices unchanged

    cache_dir = tmp_path / "cache"
    events = []
    for d in (ox, pa):
        record = run(MeanColor, d, RunOptions(cache_dir=cache_dir, results_dir=tmp_path / "r",
                                              workers=1))
        events.append([e["hit"] for e in record.cache_events
                       if e["kind"] == "mean-color/features"])
    # database (base), database (flickr100k), queries: the shared segment is reused
    assert events == [[False, False, False], [False, True, False]]

    # SIFT features of the shared segment too: extracted for oxford105k, reused for paris106k
    sift = []
    for d in (ox, pa):
        record = run("bow", d, RunOptions(cache_dir=cache_dir, results_dir=tmp_path / "r",
                                          workers=1),
                     {"vocabulary_size": 8, "vocabulary_source": "train"})
        sift.append([e["hit"] for e in record.cache_events if e["kind"] == "sift/features"])
    assert sift[0] == [False] * 4  # train, database (base), database (flickr100k), queries
    assert sift[1] == [False, False, True, False]  # flickr100k reused


def test_oxford_vocabulary_is_trained_on_paris_by_default(tmp_path):
    _oxford_like(tmp_path, "oxford5k", "all_souls")
    options = RunOptions(cache_dir=tmp_path / "cache", results_dir=None, workers=1)
    with pytest.raises(DatasetError, match="vocabulary_source=train"):  # paris6k absent
        run("bow", ds.load("oxford5k", root=tmp_path), options, {"vocabulary_size": 8})
    _oxford_like(tmp_path, "paris6k", "paris_defense")
    options.data_root = tmp_path
    record = run("bow", ds.load("oxford5k", root=tmp_path), options, {"vocabulary_size": 8})
    assert record.method_info["vocabulary_trained_on"] == "paris6k@1"
    assert record.method_info["vocabulary_independent_set"] == "paris6k"
    paris = ds.load("paris6k", root=tmp_path)
    assert record.method_info["n_training_images"] == len(paris.database)


def test_flickr_missing_says_how_to_import(tmp_path):
    _oxford_like(tmp_path, "oxford5k", "all_souls")
    with pytest.raises(DatasetError, match=r"bench data fetch flickr100k --from PATH"):
        ds.load("oxford105k", root=tmp_path)


def test_split_segments_covers_everything():
    from irbench.datasets.base import ImageList, Segment

    images = ImageList([Image(str(i), path=None) for i in range(7)],
                       [Segment("a", 2, 4), Segment("b", 5, 7)])
    parts = [(s.name if s else None, a, b) for s, a, b in split_segments(images)]
    assert parts == [(None, 0, 2), ("a", 2, 4), (None, 4, 5), ("b", 5, 7)]
    assert pickle.loads(pickle.dumps(images)).segments == images.segments
    with pytest.raises(ValueError):
        ImageList(images[:3], [Segment("c", 1, 9)])
