"""The margin screen: which accounts can possibly be below maintenance at a given mark.

Checking every account against maintenance costs a pass over the whole book, every round of
every step. Most accounts are far from their boundary, and prices move little in a calm step,
so most of that work proves nothing new. The screen keeps, for every account, a safe bound on
how far prices must move before the account *can* become liquidatable, and hands the engine
only the accounts whose bound the current prices have reached. The engine checks those exactly,
so results are identical to checking everyone (tests/test_screen.py compares both).

The bound. Distances between price vectors are measured in log price,
``d(M, M') = max_a |log M_a - log M'_a|``, which is a metric (so bounds chain through the
triangle inequality). A liquidation unit (an account's cross book, or one isolated position)
has slack ``S(M) = equity - maintenance``: ``W + sum_a q_a (M_a - e_a) - sum_a mm(|q_a| M_a)``
for a cross book, ``m + q (M - e) - mm(|q| M)`` for an isolated position. It is liquidatable
when ``S < 0``. If ``d(M, M0) <= u <= U`` then ``|M_a - M0_a| <= M0_a (e^u - 1)``, so the PnL
term moves by at most ``N0_a (e^u - 1)`` and, ``mm`` being continuous, piecewise linear and
non-decreasing, the maintenance term by at most ``r_a N0_a (e^u - 1)``, where ``r_a`` is the
largest tier rate at notionals up to ``e^U N0_a``. Hence

    S(M) >= S(M0) - (e^u - 1) c,   c = sum_a N0_a (1 + r_a),

and the unit cannot be liquidatable while ``u < h = min(U, log(1 + S(M0) / c))``, its
*headroom*. An account's headroom is the smallest of its units'. A small relative and absolute
allowance is taken off ``S(M0)`` and ``h`` so that float rounding in the exact check can never
disagree with the bound.

Lanes. With every maintenance rate below 1 a rise cannot hurt a long position (its PnL grows
faster than its maintenance) and a fall of ``u`` costs it at most ``(1 - r0) N0 (1 - e^-u)``,
``r0`` the least tier rate of the asset: the PnL falls by ``N0 (1 - e^-u)`` and the
maintenance, whose slope in notional is at least ``r0`` everywhere, by at least ``r0`` times
that. A fall cannot hurt a short. So an account whose positions are all long is keyed by
``-log(1 - S(M0) / sum (1 - r0) N0)`` against the largest *fall* of any asset since ``M0``,
one whose positions are all short by ``min(U, log(1 + S(M0) / c))`` against the largest
*rise*, and a mixed one against ``d``, each long counted with ``(1 - r0) N0`` in ``c`` (a
long's loss under any move of at most ``u`` is at most ``(1 - r0) N0 (1 - e^-u)``, which is
below ``(1 - r0) N0 (e^u - 1)``) (:func:`headroom`, :func:`reaches`). After a crash,
short-only accounts are never candidates. The one-sided distances chain too: a fall from
``M_t`` is at most the fall from the anchor plus the rise from the anchor to ``M_t``.

Collateral holdings (:mod:`model.collateral`) add ``sum_c H_c P_c (1 - h_c)`` to a cross book's
slack. They are long exposures with a maintenance-free, haircut-weighted value: a rise cannot
lower it and a fall of ``u`` lowers it by at most ``(1 - h_c) H_c P0_c (1 - e^-u)``, the bound of
a long whose least maintenance rate is ``h_c``. So each holding enters ``c`` with its haircut
value, makes its account "long" for the choice of lane (never rise-only), and is measured
against the collateral asset's own price moves, which :func:`reaches` takes with every other
asset's. Isolated units take none of it.

Bookkeeping. At a *rebuild* every account's headroom is computed at the anchor mark ``P`` and
kept with its lane; in each lane the eighth with the least headroom is sorted (the rest all have
at least the headroom of the last of those: the lane's *horizon*). The candidates at mark ``M``
are then a prefix of each lane's order (headroom at most the lane's distance from ``P``), found
by binary search. When a distance reaches its lane's horizon the lane is *extended*: the rows of
the lane with keys from the horizon up to beyond the distance, plus the next eighth, are sorted
in from the stored keys (they are all at least the old horizon, so they are appended) and the
horizon moves to the least key left out. The keys stored at the rebuild stay valid bounds for
every account that has not changed since, however far prices move (each is at most ``U``, or
a fall bound, which needs no tier limit), so extending never weakens the argument above.

An account whose state changes (a fill, a fee, a deposit) is reported by the
:class:`model.accounts.AccountBook` method that wrote it (every write goes through one); at the
next query its headroom is recomputed at the current mark ``M_t`` and stored in the changed list as ``key = h - d(P, M_t)`` (for the
one-sided lanes, less the move from ``P`` to ``M_t`` in the opposite sense): by the triangle
inequality ``d(M, P) < key`` implies ``d(M, M_t) < h``. Its stored anchor key is stale from
then on, so it is dropped from the sorted prefixes when a query meets it; an account closed out
(no position) can be liquidated at no mark and is listed nowhere. Every account is thus
represented exactly once, by a valid key: the candidates are the union of disjoint parts.

Rebuilds happen when the whole book changed, when the changed list would hold more than
``MAX_CHANGED_SHARE`` of it (a rebuild then costs little more than recomputing those rows), and
when the work spent in vain since the last rebuild adds up to ``rebuild_work`` (0.3) times the
book: the candidates handed out and not liquidated or otherwise changed before the next query,
and the keys a query reads of listed rows that did not change since the query before (a rebuild
would have taken them off the list), each read counted as ``1 / SCANS_PER_CHECK`` of a
candidate checked. A rebuild costs a few passes over the book, so its cost is amortised over
the work it saves, a calm step costs far less than one pass, and a cascade that liquidates the
candidates it is handed costs none. Traders who trade every step stay listed: a rebuild would
only list them again at their next trade, so their keys, read by the query that follows their
trades, count for nothing.
"""

