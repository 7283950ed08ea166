"""Stable orders of keys, found with numpy's fastest sort.

The engine orders rows by a key with ties by row (the margin screen's headrooms, the ADL
queue's scores). numpy's stable sort (``kind="stable"``, a merge sort for floats and wide
integers) took four to six times as long as its default sort at 10^4 to 10^5 keys on the
machine of docs/performance-log.md ("The same machine, later"), where numpy vectorises the default
with AVX-512 (an introsort elsewhere, still quicker than a merge sort); but the default sort
leaves equal keys in no particular order.
:func:`stable_argsort` sorts with the default and then puts equal keys back in the order a
stable sort gives them: when no two keys are equal (headrooms and scores of accounts drawn at
random, the common case) the default's order is already the stable one, and the check costs a
gather and a comparison; otherwise each key is replaced by its rank among the distinct keys
and the pairs (rank, tie-breaker) are sorted as one integer, again with the default sort.
"""

from __future__ import annotations

import numpy as np

__all__ = ["run_labels", "run_starts", "stable_argsort", "union_of_sorted"]


def stable_argsort(keys, ties=None) -> np.ndarray:
    """``np.argsort(keys, kind="stable")``, or ``np.lexsort((ties, keys))`` when ``ties`` is
    given: the indices that order ``keys`` (1-D), equal keys by their index or by ``ties``.

    NaNs sort last and tie with each other, as numpy sorts them; ``-0.0`` ties with ``0.0``.

    Args:
        keys: (k,) floats or integers.
        ties: (k,) distinct non-negative integers that order equal keys (book rows), or None
            for the keys' own indices.

    Returns:
        (k,) int64 indices into ``keys``.
    """
    keys = np.asarray(keys)
    k = keys.size
    order = np.argsort(keys)  # numpy's default (vectorised) sort: equal keys in any order
    if k < 2:
        return order
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    if keys.dtype.kind == "f":  # NaNs (sorted last) are equal to each other for a sort
        if np.isnan(ordered[-1]):
            nan = np.isnan(ordered)
            same |= nan[1:] & nan[:-1]
    if not same.any():  # distinct keys: the one order, whatever the sort
        return order
    rank = np.zeros(k, dtype=np.int64)
    np.cumsum(~same, out=rank[1:])  # each sorted key's rank among the distinct keys
    if ties is None:  # (rank, index) as one integer: rank k + index < k^2 fits in int64
        return np.sort(rank * k + order) % k
    ties = np.asarray(ties, dtype=np.int64)
    span = int(ties.max()) + 1
    if span > (np.iinfo(np.int64).max - span) // k:  # (rank, tie) would overflow: numpy's
        return np.lexsort((ties, keys))
    return order[np.argsort(rank * span + ties[order])]  # distinct pairs: one order


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Start of each run of equal consecutive keys (the keys sorted already): the first of
    each distinct key, or of each distinct tuple of ``keys``."""
    n = keys[0].size
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for k in keys:
            new[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(new)


def run_labels(starts: np.ndarray, n: int) -> np.ndarray:
    """(n,) which run each entry belongs to, from the runs' starts (:func:`run_starts`)."""
    marks = np.zeros(n, dtype=bool)
    marks[starts] = True
    labels = np.cumsum(marks, dtype=np.int64)
    labels -= 1
    return labels


def union_of_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.union1d(a, b)`` of two sorted arrays of distinct integers, in linear time.

    numpy's ``union1d`` sorts the joined arrays as if they were in no order (47 ms for
    200,000 rows and 5,000 more, against 0.6 ms here: the re-entry rule's waiting accounts,
    joined every step by those just liquidated); numpy's stable sort merges the two sorted
    runs it finds, and the rows in both are then kept once (:func:`run_starts`).
    """
    if not b.size:
        return a
    if not a.size:
        return b
    out = np.concatenate((a, b))
    out.sort(kind="stable")  # (two sorted runs: one merge)
    return out.take(run_starts(out))
