"""Compiled kernels (numba, optional): row loops that fuse what numpy does in many passes.

The engine's per-row arithmetic is written with numpy, a few dozen whole-array operations per
call on the rows it gathered (``np.take``: the fastest way to read rows scattered through a
large book). On the rows of a liquidation round (a few hundred) each operation costs a
microsecond or two of call overhead; on (k, A) arrays with a few assets, an operation with an
(A,) array (a price) loops over A entries at a time, several times slower than over the
whole array. The kernels here do the same arithmetic in one loop over the gathered rows:

* :func:`apply_fills`: :func:`model.accounts.apply_fills`, and the realised PnL that
  :meth:`model.accounts.AccountBook.fill` adds to the wallets (and its cash flow ``dq P``);
* :func:`close_cross_books`: a liquidation round that closes whole cross books
  (:meth:`model.liquidation.LiquidationEngine._close_cross_books`): the fill of every
  position, the fee from what equity is left and the write-off of negative wallets, which
  numpy does in a few dozen calls on the round's few hundred rows
  (:func:`close_cross_books_of` reads the rows from the book and writes them back:
  :meth:`model.accounts.AccountBook.close_cross_books`);
* :func:`equities`: :meth:`model.accounts.AccountBook.equity` and
  :meth:`model.accounts.AccountBook.cross_equity` (without the collateral holdings);
* :func:`column_sums`: ``x.sum(axis=0)`` of a batch's (k, A) orders or fills
  (:func:`model.accounts.column_sum`), which numpy computes one row at a time;
* :func:`cap_orders`: one sizing of the initial-margin cap of voluntary orders
  (:func:`model.orders._cap_batch`), with :func:`model.orders.split_order` of each order and
  the column sums of the capped batch;
* :func:`liquidatable`: :meth:`model.accounts.AccountBook.cross_liquidatable` and
  :meth:`model.accounts.AccountBook.isolated_liquidatable`, the exact margin check, and
  :func:`cross_liquidatable_rows`, the check of a book without isolated positions that reads
  the candidates' rows from the book and returns those below maintenance;
* :func:`headroom`: :func:`model.screen.headroom` of the margin screen, and
  :func:`reached_rows`, its query's rows once the changes are absorbed (each lane's reached
  rows and the changed list's, the sorted parts compacted as the numpy query does);
  :func:`closed_then_below`, the query after a round of whole closes and the cross check of
  its rows in one call; :func:`lane_pool` and :func:`keep_below`, the rows a lane is
  extended with;
* :func:`partial_fractions`: :func:`model.partial.partial_fraction`, a unit at a time;
* :func:`paying_profits`: the paper profits ADL's haircut takes
  (:func:`model.adl._haircut_profits`), and :func:`due_and_flat`, the accounts the re-entry
  rule brings back (:meth:`model.reentry.Reentry.orders`);
* the bookkeeping of a liquidation round, a few dozen numpy calls whatever its size:
  :func:`count_liquidations` (the engine's counts of the accounts liquidated) and
  :func:`log_closed_books` (those counts and a round of whole closes' fills, written into the
  fill log's room),
  :func:`sort_out_changed` (the screen's sorting out of the rows a round changed), and the
  contagion recorder's :func:`note_victims` (the victims' node attributes),
  :func:`one_asset_factors` (a one-asset round's attribution factors, with sums added in
  numpy's pairwise order), :func:`top_edges_of_unit_rows` (the edges kept of a round past
  the edge budget when each victim lost on one asset), :func:`unit_rows_edges` (every
  edge of such a round within the budget), :func:`one_asset_round` (a one-asset round's
  counters, factors and kept edges at once) and :func:`whole_close_rounds` (the rounds of a
  compiled call's whole closes, one after the other).

Each is the twin of the numpy function it names, with the same operations in the same order
(sums over a row's assets from the first, as :func:`model.accounts.row_sum` adds them), so
fills, checks, caps, rounds and the screen's headrooms are equal to the bit;
tests/test_kernels.py compares them on random books, and whole runs with and without them. The
headroom's logarithm is left out of the kernel: numpy takes it afterwards, vectorised, on both
paths (:func:`model.screen.to_headroom`).

They are used when numba is installed (the optional extra ``fast``) and the environment
variable ``CONTAGION_NUMBA`` is not ``0``: :func:`enabled` imports numba and compiles the
kernels on first use (cached on disk, in ``model/__pycache__``), and the engine calls the numpy
functions otherwise. The account book's own arithmetic (fills, the exact check, equities) and
a round's bookkeeping go to them for every batch of a book of at least :data:`MIN_ROWS`
accounts, the few hundred rows of a liquidation round as well as the whole book: there one
compiled call costs less than numpy's dozens. The margin cap, the screen's headroom and column
sums take them for batches of at least :data:`MIN_ROWS` rows. Small books stay with numpy: a
process that never meets a large book (a sweep's worker, a small run) never pays numba's
import and the kernels' load (about a second). Without numba the functions below are plain
Python and never called.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = [
    "MIN_ROWS",
    "apply_fills",
    "cap_orders",
    "close_cross_books",
    "close_cross_books_of",
    "closed_then_below",
    "closed_then_reached",
    "closing_rounds",
    "column_sums",
    "count_liquidations",
    "cross_liquidatable_rows",
    "due_and_flat",
    "enabled",
    "equities",
    "headroom",
    "keep_below",
    "lane_pool",
    "liquidatable",
    "log_closed_books",
    "note_victims",
    "one_asset_factors",
    "one_asset_round",
    "partial_fractions",
    "paying_profits",
    "reached_rows",
    "sort_out_changed",
    "static_walk",
    "sums_of_rows",
    "top_edges_of_unit_rows",
    "unit_rows_edges",
    "use",
    "walk_and_close",
    "whole_close_rounds",
    "writable",
]

# Least accounts of a book whose own arithmetic the kernels take, and least rows of a batch of
# the margin cap, the screen or a column sum (fewer: the numpy functions)
MIN_ROWS = 4096

_enabled: bool | None = None


def use(rows: int) -> bool:
    """Whether the arithmetic of ``rows`` rows (a book's accounts or a batch's rows, as the
    caller decides) goes to the kernels: at least :data:`MIN_ROWS`, and :func:`enabled`."""
    return rows >= MIN_ROWS and enabled()


def writable(x: np.ndarray) -> np.ndarray:
    """``x``, or a copy of it when it is read-only (a gather the book shares): numba types
    read-only and writable arrays apart, so a read-only input would compile each kernel it
    reaches a second time, and the kernels are called with writable arrays only."""
    return x if x.flags.writeable else x.copy()


def enabled() -> bool:
    """Whether the compiled kernels are in use (numba installed, ``CONTAGION_NUMBA`` not 0);
    on the first call, compile them (numba compiles each on its first use, from its cache)."""
    global _enabled
    if _enabled is None:
        _enabled = False
        if os.environ.get("CONTAGION_NUMBA", "1") != "0":
            try:
                import numba
            except ImportError:
                return False
            # floats divide as numpy does (inf, NaN), not raising as Python does
            jit = numba.njit(cache=True, nogil=True, error_model="numpy")
            g = globals()
            for name in _COMPILED:  # helpers first: a kernel resolves them when it compiles
                g[name] = jit(g[name])
            _enabled = True
    return _enabled


# --------------------------------------------------------------------------------------------
# Branch-free choices
# --------------------------------------------------------------------------------------------

# Choices between two values are written as ``x if c else y`` with both computed first, so the
# compiler emits a select instead of a branch: the signs of orders and positions are random,
# and a branch on them is mispredicted half the time (about 15 cycles each, more than the
# arithmetic). In a loop that adds into one sum row after row the compiler works one row at a
# time and moves a chosen quotient into a branch; the kernels over many rows therefore go one
# asset at a time and keep such sums in loops of their own, so that the loop that divides has
# rows independent of each other and is vectorised, its choices selects.


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


def _minimum(a, b):
    """``np.minimum`` of two floats: NaN when either is, ``b`` when they are equal (of 0.0
    and -0.0, the second)."""
    least = a if a < b else b
    return a + b if (a != a) | (b != b) else least


def _tier(caps, a, x):
    """:meth:`model.accounts.TierTable.tier_index` of one notional ``x`` of asset ``a``: the
    first tier whose cap is at least ``x`` (the last for NaN, as numpy sorts it)."""
    last = caps.shape[1] - 1
    if x != x:
        return last
    t = 0
    while t < last and caps[a, t] < x:
        t += 1
    return t


def _maintenance(caps, rates, cums, a, notional):
    """:func:`model.accounts.maintenance_margin` of one position of asset ``a``."""
    if caps.shape[1] == 1:
        return notional * rates[a, 0]
    t = _tier(caps, a, notional)
    mm = notional * rates[a, t] - cums[a, t]
    if mm != mm:
        return mm
    return mm if mm >= 0.0 else 0.0


# --------------------------------------------------------------------------------------------
# Fills
# --------------------------------------------------------------------------------------------


def apply_fills(qty, entry, isolated, dq, price, new_qty, new_entry, realized, closed, cash,
                traded, net):  # fmt: skip
    """:func:`model.accounts.apply_fills` of ``dq`` (k, A) at ``price`` ((1, A): one price per
    asset, or (k, A)) on positions ``qty``, ``entry`` (k, A) into ``new_qty``, ``new_entry``,
    ``realized`` and ``closed``; ``cash`` (k,) receives the realised PnL of the cross
    positions (``isolated`` False), summed over the row's assets from the first as
    :func:`model.accounts.row_sum` adds them: what :meth:`model.accounts.AccountBook.fill`
    adds to the wallet; ``traded`` (k, A) receives ``dq * price`` (the fill's cash flow) and
    ``net`` (A,) the column sums of ``dq`` as :func:`column_sums` adds them (the traders' net
    quantity moves by it), read while the fill reads ``dq`` anyway.

    One asset at a time over all the rows, as :func:`cap_orders` goes: each row's fill of
    the asset is independent of the others', so the compiler fills several rows at once
    (vector instructions, the choices as selects); the column sums, which must add the rows
    one after another, are a loop of their own."""
    k, n_assets = dq.shape
    for a in range(n_assets):
        total = 0.0
        for j in range(k):
            total += dq[j, a]
        net[a] = total
    for a in range(n_assets):
        first = a == 0  # (a row's sum starts from 0.0, as row_sum's does)
        if price.shape[0] > 1:
            for j in range(k):
                _fill_one(qty, entry, isolated, dq, price[j, a], new_qty, new_entry, realized,
                          closed, cash, traded, j, a, first)  # fmt: skip
        else:
            p = price[0, a]
            for j in range(k):
                _fill_one(qty, entry, isolated, dq, p, new_qty, new_entry, realized, closed,
                          cash, traded, j, a, first)  # fmt: skip


def _fill_one(qty, entry, isolated, dq, p, new_qty, new_entry, realized, closed, cash, traded,
              j, a, first):  # fmt: skip
    """The fill of row ``j``'s position in asset ``a`` at ``p`` (:func:`apply_fills`)."""
    q, e, d = qty[j, a], entry[j, a], dq[j, a]
    abs_q, abs_d = abs(q), abs(d)
    new_q = q + d
    opposite = q * d < 0
    c = np.sign(q) * _minimum(abs_d, abs_q)
    c = c if opposite else 0.0
    r = c * (p - e)
    dp = d * p
    averaged = (q * e + dp) / new_q
    new_e = averaged if d != 0 else e
    flip_e = p if abs_d > abs_q else e
    new_e = flip_e if opposite else new_e
    flat = abs(new_q) <= 1e-12 * max(abs_q, abs_d)  # (NaN: False, as numpy compares)
    new_q = 0.0 if flat else new_q
    new_e = 0.0 if flat else new_e
    new_qty[j, a], new_entry[j, a], realized[j, a], closed[j, a] = new_q, new_e, r, c
    traded[j, a] = dp
    cross_r = 0.0 if isolated[j, a] else r
    cash[j] = cross_r + 0.0 if first else cash[j] + cross_r


def close_cross_books(wallet, qty, entry, price, fee_rate, new_wallet, notional, fee, bad,
                      traded, paid, debt, row_notional):  # fmt: skip
    """A full liquidation round of cross books (no isolated position, no collateral asset):
    :meth:`model.accounts.AccountBook.fill` of ``-qty`` at ``price`` (A,), then
    :meth:`model.liquidation.LiquidationEngine._charge_fees` and ``_write_off`` of the closed
    books, the same operations in the same order. Reads each row's ``wallet`` (k,), ``qty``
    and ``entry`` (k, A); writes the wallet after all three into ``new_wallet``, the closed
    ``notional`` and the ``fee`` and ``bad`` debt spread over it (k, A), the fill's ``traded``
    cash flow ``dq P`` (k, A), what each row ``paid``, the ``debt`` written off and its closed
    notional (``row_notional``, summed as :func:`model.accounts.row_sum` sums it) (k,).

    Returns whether any row had debt (the write-off then credits every row, 0 to most)."""
    k, n_assets = qty.shape
    any_debt = False
    for j in range(k):
        to_wallet = 0.0
        closed = 0.0
        for a in range(n_assets):
            q, p = qty[j, a], price[a]
            d = -q
            c = np.sign(q) * _minimum(abs(d), abs(q))
            c = c if q * d < 0 else 0.0
            r = c * (p - entry[j, a])
            traded[j, a] = d * p
            to_wallet = r + 0.0 if a == 0 else to_wallet + r
            n = abs(q) * p
            notional[j, a] = n
            closed = n + 0.0 if a == 0 else closed + n
        row_notional[j] = closed
        equity = (wallet[j] + to_wallet) + 0.0  # the closed book's unrealised PnL is 0
        due = fee_rate * closed
        pay = _minimum(_maximum(due, 0.0), _maximum(equity, 0.0))
        paid[j] = pay
        left = (wallet[j] + to_wallet) - pay
        new_wallet[j] = left
        owed = _maximum(-left, 0.0)
        debt[j] = owed
        any_debt |= owed != 0.0
        for a in range(n_assets):
            fee[j, a] = 0.0 + pay * _spread_share(notional[j, a], closed, pay, a)
            bad[j, a] = 0.0
    if any_debt:
        for j in range(k):
            new_wallet[j] += debt[j]
            closed = row_notional[j]
            for a in range(n_assets):
                bad[j, a] = 0.0 + debt[j] * _spread_share(notional[j, a], closed, debt[j], a)
    return any_debt


def close_cross_books_of(rows, book_wallet, book_qty, book_entry, qty, price, fee_rate,
                         new_wallet, notional, fee, bad, traded, paid, debt, net, row_notional,
                         sums):  # fmt: skip
    """:func:`close_cross_books` of the book's ``rows`` (distinct), whose positions ``qty``
    (k, A) were read already (the round's flow needed them), written back into the book:
    their wallets and entries read from ``book_wallet`` and ``book_entry``, then every
    position flat and every wallet its ``new_wallet``. Returns whether any row had debt.

    Also the round's sums, each added as numpy adds it: ``net`` (A,) the column sums of the
    fill ``-qty`` (:func:`model.accounts.column_sum`), ``row_notional`` (k,) each row's closed
    notional (:func:`model.accounts.row_sum`), and ``sums`` the totals of ``traded``,
    ``paid``, ``debt``, ``fee``, ``bad`` and ``notional`` (``x.sum()``)."""
    k, n_assets = qty.shape
    wallet = np.empty(k)
    entry = np.empty((k, n_assets))
    for j in range(k):
        r = rows[j]
        wallet[j] = book_wallet[r]
        for a in range(n_assets):
            entry[j, a] = book_entry[r, a]
    any_debt = close_cross_books(
        wallet,
        qty,
        entry,
        price,
        fee_rate,
        new_wallet,
        notional,
        fee,
        bad,
        traded,
        paid,
        debt,
        row_notional,
    )
    for j in range(k):
        r = rows[j]
        book_wallet[r] = new_wallet[j]
        for a in range(n_assets):
            book_qty[r, a] = 0.0
            book_entry[r, a] = 0.0
    _round_sums(qty, notional, fee, bad, traded, paid, debt, net, sums)
    return any_debt


def sums_of_rows(rows, wallet, qty, entry, margin, out):
    """``take_rows(x, rows).sum()`` of the book's ``wallet``, ``qty``, ``entry`` and
    ``margin`` into ``out`` (4,), each added as numpy adds the gathered rows (pairwise over
    them, a row's assets in turn): the sums of :meth:`model.ContagionModel.check_finite`."""
    k, n_assets = rows.size, qty.shape[1]
    one = np.empty(k)
    for j in range(k):
        one[j] = wallet[rows[j]]
    out[0] = _pairwise_sum(one)
    many = np.empty(k * n_assets)
    out[1] = _gathered_sum(qty, rows, many)
    out[2] = _gathered_sum(entry, rows, many)
    out[3] = _gathered_sum(margin, rows, many)


def _gathered_sum(x, rows, many):
    """``x[rows].sum()`` of a (n, A) array, the rows gathered into ``many`` first."""
    n_assets = x.shape[1]
    for j in range(rows.size):
        for a in range(n_assets):
            many[j * n_assets + a] = x[rows[j], a]
    return _pairwise_sum(many)


def _round_sums(qty, notional, fee, bad, traded, paid, debt, net, sums):
    """The sums of :func:`close_cross_books_of`: the fill's column sums as numpy adds them
    (:func:`_column_sum`), each total pairwise."""
    k, n_assets = qty.shape
    sold = np.empty((k, n_assets))
    for j in range(k):
        for a in range(n_assets):
            sold[j, a] = -qty[j, a]
    _column_sum(sold, net)
    sums[0] = _pairwise_sum(traded.reshape(-1))
    sums[1] = _pairwise_sum(paid)
    sums[2] = _pairwise_sum(debt)
    sums[3] = _pairwise_sum(fee.reshape(-1))
    sums[4] = _pairwise_sum(bad.reshape(-1))
    sums[5] = _pairwise_sum(notional.reshape(-1))


def _spread_share(weight, total, amount, a):
    """The share of position ``a`` in :func:`model.liquidation._spread` of ``amount`` over a
    row's ``weight`` (its ``total``): ``weight / total``, or all of it on the first position
    when the row's weights are not positive."""
    share = weight / total if total > 0 else 0.0
    if total <= 0 and amount != 0.0:
        share = 1.0 if a == 0 else 0.0
    return share


def equities(wallet, margin, qty, entry, isolated, mark, cross, out):
    """Equity of the rows given into ``out`` (k,): with ``cross``,
    :func:`model.accounts._cross_equity` (wallet plus the unrealised PnL of the positions not
    ``isolated``; ``margin`` not read); without, the wallet, margins and unrealised PnL of
    :meth:`model.accounts.AccountBook.equity` (``isolated`` not read). Sums over a row's
    assets from the first, as :func:`model.accounts.row_sum` adds them."""
    k, n_assets = qty.shape
    for j in range(k):
        held, pnl = 0.0, 0.0
        for a in range(n_assets):
            p = qty[j, a] * (mark[a] - entry[j, a])
            m = 0.0
            if cross:
                p = 0.0 if isolated[j, a] else p
            else:
                m = margin[j, a]
            held = m + 0.0 if a == 0 else held + m
            pnl = p + 0.0 if a == 0 else pnl + p
        out[j] = wallet[j] + pnl if cross else (wallet[j] + held) + pnl


def column_sums(x, out):
    """``x.sum(axis=0)`` of a (k, A) array into ``out`` (A,): numpy adds each column from the
    first row down, one row at a time, when the rows are short (a reduction over the outer
    axis), and so does this loop."""
    k, n_assets = x.shape
    for a in range(n_assets):
        out[a] = 0.0
    for j in range(k):
        for a in range(n_assets):
            out[a] += x[j, a]


def _column_sum(x, out):
    """:func:`model.accounts.column_sum` of a (k, A) C array into ``out`` (A,), as numpy
    adds it: one column pairwise, as a contiguous run (:func:`_pairwise_sum`), several
    columns row by row (:func:`column_sums`)."""
    if x.shape[1] == 1:
        out[0] = _pairwise_sum(x.reshape(-1))
    else:
        column_sums(x, out)


# --------------------------------------------------------------------------------------------
# The initial-margin cap of voluntary orders
# --------------------------------------------------------------------------------------------


def _split(q, d):
    """:func:`model.orders.split_order` of one position ``q`` and order ``d``: the position
    once the reducing part is done, and the quantity opened beyond it."""
    new = q + d
    flipped = 0.0 if abs(d) > abs(q) else new
    r = flipped if q * d < 0 else q
    return r, new - r


def cap_orders(qty, dq, held_iso, iso, equity, open_lev, max_lev, price, sizing, last, scale,
               factor, dq_out, net, work):  # fmt: skip
    """One sizing of :func:`model.orders._cap_batch` at the price ``sizing``, from the orders
    ``dq`` as sent: the split of each order (:func:`_split`), the cap and the column sums of
    the capped orders.

    Each order is split into its reducing part and what it opens; the opening part is scaled
    by ``scale`` (k,), the factor of the sizings before (ones before the first), and the cap
    of :func:`model.orders._cap_factor` is applied: the cross equity ``equity`` moved from
    ``price`` to ``sizing`` by the positions not ``held_iso``, what is held margined at
    ``max_lev`` (cross positions: not ``iso``), what is opened at ``min(open_lev,
    max_lev)``. ``factor`` (k,) receives this sizing's factor, ``dq_out`` (k, A) the orders
    ``reduced - qty + opened`` (opened scaled, 0 where a factor is not positive), on the
    ``last`` pass set to 0 where they are within rounding of nothing (``1e-12 |qty|``), and
    ``net`` (A,) their column sums, added row by row from the first as :func:`column_sums`
    adds them (the batch's net flow, which the next sizing and the execution need).

    One asset at a time over all the rows (a row's sums over its assets kept in ``work``, (3,
    k), and added in the same order): loops that simple let the compiler divide several rows
    at once, without branches, where a loop over rows with one over assets inside waits on
    two divisions in a row for each row. Splitting again for the orders costs less than
    writing the split and reading it back.
    """
    k, n_assets = qty.shape
    moved, held, cost = work[0], work[1], work[2]
    for a in range(n_assets):
        move, at, cap = sizing[a] - price[a], sizing[a], max_lev[a]
        for j in range(k):
            r, o = _split(qty[j, a], dq[j, a])
            scaled = scale[j] * o
            o = scaled if scale[j] > 0 else 0.0
            shift = (0.0 if held_iso[j, a] else qty[j, a]) * move
            held_a = abs(r) * at / cap
            held_a = 0.0 if iso[j, a] else held_a
            cost_a = abs(o) * at / _minimum(open_lev[j, a], cap)
            first = a == 0  # (a row's sums start from 0.0, as row_sum's do)
            moved[j] = shift + 0.0 if first else moved[j] + shift
            held[j] = held_a + 0.0 if first else held[j] + held_a
            cost[j] = cost_a + 0.0 if first else cost[j] + cost_a
    for j in range(k):
        ratio = ((equity[j] + moved[j]) - held[j]) / cost[j]
        capped = _minimum(_maximum(ratio, 0.0), 1.0)
        factor[j] = capped if cost[j] > 0 else 1.0
    for a in range(n_assets):
        total = 0.0
        for j in range(k):
            r, o = _split(qty[j, a], dq[j, a])
            scaled = scale[j] * o
            o = scaled if scale[j] > 0 else 0.0
            scaled = factor[j] * o
            o = scaled if factor[j] > 0 else 0.0
            d = r - qty[j, a] + o
            tiny = last & (not abs(d) > 1e-12 * abs(qty[j, a]))
            d = 0.0 if tiny else d
            dq_out[j, a] = d
            total += d
        net[a] = total


def _maximum(a, b):
    """``np.maximum`` of two floats: NaN when either is, ``b`` when they are equal (of 0.0
    and -0.0, the second)."""
    most = a if a > b else b
    return a + b if (a != a) | (b != b) else most


# --------------------------------------------------------------------------------------------
# Partial liquidation
# --------------------------------------------------------------------------------------------


def _slack(equity, notional, total, caps, rates, cums, fee, buffer, i, f):
    """:meth:`model.partial._Unit.slack` of unit ``i`` at ``f``: the same operations in the
    same order (the maintenance margins of the notionals left added from the first asset)."""
    mm = 0.0
    for a in range(notional.shape[1]):
        m = _maintenance(caps, rates, cums, a, (1.0 - f) * notional[i, a])
        mm = m + 0.0 if a == 0 else mm + m
    return equity[i] - fee * f * total[i] - (1.0 + buffer) * mm


def partial_fractions(equity, notional, total, kinks, caps, rates, cums, fee, buffer, eps,
                      growth, tries, out):  # fmt: skip
    """:func:`model.partial.partial_fraction` of every unit into ``out``, one unit at a time:
    its breakpoints (``1 - kink / notional`` inside (0, 1), with 0 and 1) sorted, the slack
    at each, the root on the first piece whose right end is restored, nudged up as
    ``_nudge`` does; 1 where no piece is restored. ``total`` (k,) is each unit's notional
    (:func:`model.accounts.row_sum`), ``kinks`` (A, P) the tiers' kinks
    (:func:`model.partial._kinks`); ``eps``, ``growth`` and ``tries`` the nudge's first step,
    its growth and its number of steps. The same arithmetic as numpy's columns of breakpoints
    (leading zeros repeat the slack at 0, so the first root is the same), to the bit."""
    n_assets, n_kinks = kinks.shape
    points = np.empty(2 + n_assets * n_kinks)
    for i in range(notional.shape[0]):
        m = 1
        points[0] = 0.0
        for a in range(n_assets):
            for p in range(n_kinks):
                f = 1.0 - kinks[a, p] / notional[i, a]
                points[m] = f if (f > 0.0) & (f < 1.0) else 0.0
                m += 1
        points[m] = 1.0
        m += 1
        for t in range(1, m):  # (insertion sort: a few dozen points)
            x = points[t]
            u = t - 1
            while u >= 0 and points[u] > x:
                points[u + 1] = points[u]
                u -= 1
            points[u + 1] = x
        f0, s0 = 0.0, 0.0
        result = 1.0
        for j in range(m):
            f1 = points[j]
            s1 = _slack(equity, notional, total, caps, rates, cums, fee, buffer, i, f1)
            if s1 >= 0.0:
                result = f1
                if j > 0:
                    result = _partial_root(
                        equity, notional, total, caps, rates, cums, fee, buffer, i, f0, f1, s0,
                        s1, eps, growth, tries,
                    )  # fmt: skip
                break
            f0, s0 = f1, s1
        out[i] = result


def _partial_root(equity, notional, total, caps, rates, cums, fee, buffer, i, f0, f1, s0, s1,
                  eps, growth, tries):  # fmt: skip
    """The root of unit ``i``'s slack on ``[f0, f1]`` (``S(f0) < 0 <= S(f1)``), clipped to the
    piece as ``np.clip`` clips, then nudged up until its slack is not negative
    (:func:`model.partial._nudge`)."""
    root = f0 + (f1 - f0) * (s0 / (s0 - s1))
    root = root if (root != root) | (root > f0) else f0
    root = root if (root != root) | (root < f1) else f1
    if not _slack(equity, notional, total, caps, rates, cums, fee, buffer, i, root) < 0.0:
        return root
    step = eps
    for _ in range(tries):
        trial = _minimum(root + step, f1)
        if _slack(equity, notional, total, caps, rates, cums, fee, buffer, i, trial) >= 0.0:
            return trial
        step *= growth
    return f1


# --------------------------------------------------------------------------------------------
# The exact margin check
# --------------------------------------------------------------------------------------------


def liquidatable(wallet, qty, entry, margin, isolated, mark, caps, rates, cums, held, cross,
                 iso):  # fmt: skip
    """:meth:`model.accounts.AccountBook.cross_liquidatable` (into ``cross``, (k,)) and
    :meth:`model.accounts.AccountBook.isolated_liquidatable` (into ``iso``, (k, A)) of the
    rows given (wallet (k,); quantity, entry, margin, isolated flags (k, A)) at ``mark``;
    ``held`` (k,) the haircut value of their collateral holdings (empty without collateral
    assets)."""
    k, n_assets = qty.shape
    for j in range(k):
        has_cross, upnl, mm_sum = _cross_book(qty, entry, isolated, j, mark, caps, rates, cums)
        for a in range(n_assets):  # each isolated position against its own margin
            iso[j, a] = False
            if isolated[j, a]:
                q = qty[j, a]
                mm = _maintenance(caps, rates, cums, a, abs(q) * mark[a])
                iso[j, a] = q != 0 and margin[j, a] + q * (mark[a] - entry[j, a]) < mm
        equity = wallet[j] + upnl
        if held.size:
            equity = equity + held[j]
        cross[j] = has_cross and equity < mm_sum


def _cross_book(qty, entry, isolated, r, mark, caps, rates, cums):
    """Row ``r`` of (n, A) positions at ``mark``: whether it holds a cross position, and its
    cross book's unrealised PnL and maintenance, each summed over the assets from the first
    (:func:`model.accounts.row_sum`), an isolated position adding 0."""
    has_cross = False
    upnl = 0.0
    mm_sum = 0.0
    for a in range(qty.shape[1]):
        q = qty[r, a]
        mm = _maintenance(caps, rates, cums, a, abs(q) * mark[a])
        pnl = q * (mark[a] - entry[r, a])
        if isolated[r, a]:
            pnl, mm = 0.0, 0.0
        else:
            has_cross |= q != 0
        upnl = pnl + 0.0 if a == 0 else upnl + pnl
        mm_sum = mm + 0.0 if a == 0 else mm_sum + mm
    return has_cross, upnl, mm_sum


def cross_liquidatable_rows(rows, book_wallet, book_qty, book_entry, book_isolated, mark, caps,
                            rates, cums, out):  # fmt: skip
    """The rows among ``rows`` whose cross book is below maintenance at ``mark``, into
    ``out`` in their order; returns how many. :func:`liquidatable`'s cross check of a book
    with no collateral asset, each row read from the book itself (no gathered copies in
    between): the same arithmetic, so the same rows."""
    found = 0
    for j in range(rows.size):
        r = rows[j]
        has_cross, upnl, mm_sum = _cross_book(
            book_qty, book_entry, book_isolated, r, mark, caps, rates, cums
        )
        if has_cross and book_wallet[r] + upnl < mm_sum:
            out[found] = r
            found += 1
    return found


# --------------------------------------------------------------------------------------------
# The margin screen's headroom
# --------------------------------------------------------------------------------------------


def headroom(wallet, qty, entry, margin, isolated, mark, caps, rates, cums, rate_cummax,
             fall_rate, widen, directional, held, keys, lanes, work):  # fmt: skip
    """:func:`model.screen.headroom` of the rows given (wallet (k,); quantity, entry, margin,
    isolated flags (k, A)) into ``keys`` and ``lanes`` (k,), the keys before their logarithm:
    each row's least unit bound (:func:`_unit_bound`), which :func:`model.screen.to_headroom`
    turns into headrooms (numpy's vectorised ``log1p`` costs a tenth of one call per row).

    ``fall_rate`` (A,) is each asset's least tier rate, ``widen`` ``exp(U)`` (the factor
    up to which the tier-rate bound looks), ``directional`` whether every rate is below 1,
    ``held`` (k,) the haircut value of the collateral holdings (empty without them).

    Two loops over the rows: the first sums each row's positions (its cross slack into
    ``keys``, the cross coefficient and the least isolated bound into ``work``, (2, k), the
    sides it holds as bits into ``lanes``), the second takes the cross book's bound and the
    lane. The cross bound's two divisions in a row then no longer hold up the next row's sums:
    the processor works on several rows at once.
    """
    k, n_assets = qty.shape
    coefs, least = work[0], work[1]
    for j in range(k):
        slack = wallet[j] - 1e-9 * abs(wallet[j])
        total, coef_sum = 0.0, 0.0
        c_long, c_short, any_long, any_short = False, False, False, False
        h = np.inf
        for a in range(n_assets):
            q, e, m = qty[j, a], entry[j, a], mark[a]
            notional = abs(q) * m
            mm = _maintenance(caps, rates, cums, a, notional)
            if caps.shape[1] == 1:
                slope = rates[a, 0]
            else:
                slope = rate_cummax[a, _tier(caps, a, notional * widen)]
            coef = notional * (1.0 + slope)
            coef_fall = notional * (1.0 - fall_rate[a])
            coef = coef_fall if directional & (q > 0) else coef
            size = abs(q) * (m + e)
            size = (size + mm) * 1e-9
            gain = q * (m - e) - mm
            any_long |= q > 0
            any_short |= q < 0
            if isolated[j, a]:
                if q != 0:
                    s = margin[j, a] - 1e-9 * abs(margin[j, a])
                    s = (s + gain) - size
                    h = _minimum(h, _unit_bound(s, coef, directional & (q > 0)))
                gain, size, coef = 0.0, 0.0, 0.0
            else:
                c_long |= q > 0
                c_short |= q < 0
            total = (gain - size) if a == 0 else total + (gain - size)
            coef_sum = coef if a == 0 else coef_sum + coef
        slack += total
        if held.size:
            slack += held[j] * (1.0 - 1e-9)
            coef_sum += held[j]
            any_long |= held[j] > 0
        keys[j], coefs[j], least[j] = slack, coef_sum, h
        lanes[j] = c_long + 2 * c_short + 4 * any_long + 8 * any_short
    for j in range(k):
        sides = lanes[j]
        c_long, c_short = (sides & 1) != 0, (sides & 2) != 0
        any_long, any_short = (sides & 4) != 0, (sides & 8) != 0
        cross = _unit_bound(keys[j], coefs[j], directional & c_long & (not c_short))
        keys[j] = _minimum(least[j], cross) if c_long | c_short else least[j]
        long_only = directional & any_long & (not any_short)
        short_only = directional & any_short & (not any_long)
        lanes[j] = 1 if long_only else (2 if short_only else 0)


def _unit_bound(slack, coef, fall):
    """One unit's bound before its logarithm (:func:`model.screen._unit_bound`): with ``x =
    min(slack / coef, 1)``, ``x / (1 - x)`` when ``fall``, else ``x``; -1 when the slack or
    the coefficient is not positive or the bound is NaN."""
    x = _minimum(slack / coef, _RISE_CAP)
    w = x / ((1.0 - x) if fall else 1.0)  # (x / 1 is x: one division either way, no branch)
    return w if (slack > 0) & (coef > 0) & (w == w) else -1.0


_RISE_CAP = 1.0  # (model.screen._RISE_CAP)


# --------------------------------------------------------------------------------------------
# A round's counters
# --------------------------------------------------------------------------------------------


def count_liquidations(rows, count, last_stamp, stamp):
    """The liquidation engine's counters of a round's accounts (``rows``, distinct), as
    :meth:`model.liquidation.LiquidationEngine._record_fills` writes them with numpy: each
    row's ``count`` plus one and its ``last_stamp`` set to ``stamp`` (the step's number).
    Returns ``(first ever, first in the step)``: the rows counted 0 before, and the rows
    stamped with another step."""
    first_ever, first_in_step = 0, 0
    for j in range(rows.size):
        r = rows[j]
        first_ever += 1 if count[r] == 0 else 0
        first_in_step += 1 if last_stamp[r] != stamp else 0
        count[r] += 1
        last_stamp[r] = stamp
    return first_ever, first_in_step


def log_closed_books(rows, qty, price, notional, fee, bad, step, rnd, kind, count, last_stamp,
                     stamp, f_step, f_round, f_row, f_asset, f_qty, f_price, f_notional, f_fee,
                     f_bad, f_kind, at, counts):  # fmt: skip
    """The engine's record of a round that closed whole cross books
    (:meth:`model.liquidation.LiquidationEngine._close_cross_books`): the accounts counted
    (:func:`count_liquidations`, into ``counts``), then one fill per position closed (``qty``
    (k, A) not 0), in row-major order as ``_record_fills`` appends them, written into the
    fill log's columns from row ``at`` (:meth:`model.fills.FillLog.reserve`): the step,
    round, book row, asset, quantity, the round's ``price`` of the asset, and the position's
    ``notional``, ``fee`` and ``bad`` debt. Returns how many fills."""
    counts[0], counts[1] = count_liquidations(rows, count, last_stamp, stamp)
    e = at
    for j in range(rows.size):
        for a in range(qty.shape[1]):
            if qty[j, a] == 0:
                continue
            f_step[e] = step
            f_round[e] = rnd
            f_row[e] = rows[j]
            f_asset[e] = a
            f_qty[e] = qty[j, a]
            f_price[e] = price[a]
            f_notional[e] = notional[j, a]
            f_fee[e] = fee[j, a]
            f_bad[e] = bad[j, a]
            f_kind[e] = kind
            e += 1
    return e - at


# --------------------------------------------------------------------------------------------
# A round of whole closes: the market's walk, the close, the log
# --------------------------------------------------------------------------------------------


def _thinning(stress, forced, depth_qty, beta, depth_stress):
    """``1 + depth_stress x load`` of one asset, what a stressed static book's depth is
    divided by (:meth:`agents.market.Market.effective_depth_qty`,
    :attr:`agents.market.Market.depth_now`): the load is the ``stress`` carried and this
    step's outsized move, plus the percent move the step's ``forced`` flow would make on the
    unstressed book."""
    return 1.0 + depth_stress * (stress + math.pow(abs(forced) / depth_qty, beta))


def static_walk(flow, market_flow, forced_flow, impact_start, depth_qty, beta, log_fundamental,
                max_log, stress, depth_stress, impact, limit_hit, inventory, cash, price):  # fmt: skip
    """:meth:`agents.market.Market.execute` of a round's forced ``flow`` (A,) through the
    static book without resting orders, then :meth:`agents.market.Market.take_other_side`:
    the step's flows, the impact state held within the log-price limits (``+-max_log`` of
    the log price; a limit that bit noted in ``limit_hit``), the price after into ``price``,
    the market agent's inventory and cash. ``stress`` (A,) is the load carried from earlier
    steps plus this step's outsized move; with ``depth_stress > 0`` the depth thins by the
    load. The power and the exponential go through the C library, as the market's own
    (:func:`agents.market.libm_power`, :func:`agents.market.libm_exp`)."""
    for a in range(flow.size):
        forced = forced_flow[a] + flow[a]
        x = market_flow[a] + flow[a]
        market_flow[a] = x
        forced_flow[a] = forced
        d = depth_qty[a]
        if depth_stress != 0:
            d = d / _thinning(stress[a], forced, d, beta, depth_stress)
        s = impact_start[a] - 0.01 * np.sign(x) * math.pow(abs(x) / d, beta)
        c = _minimum(_maximum(s, -max_log - log_fundamental[a]), max_log - log_fundamental[a])
        if c != s:
            bit = np.sign(s - c)
            limit_hit[a] = limit_hit[a] if bit == 0 else np.int8(bit)
        impact[a] = c
        p = math.exp(log_fundamental[a] + c)
        price[a] = p
        dq = -flow[a]
        inventory[a] = inventory[a] - dq
        cash[a] = cash[a] + dq * p


def walk_and_close(rows, book_wallet, book_qty, book_entry, fee_rate, market_flow, forced_flow,
                   impact_start, depth_qty, beta, log_fundamental, max_log, stress,
                   depth_stress, impact, limit_hit, inventory, cash, qty, flow, price_before,
                   price, new_wallet, notional, fee, bad, traded, paid, debt, net,
                   row_notional, sums):  # fmt: skip
    """:meth:`model.liquidation.LiquidationEngine._close_cross_books` up to its fill log, in
    one call: the positions of ``rows`` read into ``qty`` (k, A), their column sums into
    ``flow`` (:func:`model.accounts.column_sum`), the price before into ``price_before``,
    the flow walked through the market (:func:`static_walk`), then the books closed at the
    price after (:func:`close_cross_books_of`). Returns whether any row had debt."""
    k, n_assets = qty.shape
    for j in range(k):
        r = rows[j]
        for a in range(n_assets):
            qty[j, a] = book_qty[r, a]
    _column_sum(qty, flow)
    for a in range(n_assets):
        price_before[a] = math.exp(log_fundamental[a] + impact[a])
    static_walk(
        flow, market_flow, forced_flow, impact_start, depth_qty, beta, log_fundamental, max_log,
        stress, depth_stress, impact, limit_hit, inventory, cash, price,
    )  # fmt: skip
    return close_cross_books_of(
        rows, book_wallet, book_qty, book_entry, qty, price, fee_rate, new_wallet, notional,
        fee, bad, traded, paid, debt, net, row_notional, sums,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# A step's rounds of whole closes
# --------------------------------------------------------------------------------------------

# How :func:`closing_rounds` stopped (``result[0]``)
ROUNDS_DONE = 0  # a query found nobody below maintenance: the step's rounds are over
ROUNDS_LIMIT = 1  # the round limit: the last query is the engine's (it notes the limit hit)
ROUNDS_QUERY = 2  # the next round's query is the screen's own (rebuild, lane, changed rows)
ROUNDS_ROOM = 3  # the next round's rows, found, do not fit the room: the engine's round
ROUNDS_COVER = 4  # the last round left bad debt beyond the fund, for ADL: the engine's cover


def closing_rounds(rows, step, first_round, max_rounds, stamp, kind, book_wallet, book_qty,
                   book_entry, book_isolated, caps, rates, cums, fee_rate, market_flow,
                   forced_flow, impact_start, depth_qty, beta, log_fundamental, max_log, stress,
                   depth_stress, impact, limit_hit, inventory, cash, depth, handed, slot_of,
                   closed, horizon, order0, keys0, order1, keys1, order2, keys2, start,
                   unchanged, changed_rows, changed_keys, changed_lane, changed_count,
                   log_anchor, counters, rebuild_at, scans_per_check, gather_shared, out,
                   handed_out, below, fund, adl, count, last_stamp, f_step, f_round, f_row,
                   f_asset, f_qty, f_price, f_notional, f_fee, f_bad, f_kind, at, room,
                   rec_rows, rec_qty, rec_notional, rec_bad, rec_pos_notional, rec_fee,
                   rec_bounds, rec_prices, rec_sums, rec_net, result):  # fmt: skip
    """Rounds of whole closes from round ``first_round`` (its ``rows`` found by the engine),
    each as :meth:`model.liquidation.LiquidationEngine._close_cross_books` does it and each
    next round's rows as the margin screen's compiled query finds them
    (:meth:`model.screen.MarginScreen.cross_liquidatable`), until a query finds nobody or
    something needs the engine's own code; the stop goes in ``result[0]`` (``ROUNDS_*``).

    Per round: the read, walk and close (:func:`walk_and_close`), the fund paid the fees,
    then the bad debt as far as it goes (what it cannot pay unfunded without ADL; with ADL
    the round stops before its cover: ``ROUNDS_COVER``), the counts and fills written
    (:func:`log_closed_books`, into the fill log's room from ``at`` to ``room``), and the
    round kept for the engine's bookkeeping and report: its rows, positions, row notionals,
    and each position's bad debt, notional and fee (``rec_*`` from ``rec_bounds[i]``),
    prices before and after and the depth walked (``rec_prices[i]``), sums
    (``rec_sums[i]``: fees, bad debt, notional, the fund after, unfunded, traded, paid,
    debt, whether any debt, the round's fills, accounts counted first ever and first in
    the step), net flow of the fill (``rec_net[i]``).

    The next query, at the price after the round (the mark, without a lag): the screen's
    rebuild test on its ``counters`` (checked, scanned, checked in all), its reach from
    ``log_anchor``, and :func:`closed_then_below` with the round's rows as the changed rows;
    the rows it reaches are kept in ``handed_out`` (``result[2]`` of them).

    ``result``: the stop, rounds done, rows handed out last (``handed``'s when no query was
    made), rows of the round left to the engine (``ROUNDS_ROOM``), fills written, queries
    made."""
    n_assets = book_qty.shape[1]
    hits = np.zeros(2, dtype=np.int64)
    reach = np.empty(3)
    counts = np.empty(2, dtype=np.int64)
    for j in range(handed.size):
        handed_out[j] = handed[j]
    result[2], result[5] = handed.size, 0
    k, src = rows.size, rows
    rnd, i, e, off = first_round, 0, at, 0
    while True:
        if i + 1 >= rec_bounds.size or off + k > rec_rows.size or e + k * n_assets > room:
            result[0], result[3] = ROUNDS_ROOM, k
            break
        for j in range(k):
            rec_rows[off + j] = src[j]
        rows_i = rec_rows[off : off + k]
        qty, bad = rec_qty[off : off + k], rec_bad[off : off + k]
        p, sums = rec_prices[i], rec_sums[i]
        _walked_depth(forced_flow, depth_qty, beta, stress, depth_stress, depth, p[2])
        notional, fee = rec_pos_notional[off : off + k], rec_fee[off : off + k]
        new_wallet, paid, debt = np.empty(k), np.empty(k), np.empty(k)
        traded, flow, six = np.empty((k, n_assets)), np.empty(n_assets), np.empty(6)
        any_debt = walk_and_close(
            rows_i, book_wallet, book_qty, book_entry, fee_rate, market_flow, forced_flow,
            impact_start, depth_qty, beta, log_fundamental, max_log, stress, depth_stress,
            impact, limit_hit, inventory, cash, qty, flow, p[0], p[1], new_wallet, notional,
            fee, bad, traded, paid, debt, rec_net[i], rec_notional[off : off + k], six,
        )  # fmt: skip
        _keep_sums(six, any_debt, fund, sums)
        off += k
        i += 1
        rec_bounds[i] = off
        if six[4] > 0 and not _pay_bad_debt(bad, fund, adl, sums):
            result[0] = ROUNDS_COVER
            break
        written = log_closed_books(
            rows_i, qty, p[1], notional, fee, bad, step, rnd, kind, count, last_stamp, stamp,
            f_step, f_round, f_row, f_asset, f_qty, f_price, f_notional, f_fee, f_bad, f_kind,
            e, counts,
        )  # fmt: skip
        e += written
        sums[3], sums[9], sums[10], sums[11] = fund[0], written, counts[0], counts[1]
        rnd += 1
        if rnd > max_rounds:
            result[0] = ROUNDS_LIMIT
            break
        if counters[0] + counters[1] / scans_per_check > rebuild_at or k >= gather_shared:
            result[0] = ROUNDS_QUERY
            break
        mark = p[1]  # (the price after the round: the mark without a lag)
        _reach(mark, log_anchor, reach)
        found = closed_then_below(
            rows_i, handed_out[: result[2]], slot_of, book_qty, closed, reach, horizon, order0,
            keys0, order1, keys1, order2, keys2, start, unchanged, changed_rows, changed_keys,
            changed_lane, changed_count, out, hits, book_wallet, book_entry, book_isolated,
            mark, caps, rates, cums, below,
        )  # fmt: skip
        if found < 0:
            result[0] = ROUNDS_QUERY
            break
        _count_query(found, hits, changed_count, counters, out, handed_out, result)
        k, src = hits[1], below
        if k == 0:
            result[0] = ROUNDS_DONE
            break
    result[1], result[4] = i, e - at


def _keep_sums(six, any_debt, fund, sums):
    """The fund paid the round's fees; the round's sums kept (:func:`closing_rounds`) from
    those of :func:`close_cross_books_of` (``six``), the fund after it, nothing unfunded,
    logged or counted yet."""
    fund[0] += six[3]
    sums[0], sums[1], sums[2], sums[4] = six[3], six[4], six[5], 0.0
    sums[5], sums[6], sums[7], sums[8] = six[0], six[1], six[2], 1.0 if any_debt else 0.0
    sums[3], sums[9], sums[10], sums[11] = fund[0], 0.0, 0.0, 0.0


def _count_query(found, hits, changed_count, counters, out, handed_out, result):
    """The screen's counters after a compiled query of ``found`` rows, ``hits[0]`` of those
    handed out before it liquidated (:meth:`model.screen.MarginScreen._after_closed` and
    :meth:`~model.screen.MarginScreen._hand_out`); its rows kept as the ones handed out."""
    result[5] += 1
    counters[0] += found - hits[0]
    counters[1] += changed_count
    counters[2] += found
    for j in range(found):
        handed_out[j] = out[j]
    result[2] = found


def _walked_depth(forced_flow, depth_qty, beta, stress, depth_stress, depth, out):
    """:attr:`agents.market.Market.depth_now` of the static book before a walk: the 1%
    depth, thinned by the load with ``depth_stress > 0``."""
    for a in range(depth.size):
        if depth_stress == 0:
            out[a] = depth[a]
        else:
            out[a] = depth[a] / _thinning(
                stress[a], forced_flow[a], depth_qty[a], beta, depth_stress
            )


def _pay_bad_debt(bad, fund, adl, sums):
    """:meth:`model.liquidation.LiquidationEngine._cover` of a round's ``bad`` debt (k, A)
    without ADL: the fund (``fund``: balance, paid so far, unfunded so far) pays what it can,
    the rest is unfunded (``sums[4]``). Returns False, nothing paid, when ``adl`` is on and
    the fund falls short (ADL is the engine's)."""
    k, n_assets = bad.shape
    by_asset = np.empty(n_assets)
    _column_sum(bad, by_asset)
    need = _pairwise_sum(by_asset)
    paid = fund[0] if fund[0] < need else need
    short = need - paid
    if short > 0 and adl:
        return False
    fund[0] -= paid
    fund[1] += paid
    if short > 0:
        for a in range(n_assets):
            by_asset[a] = by_asset[a] * (short / need)
        unfunded = _pairwise_sum(by_asset)
        fund[2] += unfunded
        sums[4] = unfunded
    return True


def _reach(mark, log_anchor, out):
    """:meth:`model.screen.MarginScreen.reach` of ``mark``: how far the prices moved from the
    screen's anchor, down and up, in log price (each asset's logarithm through the C
    library, as the screen takes it)."""
    fall, rise = 0.0, 0.0
    for a in range(mark.size):
        move = math.log(mark[a]) - log_anchor[a]
        fall = -move if -move > fall else fall
        rise = move if move > rise else rise
    out[0] = rise if rise > fall else fall
    out[1], out[2] = fall, rise


# --------------------------------------------------------------------------------------------
# Re-entry and the haircut of profits
# --------------------------------------------------------------------------------------------


def due_and_flat(waiting, last_liquidation, step, cooldown, qty, out):
    """The positions in ``waiting`` (book rows) of the accounts whose cooldown has passed at
    ``step`` and which hold no position, into ``out`` in order; returns how many
    (:meth:`model.reentry.Reentry.orders`: one pass where numpy gathers twice)."""
    found = 0
    for t in range(waiting.size):
        r = waiting[t]
        if not step - last_liquidation[r] >= cooldown:
            continue
        held = False
        for a in range(qty.shape[1]):
            held |= qty[r, a] != 0
        if not held:
            out[found] = t
            found += 1
    return found


def paying_profits(qty, entry, isolated, any_isolated, mark, rows, profit):
    """The rows of :func:`model.adl._haircut_profits` that hold a cross position in profit
    (``q (M - e) > 0`` for some asset, isolated ones left out when ``any_isolated``), into
    ``rows``, and each one's paper profit, summed over its positions as
    :func:`model.accounts.row_sum` sums them and floored at 0 as ``np.maximum`` floors it,
    into ``profit``; returns how many (one pass where numpy makes the (n, A) profits)."""
    found = 0
    for r in range(qty.shape[0]):
        pays = False
        total = 0.0
        for a in range(qty.shape[1]):
            p = qty[r, a] * (mark[a] - entry[r, a])
            if any_isolated and isolated[r, a]:
                p = 0.0
            pays |= p > 0
            total = p + 0.0 if a == 0 else total + p
        if pays:
            rows[found] = r
            profit[found] = _maximum(total, 0.0)
            found += 1
    return found


# --------------------------------------------------------------------------------------------
# The margin screen's changed rows
# --------------------------------------------------------------------------------------------


def lane_pool(lanes, keys, lane, horizon, rows_out, keys_out):
    """``np.flatnonzero((lanes == lane) & (keys >= horizon))`` into ``rows_out`` and the keys
    of those rows into ``keys_out``, in one pass (the pool a lane of the margin screen is
    extended from: :meth:`model.screen.MarginScreen._extend`). Returns how many."""
    m = 0
    for r in range(lanes.size):  # (written whatever the test, kept if it holds: no branch)
        k = keys[r]
        rows_out[m] = r
        keys_out[m] = k
        m += (lanes[r] == lane) & (k >= horizon)
    return m


def keep_below(rows, keys, bound):
    """``rows[keys < bound]`` and ``keys[keys < bound]`` compacted to the front of ``rows``
    and ``keys``, in order, in place; returns how many."""
    m = 0
    for j in range(keys.size):  # (as lane_pool: no branch)
        k = keys[j]
        rows[m] = rows[j]
        keys[m] = k
        m += k < bound
    return m


def sort_out_changed(rows, handed, slot_of, qty, closed, kept_rows, kept_slots):
    """:meth:`model.screen.MarginScreen._sort_out_changed` on the rows that changed
    (``rows``, sorted and distinct): how many of them are among the candidates handed out
    last (``handed``, sorted and distinct); each row with no position left and not listed
    yet marked ``closed`` in ``slot_of``; the others, with their slots, into ``kept_rows``
    and ``kept_slots``. Returns ``(handed and changed, kept)``."""
    hits, i, j = 0, 0, 0
    while i < rows.size and j < handed.size:  # (both sorted: one walk)
        if rows[i] == handed[j]:
            hits += 1
            i += 1
            j += 1
        elif rows[i] < handed[j]:
            i += 1
        else:
            j += 1
    kept = 0
    for t in range(rows.size):
        r = rows[t]
        held = False
        for a in range(qty.shape[1]):
            held |= qty[r, a] != 0
        if held or slot_of[r] >= 0:
            kept_rows[kept] = r
            kept_slots[kept] = slot_of[r]
            kept += 1
        else:
            slot_of[r] = closed
    return hits, kept


def _reached_lane(reach, order, keys, lane, start, slot_of, unchanged, out, found):
    """:meth:`model.screen.MarginScreen._reached` of one lane into ``out`` from ``found`` on:
    the rows of its sorted part with a key at most ``reach`` that did not change since the
    rebuild, those that did dropped from the sorted part (the live ones moved up against the
    end of the reached prefix, its start moved past the dropped ones). Returns the new
    ``found``."""
    lo = start[lane]
    if lo == keys.size or keys[lo] > reach:
        return found
    hi = lo + np.searchsorted(keys[lo:], reach, side="right")
    live = 0
    for t in range(lo, hi):
        live += slot_of[order[t]] == unchanged
    if live < hi - lo:  # compact from the end: a live row only ever moves up
        w = hi - 1
        for t in range(hi - 1, lo - 1, -1):
            if slot_of[order[t]] == unchanged:
                order[w] = order[t]
                keys[w] = keys[t]
                w -= 1
        start[lane] = hi - live
    for t in range(hi - live, hi):
        out[found] = order[t]
        found += 1
    return found


def reached_rows(reach, order0, keys0, order1, keys1, order2, keys2, start, slot_of, unchanged,
                 changed_rows, changed_keys, changed_lane, changed_count, out):  # fmt: skip
    """The rows of :meth:`model.screen.MarginScreen.candidates` once the changes are
    absorbed and every lane reaches short of its horizon: each lane's reached rows
    (:func:`_reached_lane`, lanes 0 to 2, ``start`` (3,) their sorted parts' starts, updated)
    and the changed list's rows whose key the reach of their lane covers, sorted into
    ``out``. Returns how many."""
    found = _reached_lane(reach[0], order0, keys0, 0, start, slot_of, unchanged, out, 0)
    found = _reached_lane(reach[1], order1, keys1, 1, start, slot_of, unchanged, out, found)
    found = _reached_lane(reach[2], order2, keys2, 2, start, slot_of, unchanged, out, found)
    for i in range(changed_count):
        if changed_keys[i] <= reach[changed_lane[i]]:
            out[found] = changed_rows[i]
            found += 1
    out[:found].sort()
    return found


def closed_then_reached(changed, handed, slot_of, qty, closed, reach, order0, keys0, order1,
                        keys1, order2, keys2, start, unchanged, changed_rows, changed_keys,
                        changed_lane, changed_count, out, hits):  # fmt: skip
    """A query of the margin screen whose changed rows (``changed``, sorted and distinct) all
    closed out and are not listed (a round of whole closes before it): they are sorted out
    (:func:`sort_out_changed`: marked ``closed``, ``hits[0]`` of them among the candidates
    handed out last), then the rows reached (:func:`reached_rows`) go into ``out``. Returns
    how many, or -1 when a changed row still holds a position or is listed (nothing written:
    its headroom is the numpy query's to recompute)."""
    for t in range(changed.size):
        r = changed[t]
        if slot_of[r] >= 0:
            return -1
        for a in range(qty.shape[1]):
            if qty[r, a] != 0:
                return -1
    kept_rows = np.empty(changed.size, dtype=np.int64)
    kept_slots = np.empty(changed.size, dtype=np.int32)
    hits[0], _ = sort_out_changed(changed, handed, slot_of, qty, closed, kept_rows, kept_slots)
    return reached_rows(
        reach, order0, keys0, order1, keys1, order2, keys2, start, slot_of, unchanged,
        changed_rows, changed_keys, changed_lane, changed_count, out,
    )  # fmt: skip


def closed_then_below(changed, handed, slot_of, qty, closed, reach, horizon, order0, keys0,
                      order1, keys1, order2, keys2, start, unchanged, changed_rows,
                      changed_keys, changed_lane, changed_count, out, hits, wallet, entry,
                      isolated, mark, caps, rates, cums, below):  # fmt: skip
    """:func:`closed_then_reached` and :func:`cross_liquidatable_rows` of its rows in one
    call: the rows reached into ``out``, those of them whose cross book is below maintenance
    at ``mark`` into ``below`` (their count in ``hits[1]``). Returns how many rows were
    reached, or -1 (nothing written) when a lane's ``reach`` is at its ``horizon`` (the
    numpy query extends the lane first) or :func:`closed_then_reached` hands over."""
    for lane in range(3):
        if reach[lane] >= horizon[lane]:
            return -1
    found = closed_then_reached(
        changed, handed, slot_of, qty, closed, reach, order0, keys0, order1, keys1, order2,
        keys2, start, unchanged, changed_rows, changed_keys, changed_lane, changed_count, out,
        hits,
    )  # fmt: skip
    if found >= 0:
        hits[1] = cross_liquidatable_rows(
            out[:found], wallet, qty, entry, isolated, mark, caps, rates, cums, below
        )
    return found


# --------------------------------------------------------------------------------------------
# The contagion recorder's truncated rounds
# --------------------------------------------------------------------------------------------


def unit_rows_edges(share, col, src_rows, dst_rows, src, dst, w):
    """Every edge of a round whose victims each lost on one column of ``share`` (``col``),
    into ``src``, ``dst`` and ``w`` as :meth:`model.contagion.ContagionRecorder._attribute`
    writes them: block by block in the order of the support groups (the last column's
    victims first), each victim's edges in liquidator order, one per liquidator with a
    positive share of its column, weighing that share (its unit loss mix times the share).
    Returns how many edges."""
    e = 0
    for c in range(share.shape[1] - 1, -1, -1):
        for i in range(col.size):
            if col[i] != c:
                continue
            for j in range(share.shape[0]):
                if share[j, c] > 0:
                    src[e] = src_rows[j]
                    dst[e] = dst_rows[i]
                    w[e] = 1.0 * share[j, c]
                    e += 1
    return e


def note_victims(rows, notional, step, rnd, events, first_step, first_round, total):
    """The contagion recorder's counters of a round's victims (``rows``, distinct): each
    row's first step and round if it has no event yet, its events plus one, its liquidated
    ``notional`` added to ``total``, as :meth:`model.contagion.ContagionRecorder.record`
    writes them with numpy. Returns how many rows had no event before."""
    new = 0
    for j in range(rows.size):
        r = rows[j]
        if events[r] == 0:
            first_step[r] = step
            first_round[r] = rnd
            new += 1
        events[r] += 1
        total[r] += notional[j]
    return new


def one_asset_factors(exposure, move, closed_prev, notional_prev, share, col):
    """:func:`model.contagion._one_asset_factors` into ``share`` (k_l, 2) and ``col`` (k_v,),
    with the sums added as numpy adds them (:func:`_pairwise_sum`); returns the round's edge
    count if every edge were kept (:func:`model.contagion._unit_edge_count`).

    ``exposure`` (k_v,) is each victim's position in the asset during the move, ``move`` the
    move, ``closed_prev`` and ``notional_prev`` (k_l,) what the liquidators closed.
    """
    k_l = closed_prev.size
    sign = 1.0 if move < 0 else -1.0
    for i in range(k_l):  # the pushes
        share[i, 0] = _maximum(closed_prev[i] * sign, 0.0)
    push_total = _pairwise_sum(share[:, 0])
    scale = push_total if push_total > 0 else 1.0
    total = _pairwise_sum(notional_prev)
    pushed, spread = 0, 0
    for i in range(k_l):
        share[i, 0] = share[i, 0] / scale
        share[i, 1] = notional_prev[i] / total if total > 0 else 1.0 / max(k_l, 1)
        pushed += 1 if share[i, 0] > 0 else 0
        spread += 1 if share[i, 1] > 0 else 0
    lost_any = push_total > 0
    edges = 0
    for j in range(exposure.size):
        lost = ((-exposure[j]) * move > 0) & lost_any
        col[j] = 0 if lost else 1
        edges += pushed if lost else spread
    return edges


def one_asset_round(rows, notional, step, rnd, events, first_step, first_round, total, exposure,
                    move, closed_prev, notional_prev, prev_rows, budget, top, max_candidates,
                    agg, min_rest, share, col, src, dst, weight, out):  # fmt: skip
    """A one-asset round of :meth:`model.contagion.ContagionRecorder.record` whose victims
    have no event yet, in one call: their counters (:func:`note_victims`), the round's factors
    and edge count (:func:`one_asset_factors`, into ``share`` and ``col``), and, when the
    edges would pass the budget, the top contributors' edges and the aggregates
    (:func:`top_edges_of_unit_rows`, into ``src``, ``dst``, ``weight``, which hold ``(k + 1)
    x`` the victims, ``k`` the edges kept per victim).

    ``budget`` is the edges left before ``max_edges``, ``top`` the edges kept per victim,
    ``max_candidates`` the most candidates of the compiled search, ``agg`` the code of the
    round's aggregate node.

    Returns:
        0 when a victim had an event before (nothing written: the recorder's other path takes
        the round); 1 when every edge fits (their count in ``out[0]``, not written yet); 2
        when the top contributors are written (kept and aggregated edges in ``out``); 3 when
        the edges pass the budget and the compiled search would take too many candidates
        (factors written).
    """
    for j in range(rows.size):
        if events[rows[j]] != 0:
            return 0
    note_victims(rows, notional, step, rnd, events, first_step, first_round, total)
    count = one_asset_factors(exposure, move, closed_prev, notional_prev, share, col)
    if rows.size <= budget and count <= budget:
        out[0] = count
        return 1
    kk = max(1, min(top, closed_prev.size))
    if share.shape[1] * kk > max_candidates:
        return 3
    col_total = np.empty(share.shape[1])
    column_sums(share, col_total)
    kept, aggregated = top_edges_of_unit_rows(
        share, kk, col, col_total, rows, prev_rows, agg, min_rest, src, dst, weight
    )
    out[0], out[1] = kept, aggregated
    return 2


def whole_close_rounds(first, start, n, step, rnd, bounds, rows, qty, notional, prices,
                       prev_rows, prev_closed, prev_notional, prev_move, events, first_step,
                       first_round, total, budget, top, max_candidates, special, min_rest,
                       share, col, src, dst, weight, batch_step, batch_round, batch_size,
                       named, counts, result):  # fmt: skip
    """Rounds ``start`` to ``n - 1`` of a compiled call's whole closes of a one-asset book
    (:class:`model.closing_rounds.ClosedRounds`: ``bounds``, ``rows``, ``qty`` (m,),
    ``notional`` (m,), ``prices`` (n, 3, 1)) recorded one after the other as
    :meth:`model.contagion.ContagionRecorder.record` records each: the step's first round
    (``first``, only round ``start``) from the step's root, every other round past the edge
    budget by :func:`one_asset_round`, its previous round ``prev_*`` for round ``start`` and
    the call's own round before it after that. The edges go into ``src``, ``dst`` and
    ``weight`` one round after the other, and each round with edges into the batches' log
    (``batch_step``, ``batch_round``, ``batch_size``: its step, round and edges); per round,
    the special node it named into ``named`` (1: the step's root, 2: the round's aggregate,
    0: none; ``special`` is the code of the next one).

    Returns the first round not recorded (``n``: none), with ``result`` [the status
    :func:`one_asset_round` gave that round, the edges written, the batches written]; its
    counters and factors (``share``, ``col``, ``counts``) are written when the status is 1
    or 3, as that kernel leaves them for the recorder's numpy lines.
    """
    e, batches = 0, 0
    for i in range(start, n):
        lo, hi = bounds[i], bounds[i + 1]
        victims = rows[lo:hi]
        if i == start and first:  # the step's first round: an edge from its root each
            note_victims(victims, notional[lo:hi], step, rnd + i, events, first_step,
                         first_round, total)  # fmt: skip
            for j in range(hi - lo):
                src[e + j], dst[e + j], weight[e + j] = special, victims[j], 1.0
            counts[0], counts[1], named[i] = hi - lo, 0, 1
            special -= 1
        else:
            if i == start:
                k_l = prev_rows.size
                liquidators, closed, spent, move = prev_rows, prev_closed, prev_notional, prev_move
            else:
                k_l, p = bounds[i] - bounds[i - 1], prices[i - 1]
                liquidators, closed = rows[bounds[i - 1] : lo], qty[bounds[i - 1] : lo]
                spent, move = notional[bounds[i - 1] : lo], p[1, 0] - p[0, 0]
            status = one_asset_round(
                victims, notional[lo:hi], step, rnd + i, events, first_step, first_round,
                total, qty[lo:hi], move, closed, spent, liquidators, budget, top,
                max_candidates, special, min_rest, share[:k_l], col[: hi - lo], src[e:],
                dst[e:], weight[e:], counts,
            )  # fmt: skip
            if status != 2:
                result[0], result[1], result[2] = status, e, batches
                return i
            named[i] = 2 if counts[1] else 0
            special -= 1 if counts[1] else 0
        size = counts[0] + counts[1]
        if size:
            batch_step[batches], batch_round[batches], batch_size[batches] = step, rnd + i, size
            batches += 1
        e += size
        budget -= size
    result[0], result[1], result[2] = 2, e, batches
    return n


def _pairwise_sum(x):
    """``x.sum()`` of a 1-D ``x`` in numpy's order: a run of at most 128 values summed by
    :func:`_row_of_sum`, a longer one as the sum of its halves (split at a multiple of 8),
    each summed the same way. numpy recurses; this walks the same tree with a stack of its
    own (numba's cache cannot load recursive functions): each run is pushed, then its left
    half, then its right half, and when both sums are on the stack of values they are added.
    """
    n = x.size
    if n <= 128:
        return _row_of_sum(x)
    starts = np.empty(64, dtype=np.int64)  # runs being summed (the tree is under 64 deep)
    sizes = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)  # 0: left half next, 1: right half next, 2: add
    sums = np.empty(64)
    starts[0], sizes[0], stage[0] = 0, n, 0
    top, done = 1, 0
    while top:
        t = top - 1
        start, size = starts[t], sizes[t]
        if size <= 128:
            sums[done] = _row_of_sum(x[start : start + size])
            done += 1
            top -= 1
            continue
        half = size // 2
        half -= half % 8
        if stage[t] == 2:
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
            continue
        first = stage[t] == 0
        stage[t] += 1
        starts[top] = start if first else start + half
        sizes[top] = half if first else size - half
        stage[top] = 0
        top += 1
    return sums[0]


def top_edges_of_unit_rows(share, kk, col, col_total, victims, liquidators, agg, min_rest,
                           src, dst, weight):  # fmt: skip
    """A truncated round's edges when each victim uses one column of ``share`` (every victim
    of a one-asset round): :func:`model.contagion._top_of_unit_rows` and the aggregate edges
    of :meth:`model.contagion.ContagionRecorder._keep_top` in one pass.

    Each column's ``kk`` largest shares (``kk`` at most the liquidators), ties by liquidator
    index, in liquidator order; for each victim, its column's positive ones as edges
    ``liquidators[l] -> victims[j]``; then, victim by victim, one edge from ``agg`` with the
    weight left over (the column's total less the kept, summed as numpy sums a row, clipped
    at 0 as ``np.maximum`` clips) where that is above ``min_rest``. ``src``, ``dst`` and
    ``weight`` hold at least ``(kk + 1) x`` the victims.

    Returns:
        ``(kept, aggregated)``: the edges written, kept ones first.
    """
    k_l, c = share.shape
    top_w = np.empty((c, kk))
    top_l = np.empty((c, kk), dtype=np.int64)
    left = np.empty(c)
    for a in range(c):
        n = 0
        for i in range(k_l):  # insertion into the top kk, equal values kept in index order
            v = share[i, a]
            if n == kk:
                if not v > top_w[a, kk - 1]:
                    continue
                p = kk - 1
            else:
                p = n
                n += 1
            while p > 0 and top_w[a, p - 1] < v:
                top_w[a, p] = top_w[a, p - 1]
                top_l[a, p] = top_l[a, p - 1]
                p -= 1
            top_w[a, p] = v
            top_l[a, p] = i
        for t in range(1, kk):  # in liquidator order
            v, i, p = top_w[a, t], top_l[a, t], t
            while p > 0 and top_l[a, p - 1] > i:
                top_w[a, p] = top_w[a, p - 1]
                top_l[a, p] = top_l[a, p - 1]
                p -= 1
            top_w[a, p] = v
            top_l[a, p] = i
        left[a] = _maximum(col_total[a] - _pairwise_sum(top_w[a]), 0.0)
    m = 0
    for j in range(col.size):
        a = col[j]
        for t in range(kk):
            if top_w[a, t] > 0:
                src[m] = liquidators[top_l[a, t]]
                dst[m] = victims[j]
                weight[m] = top_w[a, t]
                m += 1
    kept = m
    for j in range(col.size):
        if left[col[j]] > min_rest:
            src[m] = agg
            dst[m] = victims[j]
            weight[m] = left[col[j]]
            m += 1
    return kept, m - kept


def _row_of_sum(x):
    """``x.sum()`` of at most 128 values, in numpy's order: one at a time below 8, else 8
    running sums over the blocks of 8 combined pairwise, then the values left one at a
    time."""
    n = x.size
    if n < 8:
        s = 0.0
        for i in range(n):
            s += x[i]
        return s
    r = x[:8].copy()
    i = 8
    end = n - n % 8
    while i < end:
        for j in range(8):
            r[j] += x[i + j]
        i += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        s += x[i]
        i += 1
    return s


# compiled by enabled(), helpers before the kernels that call them
_COMPILED = (
    "_minimum",
    "_maximum",
    "_tier",
    "_maintenance",
    "_unit_bound",
    "_spread_share",
    "_fill_one",
    "apply_fills",
    "close_cross_books",
    "column_sums",
    "_row_of_sum",
    "_pairwise_sum",
    "_column_sum",
    "_round_sums",
    "_gathered_sum",
    "sums_of_rows",
    "close_cross_books_of",
    "equities",
    "_split",
    "cap_orders",
    "_slack",
    "_partial_root",
    "partial_fractions",
    "_cross_book",
    "liquidatable",
    "cross_liquidatable_rows",
    "headroom",
    "_reached_lane",
    "reached_rows",
    "count_liquidations",
    "log_closed_books",
    "_thinning",
    "static_walk",
    "walk_and_close",
    "_walked_depth",
    "_pay_bad_debt",
    "_keep_sums",
    "_count_query",
    "_reach",
    "due_and_flat",
    "paying_profits",
    "sort_out_changed",
    "lane_pool",
    "keep_below",
    "closed_then_reached",
    "closed_then_below",
    "note_victims",
    "one_asset_factors",
    "top_edges_of_unit_rows",
    "unit_rows_edges",
    "one_asset_round",
    "whole_close_rounds",
    "closing_rounds",
)
