"""The contagion graph: who liquidated whom.

A ``networkx.DiGraph``. Nodes are trader ids (integers, or the strings a population file gave:
:mod:`model.ids`), plus one root node ``step:<t>`` per step with liquidations. Round-1 liquidations of step ``t`` hang from ``step:<t>`` with weight 1. A
liquidation in round ``r >= 2`` is attributed to the liquidations of round ``r - 1`` that moved
the prices it lost on: edge ``i -> j`` with weight = ``i``'s share of the flow that hurt ``j``:

* the loss ``j`` took on asset ``a`` from round ``r - 1``'s move is
  ``l_ja = max(0, -q_ja dP_a)``, with ``q_ja`` the position ``j`` held while that move happened
  (its position when round ``r - 1`` executed: a victim liquidated in round ``r - 1`` too sold at
  the price after the move, so it lost on the part it closed as well);
* ``i``'s share of the flow on ``a`` that pushed the price that way is
  ``s_ia = max(0, +-x_ia) / sum_k max(0, +-x_ka)`` (sellers when the price fell, buyers when it
  rose; ``x`` the closed quantity, sells positive); when every liquidator closed the same side,
  this is ``x_ia / X_a``, the share of the round's forced flow;
* ``w_ij = sum_a (l_ja / sum_b l_jb) s_ia``; with one asset this is ``x_i / X``.

Weights into each liquidation sum to 1. A victim that lost nothing on round ``r - 1``'s move is
attributed by each liquidator's share of the round's whole closed notional.

Collateral assets (:mod:`model.collateral`) are columns like any other: a round's record gives a
victim's holdings as its (long) exposure to them and a liquidator's collateral sales as its closed
quantity of them, so a loss on a collateral asset's fall is attributed to the previous round's
sellers of it.

The weights of a round form the rank-``A`` product ``mix @ share.T`` (victims' loss mix over
assets times liquidators' flow shares), so a round is never expanded into a dense
victims-by-liquidators matrix: edges are produced per group of victims with the same loss
pattern, and when the edge budget is exceeded each victim's top contributors are found with a
threshold search over the per-asset rankings.

Bounded size: every edge is recorded while the recorded edges stay within ``max_edges``. A
round whose edges would exceed that keeps, for each of its victims, the ``top_contributors``
largest edges plus one aggregate edge from the node ``others:<t>:<r>`` carrying the rest of the
weight, so incoming weights still sum to 1 and the graph grows at most
``top_contributors + 1`` edges per liquidation from then on.

Repeats: a trader is one node however often it is liquidated; an attribution ``i -> j`` that
happens again (another round or step) adds its weight to the existing edge and counts one more
``events``. Edge attributes: ``weight`` (summed), ``step`` and ``round`` (of the first
attribution), ``last_step``, ``events``. A trader's incoming weights therefore sum to the number
of rounds in which it was liquidated.

During a run the recorder keeps edge events in numpy arrays (sources and targets as 4-byte
codes); :meth:`ContagionRecorder.graph`
builds the networkx graph on demand, and :meth:`ContagionRecorder.write_graphml` and
:meth:`ContagionRecorder.write_node_link` write files straight from the arrays.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import numpy as np

from model import kernels
from model.accounts import column_sum, row_sum
from model.column_log import ColumnLog
from model.ids import id_column, is_integer_ids, plain_id
from model.liquidation import RoundRecord
from model.sorting import run_labels, run_starts, stable_argsort

if TYPE_CHECKING:
    from collections.abc import Callable

    from model.closing_rounds import ClosedRounds

__all__ = [
    "ContagionRecorder",
    "EdgeBatches",
    "GraphArrays",
    "attribution_factors",
    "attribution_weights",
    "full_attribution",
    "top_attribution",
]

# Budget of the dense blocks built while searching for top contributors (matrix entries).
_BLOCK = 1 << 22
# Candidates beyond which the threshold search hands the victims left to the block search.
_TA_MAX_CANDIDATES = 2048
# Weight left over a truncated round's kept edges below which a victim gets no aggregate edge.
_MIN_REST = 1e-12
# Distinct edges are counted with a mark per possible (source, target) pair when there are at
# most this many pairs per edge event (the marks then take less memory than the events' own
# columns, and a pass over them costs less than sorting the events' keys), else by a sort.
_SEEN_PER_EDGE = 32
# The edge log's sources and targets (book rows, or special nodes below 0) as 4-byte
# integers: every edge of a round is written to fresh memory, and at 8 bytes a code the
# million edges of a large cascade's first rounds cost the step a third more
# (docs/performance-log.md); reads for arithmetic widen them (edges(), the merged graph).
ROW_CODE = np.int32
# No previous round's rows or values (the step's first round, for a compiled call)
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros(0)


# --------------------------------------------------------------------------------------------
# Attribution kernels (pure numpy)
# --------------------------------------------------------------------------------------------


def attribution_factors(exposure, price_move, closed_prev, notional_prev=None):
    """Factor round ``r - 1``'s attribution weights as ``mix @ share.T``.

    Args:
        exposure: (k_v, A) victims' positions while round ``r - 1``'s move happened.
        price_move: (A,) the price change caused by round ``r - 1``.
        closed_prev: (k_l, A) quantities closed in round ``r - 1`` (signed as the position was:
            positive closes a long, i.e. sells).
        notional_prev: (k_l,) closed notional of each liquidator (for victims that lost
            nothing); defaults to ``sum_a |closed|``.

    Returns:
        ``(mix, share)``: (k_v, A + 1) and (k_l, A + 1). Column ``a < A`` of ``mix`` is the
        fraction of the victim's loss due to asset ``a``; column ``A`` is 1 for victims that
        lost nothing. Column ``a`` of ``share`` is each liquidator's share of the flow that
        pushed asset ``a``'s price the way it moved; column ``A`` is its share of the closed
        notional. Each row of ``mix`` and each non-zero column of ``share`` sums to 1.
    """
    exposure = np.atleast_2d(np.asarray(exposure, dtype=float))
    closed_prev = np.atleast_2d(np.asarray(closed_prev, dtype=float))
    price_move = np.asarray(price_move, dtype=float)
    direction = np.where(price_move < 0, 1.0, -1.0)  # sellers push prices down
    push = np.maximum(closed_prev * direction[None, :], 0.0)  # (k_l, A)
    push_total = column_sum(push)
    share = push / np.where(push_total > 0, push_total, 1.0)[None, :]
    loss = np.maximum(-exposure * price_move[None, :], 0.0)  # (k_v, A)
    unpushed = push_total <= 0
    if unpushed.any():
        loss[:, unpushed] = 0.0  # nobody pushed that price: no one to attribute it to
    loss_total = row_sum(loss)
    k_v, a = loss.shape
    mix = np.empty((k_v, a + 1))
    np.divide(loss, np.where(loss_total > 0, loss_total, 1.0)[:, None], out=mix[:, :a])
    mix[:, a] = loss_total <= 0  # victims that lost nothing: by closed notional
    if notional_prev is None:
        notional_prev = row_sum(np.abs(closed_prev))
    notional_prev = np.asarray(notional_prev, dtype=float)
    total = notional_prev.sum()
    k_l = closed_prev.shape[0]
    share_all = np.empty((k_l, a + 1))
    share_all[:, :a] = share
    if total > 0:
        np.divide(notional_prev, total, out=share_all[:, a])
    else:
        share_all[:, a] = 1.0 / max(k_l, 1)
    return mix, share_all


def _one_asset_factors(exposure, price_move, closed_prev, notional_prev):
    """:func:`attribution_factors` of a one-asset round as ``(share, col)``: the (k_l, 2)
    shares, and the column of ``mix`` each victim uses (0: it lost on the asset, 1: it lost
    nothing), since each row of ``mix`` is then a unit vector. Same arithmetic, same values."""
    closed_prev = np.asarray(closed_prev, dtype=float)
    move = float(price_move[0])
    push = np.maximum(closed_prev * (1.0 if move < 0 else -1.0), 0.0)  # (k_l, 1)
    push_total = column_sum(push)
    k_l = closed_prev.shape[0]
    share = np.empty((k_l, 2))
    np.divide(push, push_total if push_total[0] > 0 else 1.0, out=share[:, :1])
    notional_prev = np.asarray(notional_prev, dtype=float)
    total = notional_prev.sum()
    if total > 0:
        np.divide(notional_prev, total, out=share[:, 1])
    else:
        share[:, 1] = 1.0 / max(k_l, 1)
    lost = (-np.asarray(exposure, dtype=float)[:, 0] * move > 0) & (push_total[0] > 0)
    return share, (~lost).astype(np.intp)


def _first_column(x) -> np.ndarray:
    """``x[:, 0]`` of a round's (k, A) array as a writable float array, as the compiled calls
    take it (:func:`model.kernels.writable`)."""
    return kernels.writable(np.asarray(x, dtype=float)[:, 0])


def _edge_buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty source, target and weight columns of ``size`` edges, for a compiled call to
    write."""
    return np.empty(size, ROW_CODE), np.empty(size, ROW_CODE), np.empty(size)