from __future__ import annotations

import math

import numpy as np

from model import kernels
from model.accounts import (
    GATHER_SHARED,
    AccountBook,
    TierTable,
    maintenance_margin,
    row_any,
    take_rows,
)
from model.sorting import stable_argsort

__all__ = [
    "LANE_BOTH",
    "LANE_FALL",
    "LANE_RISE",
    "MarginScreen",
    "headroom",
    "log_distance",
    "reaches",
    "to_headroom",
]

# Largest log-price move a headroom is valid for: the tier-rate bound looks up to e^U N0.
MAX_HEADROOM = float(np.log(2.0))
_RISE_CAP = 1.0  # e^U - 1: the largest rise bound before its logarithm (see _unit_bound)
_WIDEN = np.exp(MAX_HEADROOM)  # e^U, as _slope_bound multiplies by it
# Allowances that keep the bound safe under float rounding of the exact check.
_RELATIVE_SLACK = 1e-9
_HEADROOM_SLACK = 1e-12
# Rows per block in whole-book passes: bounds the size of temporaries (peak memory).
BLOCK_ROWS = 1 << 16
# Account-asset entries per block of the screen's own headroom passes: small enough for the
# temporaries to be reused from the allocator's free lists and stay in cache.
SCREEN_BLOCK_ELEMENTS = 1 << 12
# Share of a lane's accounts, those with the least headroom, sorted at a time.
NEAR_SHARE = 1.0 / 8.0
NEAR_MIN = 1024
# Most of the book the changed list may hold; beyond it a rebuild replaces recomputing the rows.
MAX_CHANGED_SHARE = 0.75
# Keys of the changed list read by a query per candidate checked, in cost: at a million
# traders a key read costs about 4 ns, the exact check of a candidate 40 to 70 ns.
SCANS_PER_CHECK = 16
# changed_slot values of rows not in the changed list
UNCHANGED, CLOSED = -1, -2
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False
_NO_VALUES = np.zeros(0)  # no collateral values (the kernel's argument)
# Lanes: which price move an account's headroom is measured against (see reaches()).
LANE_BOTH, LANE_FALL, LANE_RISE = 0, 1, 2
# A key stored at mark M_t is h less how far M_t is from the anchor *in the opposite sense*:
# a long-only account refreshed after a rise has that much more room to fall.
_OFFSET_LANE = np.array([LANE_BOTH, LANE_RISE, LANE_FALL])


def log_distance(a, b) -> float:
    """``max_a |log a_a - log b_a|``: the log-price distance between two price vectors."""
    return float(np.max(np.abs(np.log(a) - np.log(b)))) if np.size(a) else 0.0


def reaches(mark, anchor) -> np.ndarray:
    """(3,) how far ``mark`` is from ``anchor``, as each lane measures it: the log-price
    distance, the largest fall and the largest rise of any asset (in log price)."""
    if not np.size(mark):
        return np.zeros(3)
    move = np.log(mark) - np.log(anchor)
    fall, rise = max(float(-move.min()), 0.0), max(float(move.max()), 0.0)
    return np.array([max(fall, rise), fall, rise])


def _slope_bound(notional, tiers: TierTable, rate_cummax) -> np.ndarray:
    """(k, A) largest maintenance rate at notionals up to ``e^U`` times ``notional``."""
    if tiers.caps.shape[1] == 1:
        return tiers.rates[:, 0]  # flat rates: (A,), broadcast by the caller
    t = tiers.tier_index(notional * np.exp(MAX_HEADROOM))
    return rate_cummax[np.arange(tiers.n_assets), t]


