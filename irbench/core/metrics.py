"""Retrieval metrics: AP, mP@k and the N-S score, vectorized over queries; the one AP in irbench."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "average_precision",
    "average_precision_batch",
    "mean_ignoring_nan",
    "ns_score",
    "precision_at_k",
]


def as_ranks(ranks: np.ndarray) -> np.ndarray:
    """`ranks` as int64 (queries x depth); ValueError when it is not 2-D or not integer."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be 2-D (queries x depth), got shape {ranks.shape}")
    if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"ranks must hold integer database indices, got dtype {ranks.dtype}")
    return ranks.astype(np.int64, copy=False)


_TABLE_BYTES = 1 << 24
"""Size of the dense (query chunk x database) lookup table used to build membership flags."""


def _flags(
    ranks: np.ndarray, families: Sequence[Sequence[Iterable[int] | np.ndarray]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Membership flags of each ranked entry and the size of each query's sets.

    `flags[q, r]` has bit f set when `ranks[q, r]` is in `families[f][q]`; -1 padding has no
    bit. Sets are marked in a dense uint8 (queries x database) table, a chunk of queries at
    a time (at most 16 MiB), and read back with one gather. Sizes count duplicates once.
    """
    nq, depth = ranks.shape
    flat_sets = []
    for sets in families:
        if len(sets) != nq:
            raise ValueError(f"{len(sets)} ground-truth sets for {nq} ranked queries")
        arrays = [np.asarray(s if isinstance(s, np.ndarray) else list(s), np.int64).reshape(-1)
                  for s in sets]
        lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=nq)
        values = np.concatenate(arrays) if nq else np.empty(0, np.int64)
        if values.size and values.min() < 0:
            raise ValueError("ground-truth indices must be non-negative")
        flat_sets.append((np.repeat(np.arange(nq, dtype=np.int64), lengths), values))
    n = 1 + max([int(ranks.max(initial=0))] + [int(v.max(initial=-1)) for _, v in flat_sets])
    sizes = [np.bincount(np.unique(q * n + v) // n, minlength=nq) for q, v in flat_sets]
    flags = np.empty((nq, depth), np.uint8)
    valid = ranks >= 0
    padded = not valid.all()
    chunk = max(1, _TABLE_BYTES // n)
    table = np.zeros(min(chunk, nq) * n, np.uint8)
    for lo in range(0, nq, chunk):
        hi = min(lo + chunk, nq)
        marked = []
        for bit, (q, v) in enumerate(flat_sets):
            sel = slice(*np.searchsorted(q, [lo, hi]))
            at = (q[sel] - lo) * n + v[sel]
            table[at] |= np.uint8(1 << bit)
            marked.append(at)
        rows = np.arange(hi - lo, dtype=np.int64)[:, None] * n
        idx = np.where(valid[lo:hi], ranks[lo:hi], 0) if padded else ranks[lo:hi]
        table.take(rows + idx, out=flags[lo:hi])
        for at in marked:
            table[at] = 0
    if padded:
        flags[~valid] = 0
    return flags, sizes


def _hits(
    ranks: np.ndarray, positives: Sequence[Iterable[int]], junk: Sequence[Iterable[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The retrieved (nonjunk) positives, in row-major order, and the positive-set sizes.

    Returns (query, position, n, n_pos): for each hit its query, its 1-based position in the
    ranking once junk and padding are removed, and which hit of its query it is (1-based);
    then P of every query.
    """
    flags, (n_pos, _) = _flags(ranks, (positives, junk))
    counted = (ranks >= 0) & (flags & 2 == 0)
    query, col = np.nonzero(flags == 1)
    if query.size:
        position = np.cumsum(counted, axis=1, dtype=np.int64)[query, col]
    else:
        position = np.empty(0, np.int64)
    per_query = np.bincount(query, minlength=ranks.shape[0])
    first = np.cumsum(per_query) - per_query
    n = np.arange(1, query.size + 1, dtype=np.int64) - first[query]
    return query, position, n, n_pos


def average_precision_batch(
    ranks: np.ndarray,
    positives: Sequence[Iterable[int] | np.ndarray],
    junk: Sequence[Iterable[int] | np.ndarray],
) -> np.ndarray:
    """AP of each query: the official Oxford `compute_ap.cpp` (Philbin et al., CVPR 2007).

    `ranks[q]` lists database indices best first, possibly truncated to the top k; -1 is
    padding (no result) and, like junk, is skipped and takes no position. Positives and
    junk are sets (duplicates count once); an index in both is skipped as junk but still
    counts in the number of positives P, as in the official program. AP is the trapezoid
    rule over the nonjunk ranking: each retrieved positive at 0-based position j, being the
    n-th, adds (1/P) * (prec_old + prec_new) / 2 with prec_new = n / (j + 1) and
    prec_old = (n - 1) / j (1 when j == 0). Unretrieved positives add nothing. NaN where
    P == 0. Returns float64[nq].
    """
    ranks = as_ranks(ranks)
    query, position, n, n_pos = _hits(ranks, positives, junk)
    j = position - 1
    prec_old = np.where(j == 0, 1.0, (n - 1) / np.maximum(j, 1))
    total = np.bincount(query, weights=prec_old + n / position, minlength=ranks.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = total / (2.0 * n_pos)
    ap[n_pos == 0] = np.nan
    return ap


def average_precision(
    ranking: Sequence[int] | np.ndarray, positives: Iterable[int], junk: Iterable[int] = ()
) -> float:
    """AP of one ranking (official Oxford `compute_ap.cpp`); see `average_precision_batch`."""
    ranks = np.asarray(ranking, dtype=np.int64).reshape(1, -1)
    return float(average_precision_batch(ranks, [list(positives)], [list(junk)])[0])


def precision_at_k(
    ranks: np.ndarray,
    positives: Sequence[Iterable[int] | np.ndarray],
    junk: Sequence[Iterable[int] | np.ndarray],
    ks: Sequence[int],
) -> np.ndarray:
    """Precision at each k, the revisited `compute_map` (Radenović et al., CVPR 2018).

    Junk (and -1 padding) is removed from the ranking first; `pos` are the 1-based positions
    of the retrieved positives in what remains. Then kq = min(max(pos), k) and
    P@k = #(pos <= kq) / kq. So when every positive appears before rank k, the precision is
    taken at the last positive, not at k (P / max(pos), not P / k). With a truncated
    ranking, max(pos) is +infinity if any positive (including one that is also junk) was
    not retrieved, so kq = k. No positive retrieved: 0. No positives at all: NaN.
    Returns float64[nq, len(ks)].
    """
    ranks = as_ranks(ranks)
    ks_arr = np.asarray(ks, dtype=np.int64).reshape(-1)
    if ks_arr.size and ks_arr.min() < 1:
        raise ValueError(f"precision_at k values must be >= 1, got {list(ks)}")
    nq = ranks.shape[0]
    query, position, _, n_pos = _hits(ranks, positives, junk)
    n_hit = np.bincount(query, minlength=nq)
    max_pos = np.zeros(nq, np.int64)
    np.maximum.at(max_pos, query, position)
    all_found = (n_hit >= n_pos) & (n_pos > 0)
    kq = np.where(all_found[:, None], np.minimum(max_pos[:, None], ks_arr[None, :]),
                  ks_arr[None, :])
    out = np.empty((nq, ks_arr.size))
    for c in range(ks_arr.size):
        out[:, c] = np.bincount(query, weights=position <= kq[query, c], minlength=nq) / kq[:, c]
    out[n_pos == 0] = np.nan
    return out


def precision_known(
    ranks: np.ndarray,
    positives: Sequence[Iterable[int] | np.ndarray],
    junk: Sequence[Iterable[int] | np.ndarray],
    ks: Sequence[int],
) -> np.ndarray:
    """Whether `precision_at_k` of a *truncated* ranking is exact, bool[nq, len(ks)]: it
    is when every positive was retrieved, or when the ranking holds at least k entries
    that are neither junk nor padding (else the positions after the ranking's end, which
    P@k would count, are unknown)."""
    ranks = as_ranks(ranks)
    ks_arr = np.asarray(ks, dtype=np.int64).reshape(-1)
    flags, (n_pos, _) = _flags(ranks, (positives, junk))
    counted = ((ranks >= 0) & (flags & 2 == 0)).sum(axis=1)
    found = ((flags == 1) & (ranks >= 0)).sum(axis=1)
    all_found = found >= n_pos
    return all_found[:, None] | (counted[:, None] >= ks_arr[None, :])


def ns_score(ranks: np.ndarray, relevant: Sequence[Iterable[int] | np.ndarray]) -> np.ndarray:
    """UKBench N-S score (Nistér and Stewénius, CVPR 2006) of each query.

    The number of `relevant[q]` indices (the group's 4 images, query included) among the
    first 4 entries of the raw ranking: no junk skipping; -1 padding is never relevant.
    Returns float64[nq] in [0, 4].
    """
    ranks = as_ranks(ranks)
    flags, _ = _flags(ranks[:, :4], (relevant,))
    return flags.sum(axis=1, dtype=np.int64).astype(np.float64)


def mean_ignoring_nan(values: Sequence[float] | np.ndarray) -> tuple[float, int, int]:
    """(mean over non-NaN values, how many were used, how many were NaN); mean NaN if none."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = ~np.isnan(values)
    used = int(ok.sum())
    mean = float(values[ok].mean()) if used else float("nan")
    return mean, used, int(values.size - used)