def _unit_mix(col, c: int) -> np.ndarray:
    """(k_v, c) the loss mix of victims that each lost on one column only (``col``)."""
    mix = np.zeros((col.size, c))
    mix[np.arange(col.size), col] = 1.0
    return mix


def _unit_edge_count(col, share) -> int:
    """Edges of a round whose victims each use one column of ``share`` (``col``): a victim
    gets one edge per liquidator with a positive share of its column."""
    return int(np.bincount(col, minlength=share.shape[1]) @ (share > 0).sum(axis=0))


def _exposure_during(exposure, rows, prev_rows, prev_closed):
    """The victims' positions while round ``r - 1``'s move happened: their positions when
    round ``r`` began, plus, for victims liquidated in round ``r - 1`` too, the part they
    closed then (they sold at the price after the move, so they held it during the move).
    The record's own array when no victim was (a copy otherwise)."""
    exposure = np.asarray(exposure, dtype=float)
    order = np.argsort(prev_rows)
    ranked = prev_rows[order]
    pos = np.searchsorted(ranked, rows)
    np.minimum(pos, prev_rows.size - 1, out=pos)
    again = ranked[pos] == rows
    if again.any():
        exposure = exposure.copy()
        exposure[again] += np.asarray(prev_closed, dtype=float)[order[pos[again]]]
    return exposure


def attribution_weights(exposure, price_move, closed_prev, notional_prev=None):
    """Dense (k_victims, k_liquidators) attribution weights; each row sums to 1.

    Convenient for small cases and tests; the recorder never builds this matrix.
    """
    mix, share = attribution_factors(exposure, price_move, closed_prev, notional_prev)
    return mix @ share.T