def headroom(
    wallet, qty, entry, margin, isolated, mark, tiers: TierTable, rate_cummax=None, collateral=None
):
    """Log-price headroom of each account, and the lane it is measured in. Pure numpy.

    No unit of an account can be liquidatable at a mark ``M`` whose distance from ``mark``, as
    its lane measures it (:func:`reaches`), is below its headroom (module docstring):

    * ``LANE_FALL``: every open position is long. A rise cannot hurt a long position (its PnL
      grows faster than its maintenance, every rate being below 1), and a fall of ``u`` costs
      at most ``(1 - r0) N (1 - e^-u)`` (``r0`` the asset's least tier rate): the headroom is
      ``-log(1 - S / sum (1 - r0) N)``, against the largest fall of any asset.
    * ``LANE_RISE``: every open position is short; ``min(U, log(1 + S / sum N (1 + r)))``
      against the largest rise.
    * ``LANE_BOTH``: longs and shorts; each unit's own bound (the two above, or
      ``min(U, log(1 + S / c))`` with ``c`` the sum of the longs' ``(1 - r0) N`` and the
      shorts' ``N (1 + r)`` for a mixed cross book) against the log-price distance.

    The work is a few passes over the rows; the isolated units are skipped when no row has an
    isolated position (the cross book is then the only unit).

    Collateral holdings (``collateral``: their haircut value at ``mark``) count in a cross
    book's slack and, as a long's fall coefficient, in its ``c`` (module docstring); an
    account holding some is never in ``LANE_RISE``.

    Args:
        wallet: (k,) cross wallets.
        qty, entry, margin: (k, A) quantities, entry prices, isolated margins.
        isolated: (k, A) isolated flags.
        mark: (A,) the mark the headroom is measured from.
        tiers: maintenance tiers per asset.
        rate_cummax: (A, T) running maximum of the tier rates (computed when omitted).
        collateral: (k,) haircut value of each account's collateral holdings at ``mark``, or
            None (no collateral assets).

    Returns:
        ``(headroom, lane)``: (k,) headroom, +inf for accounts that no move can liquidate,
        -inf for accounts that are (or may be) liquidatable already; (k,) int8 lanes.
    """
    if rate_cummax is None:
        rate_cummax = np.maximum.accumulate(tiers.rates, axis=1)
    mark = np.asarray(mark, dtype=float)
    long_ = qty > 0
    short = qty < 0
    absq = np.abs(qty)
    notional = absq * mark
    mm = maintenance_margin(notional, tiers)
    # Without rates below 1 a rise could hurt a long position: measure every account both ways.
    directional = bool(tiers.rates.max() < 1.0)
    # each position's coefficient: a long's fall bound (1 - r0) N, a short's rise bound
    # N (1 + r) (0 for flat positions, whose notional is 0)
    rise_coef = notional * (1.0 + _slope_bound(notional, tiers, rate_cummax))
    if directional:
        coef = np.where(long_, notional * (1.0 - tiers.rates.min(axis=1)), rise_coef)
    else:
        coef = rise_coef
    # slack less the rounding allowance: 1e-9 of the magnitude of the terms the check adds
    size = absq * (mark + entry)
    size += mm
    size *= _RELATIVE_SLACK
    upnl_mm = qty * (mark - entry)
    upnl_mm -= mm
    any_long = row_any(long_)
    any_short = row_any(short)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if isolated.any():
            h = _isolated_units(margin, isolated, long_, short, upnl_mm, size, coef, directional)
            cross = ~isolated
            upnl_mm = np.where(cross, upnl_mm - size, 0.0)
            coef = np.where(cross, coef, 0.0)
            any_long = row_any(cross & long_)
            any_short = row_any(cross & short)
        else:  # every position is in the cross book
            h = None
            upnl_mm -= size
        slack = wallet - _RELATIVE_SLACK * np.abs(wallet)
        slack += _row_sum(upnl_mm)
        coef_sum = _row_sum(coef)
        held = None
        if collateral is not None:  # long exposures at their haircut value (see above)
            held = collateral > 0
            slack += collateral * (1.0 - _RELATIVE_SLACK)
            coef_sum += collateral  # (a long-only book stays long-only, a mixed one mixed)
        cross_h = _cross_headroom(slack, coef_sum, any_long, any_short, directional)
        h = cross_h if h is None else np.minimum(h, cross_h)
        h = to_headroom(h)
    lane = np.full(h.shape, LANE_BOTH, dtype=np.int8)
    if directional:
        any_long = row_any(long_)
        if held is not None:
            any_long |= held
        any_short = row_any(short)
        lane[any_long & ~any_short] = LANE_FALL
        lane[any_short & ~any_long] = LANE_RISE
    return h, lane


def _row_sum(x) -> np.ndarray:
    """(k,) sum over the columns of a (k, A) array, one column at a time from the first at
    every width, as :func:`model.kernels.headroom` adds them (so both give the same keys;
    :func:`model.accounts.row_sum` hands 8 columns and more to numpy's pairwise sum)."""
    out = x[:, 0].copy()
    for a in range(1, x.shape[1]):
        out += x[:, a]
    return out


def _cross_headroom(slack, coef, c_long, c_short, directional):
    """Bounds (:func:`_unit_bound`) of cross books with slack ``slack`` and ``coef`` the sum
    of the fall coefficients of their longs and the rise coefficients of their shorts; +inf
    for books with no position. Long-only books use the fall bound, the others the rise
    bound."""
    w = _unit_bound(slack, coef, (c_long & ~c_short) if directional else False)
    return np.where(c_long | c_short, w, np.inf)


def _isolated_units(margin, isolated, long_, short, upnl_mm, allowance, coef, directional):
    """(k,) the least bound (:func:`_unit_bound`) of each row's isolated positions (+inf
    where none)."""
    slack = margin - _RELATIVE_SLACK * np.abs(margin)
    slack += upnl_mm
    slack -= allowance
    w = _unit_bound(slack, coef, long_ if directional else False)
    w = np.where(isolated & (long_ | short), w, np.inf)
    return w.min(axis=1, initial=np.inf)


