"""ConcatRows: segments' arrays used as one without copying them."""

import numpy as np
import pytest

from irbench.core.arrays import ConcatRows, concat_rows
from irbench.core.cache import iter_blocks


@pytest.fixture
def parts(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (n, 3), dtype=np.uint8) for n in (5, 0, 7, 2)]
    mapped = []
    for i, a in enumerate(arrays):
        np.save(tmp_path / f"{i}.npy", a)
        mapped.append(np.load(tmp_path / f"{i}.npy", mmap_mode="r") if len(a) else a)
    return arrays, mapped


def test_rows_read_like_the_concatenation(parts):
    arrays, mapped = parts
    whole = np.concatenate(arrays)
    rows = ConcatRows(mapped)
    assert rows.shape == whole.shape and rows.dtype == whole.dtype and len(rows) == 14
    for key in (slice(None), slice(3, 9), slice(5, 12), slice(13, 40), slice(-4, None),
                slice(6, 6), 0, 4, 5, 13, -1, np.array([13, 0, 5, 5, 12]), [2, 11],
                np.arange(14) % 3 == 0, (slice(2, 10), 1), (7, 2)):
        assert np.array_equal(np.asarray(rows[key]), whole[key]), key
    assert np.array_equal(np.asarray(rows), whole)
    assert np.array_equal(np.concatenate(list(iter_blocks(rows, 4))), whole)


def test_bad_keys_and_parts_are_refused(parts):
    _, mapped = parts
    rows = ConcatRows(mapped)
    with pytest.raises(IndexError):
        rows[14]
    with pytest.raises(IndexError):
        rows[np.array([0, 14])]
    with pytest.raises(IndexError, match="step 1"):
        rows[::2]
    with pytest.raises(ValueError, match="cannot concatenate"):
        ConcatRows([np.zeros((2, 3), np.uint8), np.zeros((2, 4), np.uint8)])


def test_concat_rows_returns_a_lone_part_itself(parts):
    _, mapped = parts
    assert concat_rows([mapped[1], mapped[0]]) is mapped[0]
    assert isinstance(concat_rows(mapped), ConcatRows)
