"""Arrays too large to hold in memory: a read-only concatenation of (memory-mapped) parts.

A dataset made of segments (Oxford105k is Oxford5k plus 100,000 shared distractors) has
its per-image artifacts cached per segment, so that the distractors' are computed once
for every dataset that uses them. `ConcatRows` presents the segments' arrays as one,
along the first axis, without copying them: a slice copies only the rows it covers, so a
computation that walks the rows in blocks needs memory for one block, whatever the total.
Anything else (`np.asarray`, arithmetic) materialises the whole array, as numpy would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ConcatRows", "concat_rows"]


class ConcatRows:
    """Read-only rows of `parts` (arrays of one dtype and row shape) one after another."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            raise ValueError("ConcatRows needs at least one part")
        first = parts[0]
        for p in parts[1:]:
            if p.dtype != first.dtype or p.shape[1:] != first.shape[1:]:
                raise ValueError(f"cannot concatenate rows of {p.dtype}{p.shape[1:]} to "
                                 f"rows of {first.dtype}{first.shape[1:]}")
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.dtype = first.dtype
        self.shape = (int(self.starts[-1]), *first.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ConcatRows({self.dtype}{self.shape}, {len(self.parts)} parts)"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(self.parts, axis=0)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, slice):
            out = self._rows(*self._bounds(key))
        elif isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            part = int(np.searchsorted(self.starts, i, side="right")) - 1
            out = self.parts[part][i - self.starts[part]]
        else:
            out = self._gather(np.asarray(key))
        return out[(slice(None), *rest)] if rest and not isinstance(key, (int, np.integer)) \
            else (out[rest] if rest else out)

    def _bounds(self, key: slice) -> tuple[int, int]:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("ConcatRows slices must have step 1")
        return start, max(start, stop)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): a view when they lie in one part, else a copy of them."""
        pieces = []
        for part, lo in zip(self.parts, self.starts[:-1], strict=True):
            a, b = max(start - lo, 0), min(stop - lo, len(part))
            if a < b:
                pieces.append(part[a:b])
        if len(pieces) == 1:
            return pieces[0]
        if not pieces:
            return self.parts[0][:0]
        return np.concatenate(pieces, axis=0)

    def _gather(self, index: np.ndarray) -> np.ndarray:
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index of shape {index.shape} for {len(self)} rows")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        index = np.where(index < 0, index + len(self), index)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        part_of = np.searchsorted(self.starts, index, side="right") - 1
        for p in np.unique(part_of):
            where = np.flatnonzero(part_of == p)
            out[where] = self.parts[p][index[where] - self.starts[p]]
        return out


def concat_rows(parts: Sequence[np.ndarray]) -> np.ndarray | ConcatRows:
    """The parts as one array: the only non-empty part itself, else a `ConcatRows`."""
    nonempty = [p for p in parts if len(p)]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else parts[0]
    return ConcatRows(nonempty)