def _unit_bound(slack, coef, fall):
    """Units' headrooms before their logarithm: ``w`` with headroom ``log1p(w)``.

    With ``x = min(slack / coef, 1)``: the fall bound ``-log(1 - x)`` is ``log1p(x / (1 -
    x))`` (+inf when even a fall to zero leaves slack), the rise bound ``min(U, log1p(slack /
    coef))`` is ``log1p(x)`` (``U = log 2``). The logarithm being increasing, an account's
    least headroom is the logarithm of its units' least ``w``: :func:`to_headroom` takes one
    per account, where taking one per unit would cost more than everything else the screen
    computes. ``w`` is -1 (headroom -inf) when the slack or the coefficient is not positive or
    the bound is NaN: the unit may be liquidatable already.
    """
    x = np.minimum(slack / coef, _RISE_CAP)  # (a fall bound's x is at most 1 anyway)
    w = x / np.where(fall, 1.0 - x, 1.0)  # (x / 1 is x)
    ok = slack > 0
    ok &= coef > 0
    ok &= w == w  # not NaN
    return np.where(ok, w, -1.0)


def to_headroom(w) -> np.ndarray:
    """Headrooms ``log1p(w)`` of the bounds ``w`` (:func:`_unit_bound`) less the rounding
    allowance, in place (``w`` is a float array of its own): the one logarithm an account's
    headroom takes, vectorised by numpy for the numpy and the compiled paths alike, so both
    give the same bits."""
    with np.errstate(divide="ignore"):  # (log1p(-1) is -inf: no headroom)
        np.log1p(w, out=w)
    w *= 1.0 - _HEADROOM_SLACK
    w -= _HEADROOM_SLACK
    return w