def _support_groups(mix, share) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Victims grouped by which columns of ``mix`` they use, with the liquidators that count.

    Returns ``(victims, columns, liquidators)`` per group: every weight of the block
    ``mix[victims][:, columns] @ share[liquidators][:, columns].T`` is positive, and every
    weight outside the blocks is zero. Groups come in the lexicographic order of their
    column patterns (column 0 first, unused before used), victims in index order.
    """
    support = mix > 0
    c = support.shape[1]
    if c <= 62:  # each pattern as an integer whose bits read the columns from column 0
        codes = (support << np.arange(c - 1, -1, -1, dtype=np.int64)).sum(axis=1)
        order = stable_argsort(codes)
        starts = run_starts(codes[order])
        stops = np.append(starts[1:], codes.size) if codes.size else starts
        patterns = support[order[starts]]
    else:
        patterns, inverse = np.unique(support, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(patterns) + 1))
        starts, stops = bounds[:-1], bounds[1:]
    groups = []
    positive = share > 0
    for lo, hi, cols_mask in zip(starts.tolist(), stops.tolist(), patterns, strict=True):
        cols = np.flatnonzero(cols_mask)
        if cols.size == 1:
            liquidators = np.flatnonzero(positive[:, cols[0]])
        else:
            liquidators = np.flatnonzero(positive[:, cols].any(axis=1))
        groups.append((order[lo:hi], cols, liquidators))
    return groups


def full_edge_count(mix, share, groups=None) -> int:
    """Number of positive weights in ``mix @ share.T``, without forming it."""
    groups = _support_groups(mix, share) if groups is None else groups
    return int(sum(v.size * li.size for v, _, li in groups))


def _full_blocks(mix, share, groups):
    """Per group with weights: (victims, liquidators, the dense block of their weights)."""
    for victims, cols, liquidators in groups:
        if victims.size == 0 or liquidators.size == 0:
            continue
        if cols.size == 1:  # an outer product
            col = cols[0]
            block = np.multiply.outer(mix[victims, col], share[liquidators, col])
        else:
            block = mix[np.ix_(victims, cols)] @ share[np.ix_(liquidators, cols)].T
        yield victims, liquidators, block


def full_attribution(mix, share, groups=None):
    """Every positive weight of ``mix @ share.T`` as ``(victim, liquidator, weight)`` columns."""
    groups = _support_groups(mix, share) if groups is None else groups
    vs, ls, ws = [], [], []
    for victims, liquidators, block in _full_blocks(mix, share, groups):
        vs.append(np.repeat(victims, liquidators.size))
        ls.append(np.tile(liquidators, victims.size))
        ws.append(block.ravel())
    if not vs:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    return np.concatenate(vs), np.concatenate(ls), np.concatenate(ws)


def top_attribution(mix, share, k: int):
    """Each victim's ``k`` largest weights of ``mix @ share.T``, and the weight left over.

    A threshold search (Fagin's algorithm): candidates are the liquidators ranked in the top
    ``d`` of some column of ``share``; any other liquidator's weight for victim ``j`` is at most
    ``mix_j . share_(d)`` (the ``d+1``-th largest value of each column), so once the ``k``-th
    best candidate reaches that bound the victim's top ``k`` are exact. ``d`` grows until every
    victim is settled; typical rounds settle at ``d = k``. The per-column bound is loose when
    liquidators' shares are anti-correlated across assets (each large in one asset only, in
    varying mixes); victims still open once the candidates pass ``_TA_MAX_CANDIDATES`` go to
    :func:`_top_by_blocks`, a branch and bound over spatial blocks of liquidators.

    Returns:
        ``(victim, liquidator, weight, rest)``: the kept positive weights as columns, victim
        by victim and each victim's in liquidator order, and (k_v,) each victim's weight not
        kept (its total minus the kept, clipped at 0). When every victim lost on one column
        (a one-asset round), a tie at the ``k``-th weight goes to the lower liquidator index;
        with mixed losses a victim is settled once its ``k``-th weight reaches the bound on
        the liquidators not searched, and the block search keeps the first it meets.
    """
    k_v = mix.shape[0]
    k_l = share.shape[0]
    if k_v == 0 or k_l == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0), np.zeros(k_v)
    k = max(1, min(int(k), k_l))
    col_total = column_sum(share)
    support = mix > 0
    if (support.sum(axis=1) == 1).all():  # one asset, or every victim lost on one asset only
        found = _top_of_unit_rows(share, k, support.argmax(axis=1), col_total)
        if found is not None:
            return found
    # (k_v,) each victim's whole weight (1 for attributions)
    return _top_threshold(mix, share, k, mix @ col_total)


def _top_of_unit_rows(share, k: int, col, col_total, victims=None, liquidators=None):
    """:func:`top_attribution` when every row of ``mix`` is a unit vector (victim ``j`` uses
    column ``col[j]`` only): every victim of a column has the same weights, that column of
    ``share``, so the threshold search is done once per column and its result repeated for
    the column's victims. The same operations on the same values as :func:`_top_threshold`
    (whose first depth settles every such victim: the candidates hold each column's top
    ``k``), so the same edges in the same order; None when the candidates are too many (the
    general search then hands over to the block search).

    Args:
        share: (k_l, C) the liquidators' shares.
        k: edges kept per victim, at most ``k_l``.
        col: (k_v,) the column each victim uses.
        col_total: (C,) ``share.sum(axis=0)``: a victim's whole weight is its column's.
        victims, liquidators: labels to return instead of the victims' and liquidators'
            indices (the recorder's book rows), so that the kept edges are labelled once per
            column instead of once per edge.

    Returns:
        ``(victim, liquidator, weight, rest)`` as :func:`top_attribution` gives them.
    """
    cand = _top_set(share, k)
    if cand.size > _TA_MAX_CANDIDATES and k < share.shape[0]:
        return None
    c = share.shape[1]
    block = share[cand].T  # (columns, |cand|): row c holds the weights of column c's victims
    kk = min(k, cand.size)
    if kk < cand.size:
        part = _top_in_index_order(block, kk)
        top_w = block[np.arange(c)[:, None], part]
        top_l = cand[part]
    else:  # every candidate kept, in index order (a C-ordered copy, as the gather gives it)
        top_w = np.ascontiguousarray(block)
        top_l = np.repeat(cand[None, :], c, axis=0)
    if liquidators is not None:
        top_l = liquidators[top_l]
    rest = np.maximum(col_total - top_w.sum(axis=1), 0.0)[col]
    kept_v = np.repeat(np.arange(col.size) if victims is None else victims, kk)
    kept_l = top_l[col].ravel()
    kept_w = top_w[col].ravel()
    positive = top_w > 0
    if not positive.all():  # zero weights are not edges
        keep = positive[col].ravel()
        kept_v, kept_l, kept_w = kept_v[keep], kept_l[keep], kept_w[keep]
    return kept_v, kept_l, kept_w, rest


def _top_threshold(mix, share, k: int, total):
    """The threshold search of :func:`top_attribution` (``k`` at most the liquidators)."""
    k_v = mix.shape[0]
    k_l = share.shape[0]
    kept_v, kept_l, kept_w = [], [], []
    rest = np.zeros(k_v)
    open_v = np.arange(k_v)
    depth = k
    while open_v.size:
        d = min(depth, k_l)
        cand = _top_set(share, d)
        if cand.size > _TA_MAX_CANDIDATES and d < k_l:
            vi, li, wi, kept = _top_by_blocks(mix[open_v], share, k)
            rest[open_v] = np.maximum(total[open_v] - kept, 0.0)
            kept_v.append(open_v[vi])
            kept_l.append(li)
            kept_w.append(wi)
            break
        # the (d + 1)-th largest value of each column bounds every liquidator outside cand
        bound_row = np.partition(share, k_l - d - 1, axis=0)[k_l - d - 1] if d < k_l else None
        step_rows = max(1, _BLOCK // max(cand.size, 1))
        settled_mask = np.zeros(open_v.size, dtype=bool)
        for lo in range(0, open_v.size, step_rows):
            vic = open_v[lo : lo + step_rows]
            block = mix[vic] @ share[cand].T  # (b, |cand|)
            kk = min(k, cand.size)
            part = (
                _top_in_index_order(block, kk)
                if kk < cand.size
                else np.broadcast_to(np.arange(cand.size), (vic.size, cand.size))
            )
            top_w = np.take_along_axis(block, part, axis=1)
            tau = top_w.min(axis=1)
            if bound_row is None:
                ok = np.ones(vic.size, dtype=bool)
            else:
                ok = (tau >= mix[vic] @ bound_row) & (kk >= k)
            if ok.any():
                rows_ok = np.flatnonzero(ok)
                w_ok = top_w[rows_ok]
                rest[vic[rows_ok]] = np.maximum(total[vic[rows_ok]] - w_ok.sum(axis=1), 0.0)
                pos = w_ok > 0
                kept_v.append(np.repeat(vic[rows_ok], kk)[pos.ravel()])
                kept_l.append(cand[part[rows_ok]].ravel()[pos.ravel()])
                kept_w.append(w_ok.ravel()[pos.ravel()])
            settled_mask[lo : lo + vic.size] = ok
        open_v = open_v[~settled_mask]
        depth *= 4
    return (
        np.concatenate(kept_v),
        np.concatenate(kept_l),
        np.concatenate(kept_w),
        rest,
    )


def _top_in_index_order(block, kk: int) -> np.ndarray:
    """(b, kk) the columns of each row's ``kk`` largest values, ties taken by column index
    (the first ``kk`` of a stable descending sort), listed in column order.

    A victim's kept edges are thereby listed in liquidator order and, among the candidates,
    chosen to the last tie, by numpy and by :func:`model.kernels.top_edges_of_unit_rows`
    alike; a partition (``np.argpartition``) would pick among ties and list its picks in an
    order of its own.
    """
    return np.sort(np.argsort(-block, axis=1, kind="stable")[:, :kk], axis=1)


def _top_set(share, d: int):
    """The rows in the first ``d`` of a stable descending sort (ties by index) of some column
    of ``share``, in index order: the candidates of the threshold search.

    Equal to ``np.unique(np.argsort(-share, axis=0, kind="stable")[:d])``. Found with one
    partition of every column when the columns are long (a round with tens of thousands of
    liquidators needs only the top few of each column): a column's first ``d`` are the values
    above its ``d``-th largest ``v`` and then, as a stable sort takes them, the first of the
    values equal to ``v`` in index order. The rows are marked rather than sorted and made
    unique.
    """
    k_l = share.shape[0]
    if d >= k_l:
        return np.arange(k_l)
    if 16 * (d + 1) >= k_l:
        keep = np.zeros(k_l, dtype=bool)
        keep[np.argsort(-share, axis=0, kind="stable")[:d]] = True
        return np.flatnonzero(keep)
    keep = np.zeros(k_l, dtype=bool)
    # one column at a time, each contiguous: numpy's reductions and comparisons along the
    # rows of a (k_l, C) array with a few columns cost many times those of 1-D arrays
    for column in np.ascontiguousarray(share.T):
        v = np.partition(column, k_l - d)[k_l - d]  # the column's d-th largest value
        above = column > v  # fewer than d
        tied = column == v
        room = d - np.count_nonzero(above)  # the tied values the column takes
        if np.count_nonzero(tied) <= room:  # (the usual case: one tie, v itself)
            keep |= above | tied
        else:
            keep |= above | (tied & (np.cumsum(tied) <= room))
    return np.flatnonzero(keep)


def _kd_blocks(points: np.ndarray, size: int) -> list[np.ndarray]:
    """Split the rows of ``points`` into blocks of at most ``size`` rows by median cuts along
    the widest column, so each block covers a small box (a k-d tree's leaves)."""
    stack = [np.arange(points.shape[0])]
    blocks = []
    while stack:
        idx = stack.pop()
        if idx.size <= size:
            blocks.append(idx)
            continue
        sub = points[idx]
        col = int(np.argmax(sub.max(axis=0) - sub.min(axis=0)))
        half = idx.size // 2
        part = np.argpartition(sub[:, col], half)
        stack.append(idx[part[:half]])
        stack.append(idx[part[half:]])
    return blocks


def _top_by_blocks(mix, share, k: int, size: int = 128):
    """Exact top ``k`` of each row of ``mix @ share.T`` by branch and bound over blocks.

    Each block of liquidators has a corner ``max over the block`` per column; ``mix_j . corner``
    bounds every weight in it. A victim evaluates its blocks best bound first and stops when
    its ``k``-th best weight reaches the best bound left.

    Returns:
        ``(victim, liquidator, weight, kept)``: positive kept weights as columns, and (k_v,)
        their sum per victim.
    """
    k_v, c = mix.shape
    blocks = _kd_blocks(share, size)
    members = np.full((len(blocks), size), -1, dtype=np.int64)
    corner = np.empty((len(blocks), c))
    for b, idx in enumerate(blocks):
        members[b, : idx.size] = idx
        corner[b] = share[idx].max(axis=0)
    padded = np.vstack([share, np.zeros((1, c))])  # index -1: padding
    best_w = np.full((k_v, k), -np.inf)
    best_i = np.full((k_v, k), -1, dtype=np.int64)
    rows = max(1, _BLOCK // max(len(blocks), size))
    for lo in range(0, k_v, rows):
        vic = np.arange(lo, min(lo + rows, k_v))
        bound = mix[vic] @ corner.T  # (b, blocks)
        live = np.arange(vic.size)
        while live.size:
            b = np.argmax(bound[live], axis=1)
            bound[live, b] = -np.inf
            mem = members[b]  # (n, size)
            w = np.einsum("vc,vsc->vs", mix[vic[live]], padded[mem])
            w = np.where(mem >= 0, w, -np.inf)
            cat_w = np.concatenate([best_w[vic[live]], w], axis=1)
            cat_i = np.concatenate([best_i[vic[live]], mem], axis=1)
            part = np.argpartition(-cat_w, k - 1, axis=1)[:, :k]
            best_w[vic[live]] = np.take_along_axis(cat_w, part, axis=1)
            best_i[vic[live]] = np.take_along_axis(cat_i, part, axis=1)
            done = best_w[vic[live]].min(axis=1) >= bound[live].max(axis=1)
            live = live[~done]
    pos = best_w > 0
    kept = np.where(pos, best_w, 0.0).sum(axis=1)
    by_index = np.argsort(best_i, axis=1)  # each victim's edges in liquidator order
    best_i = np.take_along_axis(best_i, by_index, axis=1)
    best_w = np.take_along_axis(best_w, by_index, axis=1)
    pos = np.take_along_axis(pos, by_index, axis=1)
    vi = np.repeat(np.arange(k_v), k).reshape(k_v, k)
    return vi[pos], best_i[pos], best_w[pos], kept


# --------------------------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------------------------


@dataclass
class GraphArrays:
    """The merged graph as arrays (one entry per distinct edge), ready to write or build.

    Attributes:
        node_names: (S + n,) object array: name of each source code ``src + S`` (the ``S``
            special nodes first, then trader ids by book row).
        special: number of special (root and aggregate) nodes ``S``.
        src, dst: (m,) source code (book row, or ``-1 - k`` for special node ``k``) and target
            book row of each distinct edge.
        weight, step, round, last_step, events: (m,) edge attributes.
    """

    node_names: np.ndarray
    special: int
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    step: np.ndarray
    round: np.ndarray
    last_step: np.ndarray
    events: np.ndarray


@dataclass(frozen=True, eq=False)
class EdgeBatches:
    """The edge events in batches, one per liquidation round recorded: every edge of a batch
    shares its step and round, so those are kept once per batch.

    Attributes:
        step, round, size: (b,) each batch's step, round and number of edges; the batches'
            edges follow one another in the per-edge columns.
        src, dst: (m,) each edge's source (book row, or ``-1 - k`` for special node ``k``:
            a step root or an aggregate, not a trader) and target book row.
        weight: (m,) each edge's weight.
        ids: (n,) trader id of each book row.
    """

    step: np.ndarray
    round: np.ndarray
    size: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    ids: np.ndarray


class ContagionRecorder:
    """Collects roots, edges and node attributes round by round.

    Args:
        ids: (n,) trader id of each book row (``int64``, or ``str`` in an object array).
        initial_leverage: (n,) leverage of each account at the start.
        max_edges: record every edge while the recorded edges stay within this many.
        top_contributors: beyond ``max_edges``, edges kept per victim (the rest is one
            aggregate edge from a node ``others:<step>:<round>``).

    Attributes:
        edge_count: edges recorded so far (before repeats are merged).
        truncated: whether any round kept only top contributors.
        truncated_rounds: how many rounds did.
        first_truncated_step: the step of the first such round (0: none).
        roots: names of the special nodes (``step:<t>``, ``others:<t>:<r>``).
        first_step, first_round, events, notional: (n,) node attributes by book row.
    """

    def __init__(self, ids, initial_leverage, *, max_edges=1_000_000, top_contributors=5):
        self.ids = np.asarray(ids)
        self.initial_leverage = np.asarray(initial_leverage, dtype=float)
        self.max_edges = int(max_edges)
        self.top = int(top_contributors)
        # the edge events; src: book row, or -1 - k for special node k. A batch's edges share
        # their step and round, so those are kept once per batch (with its size) and repeated
        # only when read: as columns of every edge they would double the log's int64 columns.
        if len(self.ids) >= np.iinfo(ROW_CODE).max:
            raise ValueError(f"{len(self.ids)} traders: the edge log holds at most 2**31 - 2")
        self._edges = ColumnLog({"src": ROW_CODE, "dst": ROW_CODE, "weight": float})
        self._batches = ColumnLog({"step": np.int64, "round": np.int64, "size": np.int64})
        self.roots: list[str] = []
        self.edge_count = 0
        self.truncated = False
        self.truncated_rounds = 0
        self.first_truncated_step = 0
        n = len(self.ids)
        self.first_step = np.zeros(n, dtype=np.int64)
        self.first_round = np.zeros(n, dtype=np.int64)
        self.events = np.zeros(n, dtype=np.int64)
        self.notional = np.zeros(n)
        # the round recorded last: as it came, or made on first use from rounds recorded at
        # once (_prev_of); its step and round in any case
        self._prev: RoundRecord | None = None
        self._prev_of = None
        self._prev_at: tuple[int, int] | None = None
        self._version = 0
        self._cache: dict = {}
        # a large book's rounds go to compiled kernels (model.kernels): the victims' counters,
        # a one-asset round's factors, the edges kept of a truncated round
        self._compiled = kernels.use(n)
        self._scratch_buffers = (
            np.empty((0, 2)),
            np.empty(0, dtype=np.intp),
            np.zeros(2, np.int64),
        )

    # ---- recording ---------------------------------------------------------------------------
    def _special(self, name: str) -> int:
        self.roots.append(name)
        return -len(self.roots)

    def _next_special(self) -> int:
        """The code :meth:`_special` gives the next special node (for a compiled call that
        writes edges from it before it is named)."""
        return -len(self.roots) - 1

    def _add(self, src, dst, w, step, rnd):
        if not len(dst):
            return
        self._edges.append(len(dst), {"src": src, "dst": dst, "weight": w}, copy=False)
        self._add_batch(step, rnd, len(dst))

    def _add_roots(self, root: int, rows, step, rnd) -> None:
        """An edge of weight 1 from the special node ``root`` to each of ``rows``, written
        into the edge log's room."""
        k = rows.size
        room, at = self._edges.reserve(k)
        room["src"][at : at + k] = root
        room["dst"][at : at + k] = rows
        room["weight"][at : at + k] = 1.0
        self._edges.commit(k)
        self._add_batch(step, rnd, k)

    def _add_batch(self, step, rnd, size: int) -> None:
        """Count a batch of ``size`` edges just added to the edge log, from round ``rnd`` of
        ``step``."""
        room, at = self._batches.reserve(1)
        room["step"][at], room["round"][at], room["size"][at] = step, rnd, size
        self._batches.commit(1)
        self.edge_count += size

    def record(self, rec: RoundRecord) -> None:
        """Add one liquidation round (a :class:`model.liquidation.RoundRecord`)."""
        rows = np.asarray(rec.rows, dtype=np.int64)
        self._version += 1
        first = not self._follows(rec.step, rec.round)
        prev = None if first else self._previous()
        if first:
            self._note_victims(rows, rec)
            self._add_roots(self._special(f"step:{rec.step}"), rows, rec.step, rec.round)
        elif not (self._compiled and self._one_asset_round_compiled(rows, rec, prev)):
            n_new = self._note_victims(rows, rec)
            prev_rows = np.asarray(prev.rows, dtype=np.int64)
            exposure = np.asarray(rec.exposure, dtype=float)
            if n_new < rows.size:  # a victim liquidated before: in round r - 1, perhaps
                exposure = _exposure_during(exposure, rows, prev_rows, prev.closed)
            move = np.asarray(prev.price_after, dtype=float) - np.asarray(
                prev.price_before, dtype=float
            )
            if move.size == 1:  # one asset: each victim lost on it or lost nothing
                share, col, count = self._factors_of_one_asset_round(exposure, move, prev)
                self._attribute_columns(prev_rows, rows, share, col, rec.step, rec.round, count)
            else:
                mix, share = attribution_factors(exposure, move, prev.closed, prev.notional)
                self._attribute(prev_rows, rows, mix, share, rec.step, rec.round)
        self._prev, self._prev_of, self._prev_at = rec, None, (rec.step, rec.round)

    def _follows(self, step, rnd) -> bool:
        """Whether round ``rnd`` of ``step`` follows the round recorded last (else it is
        attributed to the step's root)."""
        return self._prev_at == (step, rnd - 1)

    def _previous(self) -> RoundRecord:
        """The round recorded last (made now if it was one of rounds recorded at once)."""
        if self._prev_of is not None:
            self._prev, self._prev_of = self._prev_of(), None
        return self._prev

    def __call__(self, rec: RoundRecord) -> None:
        """:meth:`record`: the recorder listens to the engine's rounds (its ``on_round``)."""
        self.record(rec)

    def record_closed_rounds(
        self, step: int, rnd: int, rounds: ClosedRounds, record_of: Callable[[int], RoundRecord]
    ) -> None:
        """Rounds ``rnd``, ``rnd + 1``, ... of ``step`` that one compiled call closed whole
        (:class:`model.closing_rounds.ClosedRounds`), recorded as :meth:`record` records each
        of them: the same edges, batches, special nodes and counters (tests/test_contagion.py).

        In a large one-asset book the rounds go to one compiled call
        (:func:`model.kernels.whole_close_rounds`) but a round it hands back (a victim
        liquidated before, every edge within the budget), which goes to the lines of
        :meth:`record`, and the call goes on from the round after it. ``record_of(i)`` gives
        round ``i``'s :class:`model.liquidation.RoundRecord`: for the rounds recorded one by
        one, and for the round recorded last when a round needs it as its previous one.
        """
        n = len(rounds.bounds) - 1
        if not (self._compiled and rounds.prices.shape[2] == 1):
            for i in range(n):
                self.record(record_of(i))
            return
        i = 0
        while i < n:
            j, status = self._whole_close_rounds(step, rnd, rounds, i)
            if j > i:  # the last round the call recorded is the previous one now
                self._keep_previous(functools.partial(record_of, j - 1), step, rnd + j - 1)
            if j == n:
                break
            lo, hi = rounds.bounds[j], rounds.bounds[j + 1]
            if status == 0:  # a victim liquidated before: record()'s numpy lines
                self.record(record_of(j))
            else:  # its counters and factors written: the edges with numpy
                self._version += 1
                prev_rows = self._prev_rows(rounds, j)
                share, col, _ = self._scratch_buffers
                share, col = share[: prev_rows.size], col[: hi - lo]
                self._finish_one_asset_round(
                    status, prev_rows, rounds.rows[lo:hi], share, col, step, rnd + j
                )
                self._keep_previous(functools.partial(record_of, j), step, rnd + j)
            i = j + 1

    def _keep_previous(self, record_of, step, rnd) -> None:
        """Keep round ``rnd`` of ``step`` as the round recorded last, its record made by
        ``record_of()`` when a round needs it (:meth:`_previous`)."""
        self._prev, self._prev_of, self._prev_at = None, record_of, (step, rnd)

    def _prev_rows(self, rounds: ClosedRounds, i: int) -> np.ndarray:
        """The rows of the round before round ``i`` of ``rounds`` (the previous round kept
        for round 0)."""
        if i == 0:
            return np.asarray(self._previous().rows, dtype=np.int64)
        return rounds.rows[rounds.bounds[i - 1] : rounds.bounds[i]]

    def _whole_close_rounds(self, step, rnd, rounds: ClosedRounds, start: int):
        """Rounds ``start``.. of :meth:`record_closed_rounds` in one compiled call, their
        edges and batches written into the logs' room, then their special nodes and counters
        noted; returns the round the call handed back (``n``: none) and its status
        (:func:`model.kernels.whole_close_rounds`)."""
        b, n = rounds.bounds, len(rounds.bounds) - 1
        first = start == 0 and not self._follows(step, rnd)
        qty = rounds.qty[:, 0]
        if first:
            prev_rows, closed, spent, move = _NO_ROWS, _NO_VALUES, _NO_VALUES, 0.0
        elif start == 0:
            prev = self._previous()
            prev_rows, closed = np.asarray(prev.rows, dtype=np.int64), _first_column(prev.closed)
            spent = np.asarray(prev.notional, dtype=float)
            move = float(prev.price_after[0]) - float(prev.price_before[0])
        else:
            lo, hi, p = b[start - 1], b[start], rounds.prices[start - 1]
            prev_rows, closed, spent = rounds.rows[lo:hi], qty[lo:hi], rounds.row_notional[lo:hi]
            move = float(p[1, 0]) - float(p[0, 0])
        victims = [b[i + 1] - b[i] for i in range(start, n)]
        liquidators = [prev_rows.size, *victims[:-1]]
        room_size = victims[0] if first else 0
        for k_l, k_v in zip(liquidators[first:], victims[first:], strict=True):
            room_size += (max(1, min(self.top, k_l)) + 1) * k_v  # (kept edges, aggregates)
        share, col, counts = self._scratch(max(liquidators), max(victims))
        named, result = np.zeros(n, np.int8), np.zeros(3, np.int64)
        room, at = self._edges.reserve(room_size)
        batches, b_at = self._batches.reserve(n - start)
        stop = kernels.whole_close_rounds(
            first, start, n, step, rnd, np.asarray(b, dtype=np.int64), rounds.rows, qty,
            rounds.row_notional, rounds.prices, prev_rows, closed, spent, move, self.events,
            self.first_step, self.first_round, self.notional, self.max_edges - self.edge_count,
            self.top, _TA_MAX_CANDIDATES, self._next_special(), _MIN_REST, share, col,
            room["src"][at:], room["dst"][at:], room["weight"][at:], batches["step"][b_at:],
            batches["round"][b_at:], batches["size"][b_at:], named, counts, result,
        )  # fmt: skip
        status, written, batches_written = result.tolist()
        self._edges.commit(written)
        self._batches.commit(batches_written)
        self.edge_count += written
        self._note_whole_close_rounds(step, rnd, start, stop, first, named)
        return stop, status

    def _note_whole_close_rounds(self, step, rnd, start, stop, first, named) -> None:
        """The special nodes and counters of rounds ``start`` to ``stop - 1`` that
        :func:`model.kernels.whole_close_rounds` recorded (``named``: the special node each
        named), as :meth:`record` notes each."""
        self._version += stop - start
        for i, kind in enumerate(named[start:stop].tolist(), start):
            if kind:
                self.roots.append(f"step:{step}" if kind == 1 else f"others:{step}:{rnd + i}")
        truncated = stop - start - first
        if truncated > 0:
            self.truncated = True
            self.truncated_rounds += truncated
            self.first_truncated_step = self.first_truncated_step or int(step)

    def _one_asset_round_compiled(self, rows, rec: RoundRecord, prev: RoundRecord) -> bool:
        """A one-asset round whose victims have no event yet (every victim of a full
        liquidation that closes books whole) in one compiled call
        (:func:`model.kernels.one_asset_round`): the counters, the factors and, past the
        budget, the kept edges, written straight into the edge log's room
        (:meth:`model.column_log.ColumnLog.reserve`); the same writes and edges as the numpy
        lines of :meth:`record` (tests/test_kernels.py). Returns False, having written
        nothing, for a round of several assets or with a victim liquidated before."""
        if np.size(prev.price_after) != 1:
            return False
        move = float(prev.price_after[0]) - float(prev.price_before[0])
        k_l, k_v = len(prev.rows), rows.size
        kk = max(1, min(self.top, k_l))
        share, col, out = self._scratch(k_l, k_v)
        room, at = self._edges.reserve((kk + 1) * k_v)  # (the kept edges and the aggregates)
        prev_rows = np.asarray(prev.rows, dtype=np.int64)
        status = kernels.one_asset_round(
            rows, np.asarray(rec.notional, dtype=float), rec.step, rec.round, self.events,
            self.first_step, self.first_round, self.notional, _first_column(rec.exposure), move,
            _first_column(prev.closed), np.asarray(prev.notional, dtype=float), prev_rows,
            self.max_edges - self.edge_count, self.top, _TA_MAX_CANDIDATES, self._next_special(),
            _MIN_REST, share, col, room["src"][at:], room["dst"][at:], room["weight"][at:], out,
        )  # fmt: skip
        if status != 2:
            self._edges.commit(0)
        if status == 0:
            return False
        if status == 2:
            self._note_truncated(rec.step)
            self._commit_kept(*out.tolist(), rec.step, rec.round)
        else:
            self._finish_one_asset_round(status, prev_rows, rows, share, col, rec.step, rec.round)
        return True

    def _finish_one_asset_round(self, status, prev_rows, rows, share, col, step, rnd) -> None:
        """The edges of a round :func:`model.kernels.one_asset_round` left to numpy once it
        wrote the counters and the factors (``share``, ``col``; the edge count in the
        scratch counts): every edge (status 1) or each victim's top contributors found with
        numpy (status 3)."""
        if status == 1:
            count = int(self._scratch_buffers[2][0])
            self._attribute_columns(prev_rows, rows, share, col, step, rnd, count)
        else:
            self._keep_top_contributors(prev_rows, rows, share, col, None, step, rnd)

    def _scratch(self, k_l: int, k_v: int):
        """The compiled round's factors (k_l, 2), victims' columns (k_v,) and counts (2,):
        views of buffers kept between rounds (grown by doubling)."""
        share, col, out = self._scratch_buffers
        if share.shape[0] < k_l or col.size < k_v:
            share = np.empty((max(2 * k_l, share.shape[0]), 2))
            col = np.empty(max(2 * k_v, col.size), dtype=np.intp)
            self._scratch_buffers = share, col, out
        return share[:k_l], col[:k_v], out

    def _note_victims(self, rows, rec: RoundRecord) -> int:
        """Count the round's victims into the node attributes (first step and round, events,
        notional); return how many had no event before."""
        if self._compiled:  # (the same writes, one call: model.kernels)
            return kernels.note_victims(
                rows, np.asarray(rec.notional, dtype=float), rec.step, rec.round, self.events,
                self.first_step, self.first_round, self.notional,
            )  # fmt: skip
        seen = self.events[rows]
        new = rows[seen == 0]
        self.first_step[new] = rec.step
        self.first_round[new] = rec.round
        self.events[rows] = seen + 1  # (a round liquidates an account once)
        self.notional[rows] += np.asarray(rec.notional, dtype=float)
        return new.size

    def _factors_of_one_asset_round(self, exposure, move, prev: RoundRecord):
        """:func:`_one_asset_factors` of a round, and its edge count if every edge were kept
        (None: not counted yet); for a large book, both from one compiled call."""
        if not self._compiled:
            return (*_one_asset_factors(exposure, move, prev.closed, prev.notional), None)
        closed = np.asarray(prev.closed, dtype=float)
        share, col = np.empty((closed.shape[0], 2)), np.empty(exposure.shape[0], dtype=np.intp)
        count = kernels.one_asset_factors(
            _first_column(exposure), float(move[0]), _first_column(closed),
            np.asarray(prev.notional, dtype=float), share, col,
        )  # fmt: skip
        return share, col, count

    def _over_budget(self, victims: int) -> bool:
        """Whether a round of this many victims must be truncated whatever its edges: every
        victim has at least one edge (a loss is attributed only on columns somebody pushed,
        and a victim that lost nothing to every liquidator's share of the closed notional),
        so the round's edges would pass ``max_edges`` without being counted."""
        return self.edge_count + victims > self.max_edges

    def _attribute_columns(self, src_rows, dst_rows, share, col, step, rnd, count=None):
        """:meth:`_attribute` for victims that each use one column of ``share`` (``col``):
        their loss mix is that unit vector, built only if every edge is kept (``count``: the
        round's edges if every edge were kept, when known)."""
        k_l = share.shape[0]
        if not k_l or not self._over_budget(col.size):
            if count is None:
                count = _unit_edge_count(col, share)
            if self.edge_count + count <= self.max_edges or not k_l:
                if self._compiled and count:  # (one pass writes the edges: model.kernels)
                    src, dst, w = _edge_buffers(count)
                    kernels.unit_rows_edges(share, col, src_rows, dst_rows, src, dst, w)
                    self._add(src, dst, w, step, rnd)
                    return
                mix = _unit_mix(col, share.shape[1])
                self._attribute(src_rows, dst_rows, mix, share, step, rnd)
                return
        self._keep_top_contributors(src_rows, dst_rows, share, col, None, step, rnd)

    def _attribute(self, src_rows, dst_rows, mix, share, step, rnd):
        """Record round ``rnd``'s edges: all of them, or top contributors plus an aggregate."""
        support = mix > 0
        col = None
        if (support.sum(axis=1) == 1).all():  # each victim lost on one column only
            col = support.argmax(axis=1)
        groups = None
        fits = not share.shape[0] or not self._over_budget(mix.shape[0])
        if fits:
            if col is not None:
                count = _unit_edge_count(col, share)
            else:
                groups = _support_groups(mix, share)
                count = full_edge_count(mix, share, groups)
            fits = self.edge_count + count <= self.max_edges
        if fits:
            groups = _support_groups(mix, share) if groups is None else groups
            # the rows of each block's victims and liquidators, repeated (as in
            # full_attribution, without the index arrays in between)
            for victims, liquidators, block in _full_blocks(mix, share, groups):
                self._add(
                    np.tile(src_rows[liquidators], victims.size),
                    np.repeat(dst_rows[victims], liquidators.size),
                    block.ravel(),
                    step,
                    rnd,
                )
            return
        self._keep_top_contributors(src_rows, dst_rows, share, col, mix, step, rnd)

    def _keep_top_contributors(self, src_rows, dst_rows, share, col, mix, step, rnd):
        """Record a round that would pass ``max_edges``: each victim's top contributors and an
        aggregate edge (``col``: the column each victim uses, or None; ``mix``: the victims'
        loss mix, or None to build it from ``col`` if the column search hands over)."""
        self._note_truncated(step)
        found = None
        if col is not None and share.shape[0]:
            k = max(1, min(self.top, share.shape[0]))
            if self._compiled and share.shape[1] * k <= _TA_MAX_CANDIDATES:
                self._keep_top_compiled(src_rows, dst_rows, share, k, col, step, rnd)
                return
            found = _top_of_unit_rows(share, k, col, column_sum(share), dst_rows, src_rows)
        if found is None:
            mix = _unit_mix(col, share.shape[1]) if mix is None else mix
            vi, li, w, rest = top_attribution(mix, share, self.top)
            found = dst_rows[vi], src_rows[li], w, rest
        self._keep_top(dst_rows, *found, step, rnd)

    def _keep_top_compiled(self, src_rows, dst_rows, share, k, col, step, rnd):
        """:func:`_top_of_unit_rows` and :meth:`_keep_top` in one compiled call
        (:func:`model.kernels.top_edges_of_unit_rows`): the same edges in the same order,
        without the few dozen numpy calls that cost a truncated round of a large book more
        than its arithmetic (tests/test_kernels.py compares both)."""
        room, at = self._edges.reserve((k + 1) * col.size)
        kept, aggregated = kernels.top_edges_of_unit_rows(
            share, k, col, column_sum(share), dst_rows, src_rows, self._next_special(),
            _MIN_REST, room["src"][at:], room["dst"][at:], room["weight"][at:],
        )  # fmt: skip
        self._commit_kept(kept, aggregated, step, rnd)

    def _commit_kept(self, kept: int, aggregated: int, step, rnd) -> None:
        """Keep a truncated round whose edges a compiled call wrote into the edge log's room
        (:meth:`model.column_log.ColumnLog.reserve`): ``kept`` edges, then ``aggregated``
        ones from the round's aggregate node (:meth:`_next_special`, named here)."""
        if aggregated:
            self._special(f"others:{step}:{rnd}")
        self._edges.commit(kept + aggregated)
        if kept + aggregated:
            self._add_batch(step, rnd, kept + aggregated)

    def _note_truncated(self, step) -> None:
        self.truncated = True
        self.truncated_rounds += 1
        if not self.first_truncated_step:
            self.first_truncated_step = int(step)

    def _keep_top(self, dst_rows, kept_dst, kept_src, w, rest, step, rnd):
        """Record a truncated round: the kept edges (book rows), and one aggregate edge per
        victim with weight left."""
        has_rest = rest > _MIN_REST
        n_rest = int(np.count_nonzero(has_rest))
        if n_rest:  # the aggregate edges after the kept ones, in one batch
            agg = self._special(f"others:{step}:{rnd}")
            kept_src = np.concatenate((kept_src, np.full(n_rest, agg)))
            kept_dst = np.concatenate((kept_dst, dst_rows[has_rest]))
            w = np.concatenate((w, rest[has_rest]))
        self._add(kept_src, kept_dst, w, step, rnd)

    # ---- views -------------------------------------------------------------------------------
    def edges(self) -> dict[str, np.ndarray]:
        """Edge events as columns: src/dst as book rows (src < 0: special node ``-1 - src``);
        read-only (``step`` and ``round`` are repeated from each batch's values by every call)."""
        out = dict(self._edges.columns())
        for name in ("src", "dst"):  # (int64, as everywhere else, for arithmetic on them)
            out[name] = out[name].astype(np.int64)
            out[name].flags.writeable = False
        batches = self._batches.columns()
        for name in ("step", "round"):
            out[name] = np.repeat(batches[name], batches["size"])
            out[name].flags.writeable = False
        return out

    def edge_batches(self) -> EdgeBatches:
        """The edge events as the recorder keeps them (:class:`EdgeBatches`): the log's own
        read-only columns of every edge, and each batch's step, round and size, for
        :func:`model.metrics.cascade_metrics`, which needs a batch's generation once, not
        once per edge."""
        e = self._edges.columns()
        b = self._batches.columns()
        return EdgeBatches(
            step=b["step"],
            round=b["round"],
            size=b["size"],
            src=e["src"],
            dst=e["dst"],
            weight=e["weight"],
            ids=self.ids,
        )

    def node_name(self, code: int):
        """Name of a source code: a trader id, or ``step:<t>`` / ``others:<t>:<r>``."""
        return self.roots[-1 - code] if code < 0 else plain_id(self.ids[code])

    def edges_table(self):
        """Edge events as a DataFrame: step, round, source, source_kind, target, weight.

        One row per attribution (repeats not merged). ``source`` is the liquidator's trader
        id (missing for the step root and aggregate nodes, told apart by ``source_kind``:
        ``trader``, ``step`` or ``others``); ``target`` is the victim's trader id. Integer ids
        are ``Int64`` (source, nullable) and ``int64`` (target) columns, string ids string
        columns.
        """
        return self._edges_frame(self.edges(), self._special_kinds())

    def edges_tables(self, rows: int):
        """:meth:`edges_table` in parts of ``rows`` edge events, in order (one empty part
        when there are none): a long run's table written without holding it whole (nor
        each event's step and round, repeated from its batch's, for all of them at once)."""
        batches = self._batches.columns()
        ends = np.cumsum(batches["size"])
        kinds = self._special_kinds()
        lo = 0
        for part in self._edges.parts(rows):
            hi = lo + len(part["src"])
            first, last = np.searchsorted(ends, [lo, max(hi - 1, lo)], side="right")
            sizes = np.minimum(ends[first : last + 1], hi) - np.maximum(
                ends[first : last + 1] - batches["size"][first : last + 1], lo
            )
            for name in ("step", "round"):
                part[name] = np.repeat(batches[name][first : last + 1], sizes)
            yield self._edges_frame(part, kinds)
            lo = hi

    def _special_kinds(self) -> np.ndarray:
        """The ``source_kind`` code of each special node (1: a step root, 2: an aggregate)."""
        return np.array([1 if r.startswith("step:") else 2 for r in self.roots], dtype=np.int8)

    def _edges_frame(self, e: dict, special_kind: np.ndarray):
        """:meth:`edges_table` of edge event columns ``e`` (src, dst, weight, step, round)."""
        import pandas as pd

        src = e["src"]
        is_trader = src >= 0
        kinds = np.zeros(src.size, dtype=np.int8)
        if (~is_trader).any():
            kinds[~is_trader] = special_kind[-1 - src[~is_trader]]
        if is_integer_ids(self.ids):
            source = pd.array(
                np.where(is_trader, self.ids[np.where(is_trader, src, 0)], 0), dtype="Int64"
            )
            source[~is_trader] = pd.NA
        else:
            source = id_column(np.where(is_trader, self.ids[np.where(is_trader, src, 0)], None))
        return pd.DataFrame(
            {
                "step": e["step"],
                "round": e["round"],
                "source": source,
                "source_kind": pd.Categorical.from_codes(kinds, ["trader", "step", "others"]),
                "target": id_column(self.ids[e["dst"]]),
                "weight": e["weight"],
            }
        )

    def arrays(self) -> GraphArrays:
        """The merged graph as arrays (cached until the next round is recorded)."""
        cached = self._cache.get("arrays")
        if cached is not None and cached[0] == self._version:
            return cached[1]
        out = self._merged()
        self._cache["arrays"] = (self._version, out)
        return out

    def _merged(self) -> GraphArrays:
        """:meth:`arrays`, not cached: repeated (source, target) events merged into one edge,
        in the order of their keys (special sources first, then by book row and target).

        One stable sort of the events' keys gives each edge's events in the order they were
        recorded: the first one's step and round are the edge's, the last one's step is its
        ``last_step`` (steps never decrease along the log), and its weight is its events'
        weights added in that order (as ``np.bincount`` adds them). Each event's step and
        round are read from its batch, for the few events that need them.
        """
        cols = self._edges.columns()
        n, s = len(self.ids), len(self.roots)
        names = np.empty(s + n, dtype=object)
        names[:s] = self.roots[::-1]  # code -k -> index s - k -> roots[k - 1]
        names[s:] = self.ids.tolist()
        key = (cols["src"].astype(np.int64) + s) * max(n, 1) + cols["dst"]
        order = np.argsort(key, kind="stable")
        key = key.take(order)
        starts = run_starts(key)  # (the first event of each edge)
        uniq = key.take(starts)
        del key
        counts = np.diff(np.append(starts, order.size))
        group = run_labels(starts, order.size)
        weight = np.bincount(group, weights=cols["weight"].take(order), minlength=uniq.size)
        del group
        first, last = order.take(starts), order.take(starts + counts - 1)
        del order
        ends = np.cumsum(self._batches.columns()["size"])  # (each batch's last event + 1)
        step, rnd = self._batch_of(first, ends)
        return GraphArrays(
            node_names=names,
            special=s,
            src=uniq // max(n, 1) - s,
            dst=uniq % max(n, 1),
            weight=weight,
            step=step,
            round=rnd,
            last_step=self._batch_of(last, ends)[0],
            events=counts.astype(np.int64),
        )

    def _batch_of(self, events: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step and round of the edge events at positions ``events`` of the log, from
        their batches (``ends``: where each batch's events end in the log)."""
        batches = self._batches.columns()
        at = np.searchsorted(ends, events, side="right")
        return batches["step"].take(at), batches["round"].take(at)

    def info(self) -> dict:
        """Size and bounding of the graph, for summary.json.

        ``truncated`` says that some round kept only each victim's top contributors (and an
        aggregate edge) because recording all its edges would have passed ``max_edges``.
        """
        return {
            "nodes": int(len(self.roots) + np.count_nonzero(self.events)),
            "edges": self._distinct_edges(),
            "edges_recorded": int(self.edge_count),
            "truncated": bool(self.truncated),
            "truncated_rounds": int(self.truncated_rounds),
            "first_truncated_step": int(self.first_truncated_step),
            "max_edges": int(self.max_edges),
            "top_contributors": int(self.top),
        }

    def _distinct_edges(self) -> int:
        """How many distinct edges the merged graph has (the size of :meth:`arrays`, without
        merging their attributes unless that was done already)."""
        cached = self._cache.get("arrays")
        if cached is not None and cached[0] == self._version:
            return int(cached[1].src.size)
        counted = self._cache.get("distinct")
        if counted is not None and counted[0] == self._version:
            return counted[1]
        e = self._edges.columns()  # (src and dst: no step or round needed)
        n = max(len(self.ids), 1)
        key = (e["src"].astype(np.int64) + len(self.roots)) * n + e["dst"]  # specials first
        size = (len(self.roots) + n) * n
        if size <= _SEEN_PER_EDGE * key.size:  # a mark per possible edge: one pass, no sort
            seen = np.zeros(size, dtype=bool)
            seen[key] = True
            return int(np.count_nonzero(seen))
        key = np.sort(key)
        return int(np.count_nonzero(key[1:] != key[:-1])) + int(key.size > 0)

    def _graph_attrs(self, arrays: GraphArrays) -> dict:
        return {
            "truncated": bool(self.truncated),
            "max_edges": int(self.max_edges),
            "top_contributors": int(self.top),
            "edges_recorded": int(self.edge_count),
            "truncated_rounds": int(self.truncated_rounds),
        }

    def _special_node_records(self):
        """(name, attribute dict) of the special nodes (step roots and aggregates)."""
        out = []
        for name in self.roots:
            parts = name.split(":")
            if parts[0] == "step":
                out.append((name, {"kind": "step", "step": int(parts[1])}))
            else:
                out.append(
                    (name, {"kind": "aggregate", "step": int(parts[1]), "round": int(parts[2])})
                )
        return out

    def _trader_columns(self) -> list[tuple[str, np.ndarray]]:
        """(attribute name, per-row array) of the attributes every liquidated trader's node
        has, in their order; ``initial_leverage`` follows them where it is defined (not for
        an account that started underwater)."""
        return [
            ("first_step", self.first_step),
            ("first_round", self.first_round),
            ("events", self.events),
            ("liquidated_notional", self.notional),
        ]

    def _node_records(self):
        """(name, attribute dict) of every node: special nodes, then liquidated traders."""
        out = self._special_node_records()
        liq = np.flatnonzero(self.events > 0)
        columns = self._trader_columns()
        names = [name for name, _ in columns]
        values = zip(*(column[liq].tolist() for _, column in columns), strict=True)
        leverage = self.initial_leverage[liq]
        defined = np.isfinite(leverage).tolist()
        cols = zip(self.ids[liq].tolist(), values, leverage.tolist(), defined, strict=True)
        for tid, row, lev, lev_defined in cols:
            attrs = {"kind": "trader", **dict(zip(names, row, strict=True))}
            if lev_defined:
                attrs["initial_leverage"] = lev
            out.append((tid, attrs))
        return out

    def graph(self):
        """The networkx DiGraph (cached until the next round; copy it before editing it)."""
        cached = self._cache.get("graph")
        if cached is not None and cached[0] == self._version:
            return cached[1]
        import networkx as nx

        a = self.arrays()
        g = nx.DiGraph(**self._graph_attrs(a))
        # The graph is filled through the node, successor and predecessor dicts DiGraph keeps
        # (the layout its subclassing notes describe): every node is new and every (source,
        # target) pair distinct, so nothing needs checking, and each edge's data dict is
        # shared by both directions as ``add_edge`` stores it. ``add_nodes_from`` and
        # ``add_edges_from`` copy every dict and take about three times as long.
        for name, attrs in self._node_records():
            g._node[name] = attrs
            g._succ[name] = {}
            g._pred[name] = {}
        data = [
            {"weight": w, "step": st, "round": rd, "last_step": ls, "events": ev}
            for w, st, rd, ls, ev in zip(*_edge_attribute_lists(a), strict=True)
        ]
        if a.src.size == 0:
            self._cache["graph"] = (self._version, g)
            return g
        names = a.node_names
        dst_names = self.ids[a.dst]
        # edges are sorted by source: one dict update per source node
        cuts = np.flatnonzero(np.diff(a.src)) + 1
        starts, stops = np.r_[0, cuts].tolist(), np.r_[cuts, a.src.size].tolist()
        dst_list = dst_names.tolist()
        for lo, hi in zip(starts, stops, strict=True):
            g._succ[names[a.src[lo] + a.special]].update(
                zip(dst_list[lo:hi], data[lo:hi], strict=True)
            )
        # and by target, for the predecessor dicts
        order = np.argsort(a.dst, kind="stable")
        by_dst = a.dst[order]
        cuts = np.flatnonzero(np.diff(by_dst)) + 1
        starts, stops = np.r_[0, cuts].tolist(), np.r_[cuts, by_dst.size].tolist()
        src_sorted = names[a.src[order] + a.special].tolist()
        data_sorted = [data[i] for i in order.tolist()]
        for lo, hi in zip(starts, stops, strict=True):
            g._pred[dst_list[order[lo]]].update(
                zip(src_sorted[lo:hi], data_sorted[lo:hi], strict=True)
            )
        self._cache["graph"] = (self._version, g)
        return g

    # ---- files -------------------------------------------------------------------------------
    def write_graphml(self, path, *, compress: bool | None = None) -> None:
        """Write the graph as GraphML (Gephi, Cytoscape, igraph, ``networkx.read_graphml``).

        Args:
            path: the file.
            compress: gzip the file; by default when ``path`` ends in ``.gz``, as networkx
                does for such names (its reader opens them directly). The compressed bytes
                depend only on the graph.
        """
        with _open_text(path, compress) as fh:
            _write_behind(fh, self._graphml_lines(self._arrays_once()))

    def _arrays_once(self) -> GraphArrays:
        """:meth:`arrays` for one use (writing a file): the cached arrays if there are any,
        else merged and not kept (a long run's merged graph is about as large as its edge
        log), keeping only how many edges it has (:meth:`info`)."""
        cached = self._cache.get("arrays")
        if cached is not None and cached[0] == self._version:
            return cached[1]
        out = self._merged()
        self._cache["distinct"] = (self._version, int(out.src.size))
        return out

    def _graphml_lines(self, a: GraphArrays):
        """The GraphML document, line by line (never the whole text in memory at once)."""
        node_keys = [
            ("kind", "string"),
            ("step", "long"),
            ("round", "long"),
            ("first_step", "long"),
            ("first_round", "long"),
            ("events", "long"),
            ("liquidated_notional", "double"),
            ("initial_leverage", "double"),
        ]
        edge_keys = [
            ("weight", "double"),
            ("step", "long"),
            ("round", "long"),
            ("last_step", "long"),
            ("events", "long"),
        ]
        graph_keys = [
            ("truncated", "boolean"),
            ("max_edges", "long"),
            ("top_contributors", "long"),
            ("edges_recorded", "long"),
            ("truncated_rounds", "long"),
        ]
        nid = {k: f"n{i}" for i, (k, _) in enumerate(node_keys)}
        eid = {k: f"e{i}" for i, (k, _) in enumerate(edge_keys)}
        gid = {k: f"g{i}" for i, (k, _) in enumerate(graph_keys)}
        yield "<?xml version='1.0' encoding='utf-8'?>\n"
        yield (
            '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
            'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
        )
        for keys, ids, dom in (
            (graph_keys, gid, "graph"),
            (node_keys, nid, "node"),
            (edge_keys, eid, "edge"),
        ):
            for k, t in keys:
                yield f'  <key id="{ids[k]}" for="{dom}" attr.name="{k}" attr.type="{t}" />\n'
        yield '  <graph edgedefault="directed">\n'
        for k, v in self._graph_attrs(a).items():
            yield f'    <data key="{gid[k]}">{_xml_value(v)}</data>\n'
        # the special nodes' names need no escaping (trader ids may: _node_texts)
        for name, attrs in self._special_node_records():
            data = "".join(f'<data key="{nid[k]}">{_xml_value(v)}</data>' for k, v in attrs.items())
            yield f'    <node id="{name}">{data}</node>\n'
        names = self._node_texts(a)
        yield from self._graphml_trader_nodes(names[a.special :], nid)
        yield from _graphml_edges(names, a, [eid[k] for k, _ in edge_keys])
        yield "  </graph>\n</graphml>\n"

    def _graphml_trader_nodes(self, names, keys: dict):
        """The ``<node>`` elements of the liquidated traders (``names``: the text of each
        book row's id; ``keys``: attribute name -> GraphML key id), a chunk of lines at a time,
        joined by Arrow as :func:`_graphml_edges` joins the edges; ``initial_leverage`` left
        out where it is undefined (an account that started underwater)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        liq = np.flatnonzero(self.events > 0)
        columns = self._trader_columns()
        for lo in range(0, liq.size, _EDGE_CHUNK):
            rows = liq[lo : lo + _EDGE_CHUNK]
            pieces = [
                '    <node id="',
                names.take(rows),
                f'"><data key="{keys["kind"]}">trader</data>',
            ]
            for name, column in columns:
                pieces += [f'<data key="{keys[name]}">', _texts(column[rows]), "</data>"]
            leverage = self.initial_leverage[rows]
            defined = _joined(
                [f'<data key="{keys["initial_leverage"]}">', _texts(leverage), "</data>"]
            )
            pieces += [
                pc.if_else(pa.array(np.isfinite(leverage)), defined, ""),
                "</node>\n",
            ]
            yield _text(_joined(pieces))

    def _node_texts(self, a: GraphArrays):
        """The GraphML text of every node's name, in the order of ``a.node_names``, as an
        Arrow string array (integer ids converted by Arrow, string ids escaped)."""
        import pyarrow as pa

        if is_integer_ids(self.ids):
            special = pa.array(a.node_names[: a.special].tolist(), pa.string())
            return pa.concat_arrays([special, _texts(self.ids)])
        return pa.array([_xml_attribute(x) for x in a.node_names.tolist()], pa.string())

    def write_node_link(self, path, *, compress: bool | None = None) -> None:
        """Write the graph as node-link JSON (``networkx.node_link_graph(data)`` reads it);
        ``compress`` as for :meth:`write_graphml`."""
        a = self._arrays_once()
        nodes = [json.dumps({"id": name, **attrs}) for name, attrs in self._node_records()]
        # JSON text of each node: integer ids as numbers, string ids and special nodes as
        # strings
        to_json = str if is_integer_ids(self.ids) else json.dumps
        encoded = np.empty(a.node_names.size, dtype=object)
        encoded[: a.special] = [json.dumps(r) for r in self.roots[::-1]]
        encoded[a.special :] = [to_json(i) for i in self.ids.tolist()]
        src = encoded[a.src + a.special].tolist()
        dst = encoded[a.dst + a.special].tolist()
        edges = [
            f'{{"source": {s}, "target": {d}, "weight": {w!r}, "step": {st}, '
            f'"round": {rd}, "last_step": {ls}, "events": {ev}}}'
            for s, d, w, st, rd, ls, ev in zip(src, dst, *_edge_attribute_lists(a), strict=True)
        ]
        head = json.dumps({"directed": True, "multigraph": False, "graph": self._graph_attrs(a)})[
            :-1
        ]
        text = (
            head
            + ', "nodes": [\n'
            + ",\n".join(nodes)
            + '\n], "edges": [\n'
            + ",\n".join(edges)
            + "\n]}\n"
        )
        with _open_text(path, compress) as fh:
            fh.write(text)


# Edges joined into GraphML text at a time by :func:`_graphml_edges` (about 12 MB of text).
_EDGE_CHUNK = 1 << 16


def _graphml_edges(names, a: GraphArrays, keys):
    """The ``<edge>`` elements of the merged edges ``a`` (``names``: the text of each node, by
    its index in ``a.node_names``; ``keys``: the GraphML key ids of weight, step, round,
    last_step and events), a chunk of lines at a time.

    Arrow joins the columns into lines: a million edges take well under a second, against
    three with a Python f-string a line, most of it spent writing the weights. Integers are
    written as Python writes them; weights as the shortest text that reads back to the same
    double, in Arrow's notation (``1`` for 1.0, ``0.00001`` for 1e-05): GraphML declares the
    key's type, and readers parse it as a double.
    """
    columns = (a.weight, a.step, a.round, a.last_step, a.events)
    for lo in range(0, a.src.size, _EDGE_CHUNK):
        hi = min(lo + _EDGE_CHUNK, a.src.size)
        pieces = [
            '    <edge source="',
            names.take(a.src[lo:hi] + a.special),
            '" target="',
            names.take(a.dst[lo:hi] + a.special),
            '">',
        ]
        for key, column in zip(keys, columns, strict=True):
            pieces += [f'<data key="{key}">', _texts(column[lo:hi]), "</data>"]
        pieces.append("</edge>\n")
        yield _text(_joined(pieces))


def _write_behind(fh, texts) -> None:
    """Write ``texts`` to ``fh`` in order, each while the next is made: the writes (gzip's
    compression, which releases the GIL, half the time of a large graph's file) run in one
    thread behind the caller, at most one text behind, so the bytes are those of plain
    writes and at most two texts are held at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for text in texts:
            if pending is not None:
                pending.result()  # (raises the write's error here, if it failed)
            pending = writer.submit(fh.write, text)
        if pending is not None:
            pending.result()


def _texts(column: np.ndarray):
    """A numpy column as Arrow strings: integers as Python writes them, doubles as the shortest
    text that reads back to the same double (Arrow's notation)."""
    import pyarrow as pa

    return pa.array(column).cast(pa.string())


def _joined(pieces):
    """Arrow string arrays (of one length) and literal strings joined element-wise."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*pieces, "")  # (the last argument: no separator)


def _text(lines) -> str:
    """An Arrow string array's strings end to end, as one text: they lie so in its data
    buffer, between its first and last offset."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset :]
    return str(memoryview(lines.buffers()[2])[offsets[0] : offsets[len(lines)]], "utf-8")


# gzip level of compressed graph files: 6, gzip's own default (the baseline's GraphML shrinks
# about thirtyfold, docs/contagion.md).
GZIP_LEVEL = 6


@contextlib.contextmanager
def _open_text(path, compress: bool | None = None):
    """A UTF-8 text file for writing, gzip-compressed when ``compress`` is true (by default
    when ``path`` ends in ``.gz``).

    The gzip header carries no file name and a zero time stamp, so the same graph gives the
    same bytes (runs with the same seed write identical folders).
    """
    path = Path(path)
    if not (path.suffix == ".gz" if compress is None else compress):
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
        return
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz,
        io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh,
    ):
        yield fh


def _xml_attribute(v) -> str:
    """Text of an XML attribute value that reads back exactly (quotes, ampersands, angle
    brackets and whitespace characters escaped)."""
    return escape(str(v), {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def _xml_value(v) -> str:
    """A GraphML data value: booleans in lower case, floats round-tripping exactly."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _edge_attribute_lists(a):
    """The merged edges' attributes as Python lists: weight, step, round, last_step, events."""
    return (
        a.weight.tolist(),
        a.step.tolist(),
        a.round.tolist(),
        a.last_step.tolist(),
        a.events.tolist(),
    )
