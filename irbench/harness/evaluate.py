"""The one evaluator: rankings + ground truth + protocol -> a JSON-able metrics dict."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from irbench.core.cache import iter_blocks
from irbench.core.metrics import (
    as_ranks,
    average_precision_batch,
    mean_ignoring_nan,
    ns_score,
    precision_at_k,
    precision_known,
)
from irbench.datasets.base import Protocol, QueryTruth

__all__ = ["evaluate"]


def _union(truth: QueryTruth, names: Sequence[str]) -> np.ndarray:
    """Union of the named sets of one query (a name it lacks is empty)."""
    parts = [truth[name] for name in names]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def _blocks(ranks: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """The rows of `ranks`, `block` at a time (int64 copies; an in-memory ranking of one
    block is passed as it is)."""
    if block >= len(ranks) and not isinstance(ranks, np.memmap):
        yield as_ranks(ranks)
        return
    for rows in iter_blocks(ranks, block):
        yield as_ranks(rows)


def _per_block(ranks: np.ndarray, block: int, fn: Callable[..., np.ndarray],
               per_query: Sequence[Sequence[Any]], extra: Sequence[Any],
               empty: np.ndarray) -> np.ndarray:
    """`fn(rows, *(q[a:b] for q in per_query), *extra)` for each block of rows [a, b) of
    `ranks`, concatenated (the per-query results of every block, in order)."""
    out, start = [], 0
    for rows in _blocks(ranks, block):
        end = start + len(rows)
        out.append(fn(rows, *(q[start:end] for q in per_query), *extra))
        start = end
    return np.concatenate(out) if out else empty


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def evaluate(
    ranks: np.ndarray,
    ground_truth: Sequence[QueryTruth],
    protocol: Protocol,
    query_db_index: Sequence[int | None] | None = None,
    database_size: int | None = None,
    *,
    block: int | None = None,
) -> dict[str, Any]:
    """Evaluate rankings under a dataset's protocol.

    `ranks` may be memory-mapped: with `block`, it is read `block` queries at a time
    (`iter_blocks`), so that evaluating a full-depth ranking of a million-image database
    needs memory for one block of rows, not for all. Every metric is a function of each
    query's row alone, so the result is the same whatever the block.

    `ranks[q]` are database indices best first (the top `depth`; -1 is padding). For each
    setting of `protocol.settings`, positives and junk are the unions of the named
    ground-truth sets; with `protocol.exclude_query` the query's own database index (if
    any) is junk and never a positive (Holidays rule). Returns

        {"depth": int,
         "settings": {name: {"map": float | None, "precision_at": {"k": float | None},
                             "ap": [float | None per query], "queries_evaluated": int,
                             "queries_without_positives": int}},
         "ns_score": float}            # only with protocol.ns_score

    Queries without positives have AP None and are excluded from the means (and counted);
    a mean over no query is None. The N-S score uses the first setting's positives plus
    the query's database index, on the raw ranking.

    When `database_size` says the ranking is truncated (depth < database size), AP counts
    the positives retrieved within the depth (a lower bound, as in `average_precision`),
    but an mP@k that the depth cannot determine (`precision_known`: k beyond the known
    non-junk positions of a query whose positives were not all retrieved) is None rather
    than an underestimate, and so is the N-S score when the depth is below 4.
    """
    if not (isinstance(ranks, np.ndarray) and ranks.ndim == 2
            and (not ranks.size or np.issubdtype(ranks.dtype, np.integer))):
        ranks = as_ranks(ranks)  # raises the error that says what is wrong
    nq = len(ground_truth)
    if ranks.shape[0] != nq:
        raise ValueError(
            f"ranks has {ranks.shape[0]} rows but there are {nq} ground-truth entries "
            "(one row per query expected)"
        )
    if query_db_index is None:
        query_db_index = [None] * nq
    elif len(query_db_index) != nq:
        raise ValueError(
            f"query_db_index has {len(query_db_index)} entries for {nq} queries"
        )
    block = max(1, int(block or nq or 1))
    if any(b.size and b.min() < -1 for b in _blocks(ranks, block)):
        raise ValueError("ranks may only hold database indices >= 0, or -1 as padding")
    truncated = database_size is not None and ranks.shape[1] < database_size

    out: dict[str, Any] = {"depth": int(ranks.shape[1]), "settings": {}}
    ns_relevant: list[np.ndarray] | None = None
    for name, setting in protocol.settings.items():
        positives = [_union(t, setting.positives) for t in ground_truth]
        junk = [_union(t, setting.junk) for t in ground_truth]
        if ns_relevant is None:
            ns_relevant = [
                p if qi is None else np.union1d(p, [qi])
                for p, qi in zip(positives, query_db_index, strict=True)
            ]
        if protocol.exclude_query:
            for i, qi in enumerate(query_db_index):
                if qi is not None:
                    positives[i] = positives[i][positives[i] != qi]
                    junk[i] = np.union1d(junk[i], [qi])
        ap = _per_block(ranks, block, average_precision_batch, (positives, junk), (),
                        np.zeros(0))
        mean_ap, used, excluded = mean_ignoring_nan(ap)
        precision: dict[str, float | None] = {}
        if protocol.precision_at:
            ks = protocol.precision_at
            empty = np.zeros((0, len(ks)))
            prec = _per_block(ranks, block, precision_at_k, (positives, junk), (ks,), empty)
            known = (_per_block(ranks, block, precision_known, (positives, junk), (ks,),
                                empty.astype(bool))
                     if truncated else np.ones(prec.shape, bool))
            has_positives = ~np.isnan(prec[:, 0]) if len(prec) else np.zeros(0, bool)
            for col, k in enumerate(protocol.precision_at):
                exact = bool(known[has_positives, col].all())
                precision[str(k)] = (_or_none(mean_ignoring_nan(prec[:, col])[0])
                                     if exact else None)
        out["settings"][name] = {
            "map": _or_none(mean_ap),
            "precision_at": precision,
            "ap": [_or_none(v) for v in ap.tolist()],
            "queries_evaluated": used,
            "queries_without_positives": excluded,
        }
    if protocol.ns_score:
        relevant = ns_relevant if ns_relevant is not None else [
            np.empty(0, np.int64) if qi is None else np.asarray([qi], np.int64)
            for qi in query_db_index
        ]
        scores = _per_block(ranks, block, ns_score, (relevant,), (), np.zeros(0))
        out["ns_score"] = (None if truncated and ranks.shape[1] < 4
                           else float(scores.mean()) if nq else 0.0)
    return out