class MarginScreen:
    """Candidate accounts for the exact margin check, from sorted headroom bounds.

    Args:
        book: the account book (its write methods report the rows they change).
        rebuild_work: work spent in vain since the last rebuild, as a multiple of the book
            size, that triggers a rebuild: candidate rows handed out but not liquidated or
            otherwise changed before the next query, and the keys the queries read of listed
            rows unchanged since the query before (``SCANS_PER_CHECK`` of them count as one
            candidate).

    Attributes:
        rebuilds: number of rebuilds so far.
        extensions: number of times a lane's sorted part was extended (no rebuild needed).
        checked: candidate rows handed out in vain since the last rebuild.
        scanned: keys the queries read, since the last rebuild, of listed rows unchanged since
            the query before.
        checked_total: candidate rows handed out in all.
    """

    def __init__(self, book: AccountBook, *, rebuild_work: float = 0.3):
        self.book = book
        book.watch("screen")
        self.rebuild_work = float(rebuild_work)
        self.rate_cummax = np.maximum.accumulate(book.tiers.rates, axis=1)
        self.anchor: np.ndarray | None = None
        self._log_anchor: np.ndarray | None = None
        n = book.n_traders
        # every row's key and lane at the last rebuild (valid while the row is unchanged)
        self.keys = np.zeros(n)
        self.lanes = np.zeros(n, dtype=np.int8)
        # per lane: rows sorted by key from position ``start`` on (positions before it were
        # handed out and dropped), their keys, and the horizon: every row of the lane not in
        # ``order`` has at least that key
        self.order = [np.zeros(0, dtype=np.int64) for _ in range(3)]
        self.sorted_keys = [np.zeros(0) for _ in range(3)]
        self.start = np.zeros(3, dtype=np.int64)
        self.horizon = np.full(3, np.inf)
        self.lane_size = np.zeros(3, dtype=np.int64)
        # rows changed since the rebuild, with a key of their own (first ``changed_count``)
        self.changed_count = 0
        self.changed_rows = np.zeros(0, dtype=np.int64)
        self.changed_keys = np.zeros(0)
        self.changed_lane = np.zeros(0, dtype=np.int8)
        # per row: its position in changed_rows; UNCHANGED, or CLOSED (changed, no position:
        # no move can liquidate it, so it is listed nowhere). int32: 4 bytes a trader.
        self.changed_slot = np.full(n, UNCHANGED, dtype=np.int32)
        self.checked = 0
        self.scanned = 0
        self._fresh = 0  # rows listed or re-keyed by the last absorption of changes
        self.checked_total = 0
        self._handed = np.zeros(0, dtype=np.int64)  # the last candidates handed out
        self._reached_buffer = None  # the compiled query's rows (n, when first used)
        self._below_buffer = None  # and those of them below maintenance
        self._handed_buffer = None  # the rows a run of compiled rounds handed out last
        self._hits = np.zeros(2, dtype=np.int64)  # (the compiled query's counts)
        self.rebuilds = 0
        self.extensions = 0

    # ---- bounds ----------------------------------------------------------------------------
    def headroom(self, mark, rows=None, out=None) -> tuple[np.ndarray, np.ndarray]:
        """Headroom and lane of ``rows`` (all when None) at ``mark``, in blocks of rows small
        enough for their temporaries to stay in cache (a fresh large array costs page faults
        on every use); scattered rows gathered with ``np.take`` (:func:`take_rows`)."""
        book = self.book
        n = book.n_traders if rows is None else len(rows)
        keys, lanes = out if out is not None else (np.empty(n), np.empty(n, dtype=np.int8))
        if book.n_assets and kernels.use(n):
            self._compiled_headroom(mark, rows, keys, lanes)
            return keys, lanes
        step = max(SCREEN_BLOCK_ELEMENTS // max(book.n_assets, 1), 256)
        for lo in range(0, n, step):
            r = slice(lo, lo + step) if rows is None else rows[lo : lo + step]
            keys[lo : lo + step], lanes[lo : lo + step] = headroom(
                take_rows(book.wallet, r),
                take_rows(book.qty, r),
                take_rows(book.entry, r),
                take_rows(book.margin, r),
                take_rows(book.isolated, r),
                mark,
                book.tiers,
                self.rate_cummax,
                book.collateral_margin_value(mark, r),
            )
        return keys, lanes

    def _compiled_headroom(self, mark, rows, keys, lanes) -> None:
        """:meth:`headroom` by :func:`model.kernels.headroom`: of the whole book in blocks of
        ``BLOCK_ROWS``, or of ``rows`` as the book reads them (:meth:`AccountBook.read`: rows
        just written by a large fill are read from what it wrote)."""
        book, t = self.book, self.book.tiers
        mark = np.asarray(mark, dtype=float)
        n = book.n_traders if rows is None else len(rows)
        step = BLOCK_ROWS if rows is None else max(n, 1)
        work = np.empty((2, min(step, n)))  # (the kernel's per-row sums; C-ordered blocks)
        for lo in range(0, n, step):
            r = slice(lo, lo + step) if rows is None else rows
            held = book.collateral_margin_value(mark, r)
            kernels.headroom(
                *book.read(r, "wallet", "qty", "entry", "margin", "isolated"), mark, t.caps,
                t.rates, t.cums, self.rate_cummax, t.rates.min(axis=1), _WIDEN,
                bool(t.rates.max() < 1.0), _NO_VALUES if held is None else held,
                keys[lo : lo + step], lanes[lo : lo + step],
                work if n - lo >= work.shape[1] else np.empty((2, n - lo)),
            )  # fmt: skip
            to_headroom(keys[lo : lo + step])  # (the kernel leaves the logarithm out)

    def reach(self, mark) -> np.ndarray:
        """(3,) :func:`reaches` of ``mark`` from the anchor (its logarithm kept)."""
        if self._log_anchor.size == 1:  # one asset: plain floats
            move = math.log(mark[0]) - self._log_anchor_1
            fall, rise = max(-move, 0.0), max(move, 0.0)
        elif not self._log_anchor.size:
            return np.zeros(3)
        else:  # (each logarithm the C library's, as a compiled query takes it)
            move = [
                math.log(m) - a
                for m, a in zip(mark.tolist(), self._log_anchor.tolist(), strict=True)
            ]
            fall, rise = max(-min(move), 0.0), max(max(move), 0.0)
        return np.array([max(fall, rise), fall, rise])

    def rebuild(self, mark) -> None:
        """Anchor at ``mark``: every account's headroom; the nearest ones of each lane sorted.

        Only the ``NEAR_SHARE`` of a lane's accounts with the least headroom are kept, sorted;
        every other account of the lane has headroom at least the lane's :attr:`horizon`, and
        when prices reach it the lane is extended from the stored keys (:meth:`_extend`).
        Selecting them is linear (a partition), sorting them a fraction of a full sort.
        """
        self.book.take_changed("screen")  # everything is recomputed now
        self.headroom(mark, out=(self.keys, self.lanes))
        self.anchor = np.array(mark, dtype=float)
        self._log_anchor = np.array([math.log(p) for p in self.anchor.tolist()])
        self._log_anchor_1 = float(self._log_anchor[0]) if self.anchor.size == 1 else 0.0
        for lane in range(3):
            rows = np.flatnonzero(self.lanes == lane)
            self.lane_size[lane] = rows.size
            self.order[lane] = np.zeros(0, dtype=np.int64)
            self.sorted_keys[lane] = np.zeros(0)
            self.start[lane] = 0
            self.horizon[lane] = -np.inf
            self._extend(lane, -np.inf, rows)
        self.changed_slot[self.changed_rows[: self.changed_count]] = UNCHANGED
        self.changed_slot[self.changed_slot == CLOSED] = UNCHANGED
        self.changed_count = 0
        self.checked = 0
        self.scanned = 0
        self._handed = np.zeros(0, dtype=np.int64)
        self.rebuilds += 1

    def _extend(self, lane: int, reach: float, pool=None) -> None:
        """Sort in the lane's rows with keys from its horizon up to beyond ``reach``.

        The rows taken are those with the least keys among the lane's rows at or beyond the
        horizon: every row of the lane the current prices can reach plus the next
        ``NEAR_SHARE`` of the lane. Their keys are at least every key already sorted, so they
        are appended; the new horizon is the least key left out, above ``reach``. Rows that
        changed since the rebuild have stale keys here; they are skipped when handed out.
        """
        pool, k = self._lane_pool(lane, pool)
        size = int(np.count_nonzero(k <= reach)) + max(
            int(self.lane_size[lane] * NEAR_SHARE), NEAR_MIN
        )
        horizon = np.inf
        if size < pool.size:
            # the size-th least key, estimated from an evenly spaced sample of the keys (a
            # partition of all of them costs ten times more); exact when it falls short
            stride = max(pool.size // 4096, 1)
            horizon = np.partition(k[::stride], size // stride)[size // stride]
            if not horizon > reach:
                horizon = np.partition(k, size)[size]  # > reach: more than the reached
            pool, k = self._below(pool, k, horizon)
        order = stable_argsort(k)
        lo = self.start[lane]
        self.order[lane] = np.concatenate([self.order[lane][lo:], pool[order]])
        self.sorted_keys[lane] = np.concatenate([self.sorted_keys[lane][lo:], k[order]])
        self.start[lane] = 0
        self.horizon[lane] = horizon
        self.extensions += 1

    def _lane_pool(self, lane: int, pool=None) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``lane`` with keys at or beyond its horizon (``pool``: those rows,
        already found), and their keys; in a compiled book one pass over the book
        (:func:`model.kernels.lane_pool`)."""
        if pool is None and self.book.compiled():
            n = self.keys.size
            rows, keys = np.empty(n, dtype=np.int64), np.empty(n)
            m = kernels.lane_pool(self.lanes, self.keys, lane, self.horizon[lane], rows, keys)
            return rows[:m], keys[:m]
        if pool is None:
            pool = np.flatnonzero((self.lanes == lane) & (self.keys >= self.horizon[lane]))
        return pool, self.keys[pool]

    def _below(self, rows, keys, bound) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` and ``keys`` where the key is below ``bound``; in a compiled book the two
        arrays (the pool :meth:`_lane_pool` made) compacted in place
        (:func:`model.kernels.keep_below`)."""
        if self.book.compiled():
            m = kernels.keep_below(rows, keys, bound)
            return rows[:m], keys[:m]
        near = keys < bound
        return rows[near], keys[near]

    def _absorb_changes(self, mark, rows) -> np.ndarray:
        """Recompute the headroom of accounts that changed (``rows``, from the book's change
        log; None: the whole book changed), as keys relative to the anchor
        (rebuilding instead when the whole book changed, or when the changed list would hold
        more than ``MAX_CHANGED_SHARE`` of it); the reach of ``mark`` from the anchor."""
        self._fresh = 0
        if rows is None:  # the whole book changed
            self.rebuild(mark)
            return self.reach(mark)
        if rows.size == 0:
            return self.reach(mark)
        rows, slot = self._sort_out_changed(rows)
        if not rows.size:
            return self.reach(mark)
        known = slot >= 0  # (rows listed already keep their slot)
        joining = rows.size - int(np.count_nonzero(known))
        if self.changed_count + joining > MAX_CHANGED_SHARE * self.book.n_traders:
            self.rebuild(mark)
            return self.reach(mark)
        self._fresh = rows.size
        reach = self.reach(mark)
        keys, lanes = self.headroom(mark, rows)
        keys -= reach[_OFFSET_LANE][lanes]
        if not joining:  # all changed again (traders who trade every step): replace the keys
            lo = int(slot[0])
            if slot[-1] - lo == slot.size - 1 and (slot[1:] > slot[:-1]).all():
                # one run of the changed list, in order (the same rows as when they were
                # added): slices, not scattered writes
                self.changed_keys[lo : lo + slot.size] = keys
                self.changed_lane[lo : lo + slot.size] = lanes
            else:
                self.changed_keys[slot] = keys
                self.changed_lane[slot] = lanes
            return reach
        if known.any():  # changed again: replace the key
            self.changed_keys[slot[known]] = keys[known]
            self.changed_lane[slot[known]] = lanes[known]
        new = ~known
        closed = new & (keys == np.inf)  # no position: listed nowhere
        self.changed_slot[rows[closed]] = CLOSED
        new &= ~closed
        if new.any():
            self._append(rows[new], keys[new], lanes[new])
        return reach

    def _sort_out_changed(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Count the candidates handed out last time that changed since (they were
        liquidated: work well spent), mark the changed accounts closed out and not listed
        (no headroom to compute), and return the others with their slots in the changed list.
        In a large book a few rows (a liquidation round's) go to one compiled call
        (:func:`model.kernels.sort_out_changed`); many rows (a crowd's trades) stay with
        numpy, which reads their positions from the gathers the trades left
        (:meth:`AccountBook.read`) where the compiled call would read the book."""
        if rows.size < GATHER_SHARED and self.book.compiled():
            kept_rows, kept_slots = np.empty_like(rows), np.empty(rows.size, dtype=np.int32)
            hits, kept = kernels.sort_out_changed(
                rows, self._handed, self.changed_slot, self.book.qty, CLOSED, kept_rows,
                kept_slots,
            )  # fmt: skip
            self.checked -= hits
            if kept == rows.size:  # (the rows themselves: their gathers are known by identity)
                return rows, kept_slots
            return kept_rows[:kept], kept_slots[:kept]
        handed = self._handed
        if handed.size:  # (both sorted and distinct: the smaller looked up in the larger)
            small, large = (handed, rows) if handed.size <= rows.size else (rows, handed)
            at = np.minimum(np.searchsorted(large, small), large.size - 1)
            self.checked -= int(np.count_nonzero(large[at] == small))
        slot = self.changed_slot[rows]
        held = row_any(self.book.read(rows, "qty")[0] != 0)
        if held.all():
            return rows, slot
        self.changed_slot[rows[~held & (slot < 0)]] = CLOSED
        keep = held | (slot >= 0)
        return rows[keep], slot[keep]

    def _append(self, rows, keys, lanes) -> None:
        """Add rows to the changed list (its arrays grow by doubling)."""
        m, k = self.changed_count, rows.size
        if m + k > self.changed_rows.size:
            cap = max(2 * (m + k), 1024)
            self.changed_rows = np.resize(self.changed_rows, cap)
            self.changed_keys = np.resize(self.changed_keys, cap)
            self.changed_lane = np.resize(self.changed_lane, cap)
        self.changed_rows[m : m + k] = rows
        self.changed_keys[m : m + k] = keys
        self.changed_lane[m : m + k] = lanes
        self.changed_slot[rows] = np.arange(m, m + k, dtype=np.int32)
        self.changed_count = m + k

    # ---- the query -------------------------------------------------------------------------
    def candidates(self, mark) -> np.ndarray:
        """Sorted rows that may be below maintenance at ``mark``; every other row is not."""
        changed = self._changes(mark)
        compiled = self.book.compiled()
        rows = self._closed_then_reached(mark, changed) if compiled else None
        if rows is None:
            rows = self._query(mark, changed, compiled)
        return self._hand_out(rows)

    def cross_liquidatable(self, mark) -> np.ndarray:
        """The sorted rows whose cross book is below maintenance at ``mark``, in a book with
        no isolated position and no collateral asset: the :meth:`candidates`, then the cross
        check of them; in a compiled book after a round of whole closes both in one compiled
        call (:func:`model.kernels.closed_then_below`)."""
        mark = np.asarray(mark, dtype=float)
        changed = self._changes(mark)
        compiled = self.book.compiled()
        below = self._closed_then_below(mark, changed) if compiled else None
        if below is not None:
            return below
        rows = self._hand_out(self._query(mark, changed, compiled))
        if compiled:
            return self.book.cross_liquidatable_rows(mark, rows)
        return rows[self.book.cross_liquidatable(mark, rows)]

    def _changes(self, mark) -> np.ndarray | None:
        """Rebuild when the work wasted since the last rebuild passes its share of the book;
        then the rows changed since the last query (:meth:`AccountBook.take_changed`)."""
        wasted = self.checked + self.scanned / SCANS_PER_CHECK
        if self.anchor is None or wasted > self.rebuild_work * self.book.n_traders:
            self.rebuild(mark)
        return self.book.take_changed("screen")

    def _query(self, mark, changed, compiled: bool) -> np.ndarray:
        """The query's rows once the ``changed`` rows' headrooms are absorbed and every lane
        reached is extended."""
        reach = self._absorb_changes(mark, changed)
        for lane in range(3):
            if reach[lane] >= self.horizon[lane]:
                self._extend(lane, reach[lane])
        self.scanned += max(self.changed_count - self._fresh, 0)
        return self._reached_compiled(reach) if compiled else self._reached_all(reach)

    def _hand_out(self, rows) -> np.ndarray:
        """Count the query's rows as checked, keep them (the next query counts those that
        changed since) and return them."""
        self.checked += rows.size
        self.checked_total += rows.size
        self._handed = rows
        return rows

    def _closed_then_reached(self, mark, changed) -> np.ndarray | None:
        """The query's rows in one compiled call (:func:`model.kernels.closed_then_reached`)
        when every changed row closed out and is not listed (after a round of whole closes)
        and no lane needs extending: the same rows, sorted parts and counters as the numpy
        query; None otherwise, nothing done."""
        if changed is None or changed.size >= GATHER_SHARED:
            return None
        reach = self.reach(mark)
        if (reach >= self.horizon).any():
            return None
        out, hits = self._reached_out(), np.zeros(1, dtype=np.int64)
        found = kernels.closed_then_reached(
            changed, self._handed, self.changed_slot, self.book.qty, CLOSED, reach,
            *self._sorted_parts(), self.start, UNCHANGED, *self._listed(), out, hits,
        )  # fmt: skip
        if found < 0:
            return None
        self._after_closed(int(hits[0]))
        return out[:found].copy()

    def _closed_then_below(self, mark, changed) -> np.ndarray | None:
        """:meth:`_closed_then_reached` and the cross check of its rows in one compiled call
        (:func:`model.kernels.closed_then_below`): the rows below maintenance, the query's
        rows handed out as :meth:`candidates` hands them out; None otherwise, nothing done."""
        if changed is None or changed.size >= GATHER_SHARED:
            return None
        book, t = self.book, self.book.tiers
        out, hits = self._reached_out(), self._hits
        below = self._below_buffer
        found = kernels.closed_then_below(
            changed, self._handed, self.changed_slot, book.qty, CLOSED, self.reach(mark),
            self.horizon, *self._sorted_parts(), self.start, UNCHANGED, *self._listed(), out,
            hits, book.wallet, book.entry, book.isolated, mark, t.caps, t.rates, t.cums, below,
        )  # fmt: skip
        if found < 0:
            return None
        self._after_closed(int(hits[0]))
        self._hand_out(out[:found].copy())
        return below[: hits[1]].copy()

    def compiled_query_state(self) -> tuple[np.ndarray, tuple]:
        """The screen's part of a run of compiled rounds (:func:`model.kernels.closing_rounds`),
        whose queries after a round of whole closes are :meth:`_closed_then_below`'s: the
        counters it updates (checked, scanned, checked in all) and, in the kernel's order,
        the rows handed out last, the sorted parts, the changed list, the anchor's
        logarithms, the rebuild test's threshold and the buffers."""
        out = self._reached_out()
        if self._handed_buffer is None:
            self._handed_buffer = np.empty(self.book.n_traders, dtype=np.int64)
        counters = np.array([self.checked, self.scanned, self.checked_total], dtype=np.int64)
        n = self.book.n_traders
        return counters, (
            self._handed, self.changed_slot, CLOSED, self.horizon, *self._sorted_parts(),
            self.start, UNCHANGED, *self._listed(), self._log_anchor, counters,
            self.rebuild_work * n, SCANS_PER_CHECK, GATHER_SHARED, out, self._handed_buffer,
            self._below_buffer,
        )  # fmt: skip

    def after_compiled_queries(self, counters, queries: int, handed: int) -> None:
        """Take back the counters of a run of compiled rounds that made ``queries`` queries,
        the last of which handed out ``handed`` rows (:meth:`_after_closed` and
        :meth:`_hand_out` of each)."""
        if queries:
            self._fresh = 0
            self.checked, self.scanned, self.checked_total = counters.tolist()
            self._handed = self._handed_buffer[:handed].copy()

    def below_rows(self, k: int) -> np.ndarray:
        """The ``k`` rows the last compiled query found below maintenance (a copy)."""
        return self._below_buffer[:k].copy()

    def _after_closed(self, hits: int) -> None:
        """The counters of a compiled query after a round of whole closes: ``hits`` of the
        rows handed out last changed (they were liquidated: work well spent), and the whole
        changed list was scanned."""
        self._fresh = 0
        self.checked -= hits
        self.scanned += self.changed_count

    def _reached_all(self, reach) -> np.ndarray:
        """Sorted rows reached: each lane's (:meth:`_reached`) and the changed list's."""
        parts = []
        for lane in range(3):
            rows = self._reached(lane, reach[lane])
            if rows.size:
                parts.append(rows)
        m = self.changed_count
        if m:
            hit = self.changed_keys[:m] <= reach[self.changed_lane[:m]]
            parts.append(self.changed_rows[:m][hit])
        if len(parts) > 1:
            return np.sort(np.concatenate(parts))
        return np.sort(parts[0]) if parts else _NO_ROWS

    def _reached_compiled(self, reach) -> np.ndarray:
        """:meth:`_reached_all` in one compiled call (:func:`model.kernels.reached_rows`):
        the same rows, and the same sorted parts left behind."""
        out = self._reached_out()
        found = kernels.reached_rows(
            reach, *self._sorted_parts(), self.start, self.changed_slot, UNCHANGED,
            *self._listed(), out,
        )  # fmt: skip
        return out[:found].copy()

    def _sorted_parts(self) -> tuple[np.ndarray, ...]:
        """Each lane's sorted part, as the compiled queries take them: its rows and keys,
        lanes 0 to 2."""
        return tuple(a for lane in range(3) for a in (self.order[lane], self.sorted_keys[lane]))

    def _listed(self) -> tuple:
        """The changed list, as the compiled queries take it: its rows, keys and lanes, and
        how many it holds."""
        return self.changed_rows, self.changed_keys, self.changed_lane, self.changed_count

    def _reached_out(self) -> np.ndarray:
        """The compiled queries' buffer of rows reached, kept between queries (a row is
        reached at most once: the book's size suffices)."""
        if self._reached_buffer is None:
            self._reached_buffer = np.empty(self.book.n_traders, dtype=np.int64)
            self._below_buffer = np.empty(self.book.n_traders, dtype=np.int64)
        return self._reached_buffer

    def _reached(self, lane: int, reach: float) -> np.ndarray:
        """Unchanged rows of the lane's sorted part with a key at most ``reach``.

        Rows that changed since the rebuild are dropped from the sorted part as they are met
        (the changed list holds their current keys): the rows still unchanged are moved up
        against the end of the reached prefix and the prefix's start moves past the dropped
        ones, so each dropped row is read once.
        """
        lo = self.start[lane]
        keys = self.sorted_keys[lane]
        if lo == keys.size or keys[lo] > reach:  # nothing reached (no search needed)
            return _NO_ROWS
        hi = lo + int(np.searchsorted(keys[lo:], reach, side="right"))
        order = self.order[lane]
        rows = order[lo:hi]
        live = self.changed_slot[rows] == UNCHANGED
        if live.all():
            return rows
        rows = rows[live]
        lo = hi - rows.size
        keys[lo:hi] = keys[self.start[lane] : hi][live]
        order[lo:hi] = rows
        self.start[lane] = lo
        return rows
