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
faster than its maintenance) and a fall of ``u`` costs it at most ``N0 (1 - e^-u)``; a fall
cannot hurt a short. So an account whose positions are all long is keyed by
``-log(1 - S(M0) / sum N0)`` against the largest *fall* of any asset since ``M0``, one whose
positions are all short by ``min(U, log(1 + S(M0) / c))`` against the largest *rise*, and a
mixed one against ``d`` (:func:`headroom`, :func:`reaches`). After a crash, short-only accounts
are never candidates. The one-sided distances chain too: a fall from ``M_t`` is at most the
fall from the anchor plus the rise from the anchor to ``M_t``.

Bookkeeping. At a *rebuild* every account's headroom is computed at the anchor mark ``P``, and
in each lane the eighth with the least headroom is sorted (the rest all have more headroom than
the last of those: the lane's *horizon*); the candidates at mark ``M`` are then a prefix of each
lane's order (headroom at most the lane's distance from ``P``), found by binary search, and the
screen rebuilds before a distance reaches its horizon. An account whose state changes (a fill,
a fee, a deposit) is reported by the :class:`model.accounts.AccountBook` method that wrote it
(every write goes through one); at the next query its headroom is recomputed at the current mark ``M_t`` and stored as
``key = h - d(P, M_t)`` (for the one-sided lanes, less the move from ``P`` to ``M_t`` in the
opposite sense): by the triangle inequality ``d(M, P) < key`` implies ``d(M, M_t) < h``. Changed accounts are few and scanned linearly (each has a slot, so an
account that trades every step is stored once). The screen also rebuilds when the candidates it
handed out since the last rebuild add up to ``rebuild_work`` (0.3) times the book: a rebuild
costs a few passes over the book, so its cost is amortised over the work it saves, and a calm
step costs far less than one pass.
"""

from __future__ import annotations

import numpy as np

from model.accounts import AccountBook, TierTable, maintenance_margin

__all__ = [
    "LANE_BOTH",
    "LANE_FALL",
    "LANE_RISE",
    "MarginScreen",
    "headroom",
    "log_distance",
    "reaches",
]

# Largest log-price move a headroom is valid for: the tier-rate bound looks up to e^U N0.
MAX_HEADROOM = float(np.log(2.0))
# Allowances that keep the bound safe under float rounding of the exact check.
_RELATIVE_SLACK = 1e-9
_HEADROOM_SLACK = 1e-12
# Rows per block in whole-book passes: bounds the size of temporaries (peak memory).
BLOCK_ROWS = 1 << 16
# Share of accounts, those with the least headroom, that a rebuild sorts and keeps.
NEAR_SHARE = 1.0 / 8.0
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
        return np.broadcast_to(tiers.rates[:, 0], notional.shape)
    t = tiers.tier_index(notional * np.exp(MAX_HEADROOM))
    return rate_cummax[np.arange(tiers.n_assets), t]


def headroom(wallet, qty, entry, margin, isolated, mark, tiers: TierTable, rate_cummax=None):
    """Log-price headroom of each account, and the lane it is measured in. Pure numpy.

    No unit of an account can be liquidatable at a mark ``M`` whose distance from ``mark``, as
    its lane measures it (:func:`reaches`), is below its headroom (module docstring):

    * ``LANE_FALL``: every open position is long. A rise cannot hurt a long position (its PnL
      grows faster than its maintenance, every rate being below 1), and a fall of ``u`` costs
      at most ``N (1 - e^-u)``: the headroom is ``-log(1 - S / sum N)``, against the largest
      fall of any asset.
    * ``LANE_RISE``: every open position is short; ``min(U, log(1 + S / sum N (1 + r)))``
      against the largest rise.
    * ``LANE_BOTH``: longs and shorts; each unit's own bound (the two above, or
      ``min(U, log(1 + S / c))`` with ``c`` over the unit's longs and shorts for a mixed cross
      book) against the log-price distance.

    Args:
        wallet: (k,) cross wallets.
        qty, entry, margin: (k, A) quantities, entry prices, isolated margins.
        isolated: (k, A) isolated flags.
        mark: (A,) the mark the headroom is measured from.
        tiers: maintenance tiers per asset.
        rate_cummax: (A, T) running maximum of the tier rates (computed when omitted).

    Returns:
        ``(headroom, lane)``: (k,) headroom, +inf for accounts that no move can liquidate,
        -inf for accounts that are (or may be) liquidatable already; (k,) int8 lanes.
    """
    if rate_cummax is None:
        rate_cummax = np.maximum.accumulate(tiers.rates, axis=1)
    mark = np.asarray(mark, dtype=float)
    open_ = qty != 0
    long_ = qty > 0
    short = qty < 0
    notional = np.abs(qty) * mark
    mm = maintenance_margin(notional, tiers)
    upnl = qty * (mark - entry)
    rise_coef = notional * (1.0 + _slope_bound(notional, tiers, rate_cummax))
    # Without rates below 1 a rise could hurt a long position: measure every account both ways.
    directional = bool(tiers.rates.max() < 1.0)
    fall_coef = notional if directional else rise_coef
    fall_headroom = _fall_headroom if directional else _rise_headroom
    # magnitude of the terms the exact check adds, for the rounding allowance
    size = np.abs(qty) * (mark + entry) + mm + np.abs(margin)

    cross = open_ & ~isolated
    iso = open_ & isolated
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # cross book: one unit per account
        c_slack = wallet + np.where(isolated, 0.0, upnl - mm).sum(axis=1)
        c_slack = c_slack - _RELATIVE_SLACK * (
            np.abs(wallet) + np.where(cross, size, 0.0).sum(axis=1)
        )
        c_fall = np.where(cross & long_, fall_coef, 0.0).sum(axis=1)
        c_rise = np.where(cross & short, rise_coef, 0.0).sum(axis=1)
        c_long = (cross & long_).any(axis=1)
        c_short = (cross & short).any(axis=1)
        h = np.where(
            c_long & c_short,
            _rise_headroom(c_slack, c_fall + c_rise),
            np.where(c_long, fall_headroom(c_slack, c_fall), _rise_headroom(c_slack, c_rise)),
        )
        h = np.where(c_long | c_short, h, np.inf)
        # isolated positions: one unit each
        i_slack = margin + upnl - mm - _RELATIVE_SLACK * size
        hi = np.where(long_, fall_headroom(i_slack, fall_coef), _rise_headroom(i_slack, rise_coef))
        h = np.minimum(h, np.where(iso, hi, np.inf).min(axis=1, initial=np.inf))
    any_long = (open_ & long_).any(axis=1)
    any_short = (open_ & short).any(axis=1)
    lane = np.where(
        any_long & ~any_short, LANE_FALL, np.where(any_short & ~any_long, LANE_RISE, LANE_BOTH)
    ).astype(np.int8)
    if not directional:
        lane[:] = LANE_BOTH
    return h, lane


def _rise_headroom(slack, coef):
    """``min(U, log1p(slack / coef))`` less a rounding allowance; -inf when slack <= 0 or NaN."""
    h = np.log1p(slack / coef) * (1.0 - _HEADROOM_SLACK) - _HEADROOM_SLACK
    h = np.minimum(h, MAX_HEADROOM)
    return np.where((slack > 0) & (coef > 0) & ~np.isnan(h), h, -np.inf)


def _fall_headroom(slack, coef):
    """``-log(1 - slack / coef)`` less a rounding allowance (+inf when even a fall to zero
    leaves slack); -inf when slack <= 0 or NaN."""
    h = -np.log1p(-np.minimum(slack / coef, 1.0)) * (1.0 - _HEADROOM_SLACK) - _HEADROOM_SLACK
    return np.where((slack > 0) & (coef > 0) & ~np.isnan(h), h, -np.inf)


class MarginScreen:
    """Candidate accounts for the exact margin check, from sorted headroom bounds.

    Args:
        book: the account book (its write methods report the rows they change).
        rebuild_work: candidate rows checked since the last rebuild, as a multiple of the
            book size, that triggers a rebuild.

    Attributes:
        rebuilds: number of rebuilds so far.
        checked: candidate rows handed out since the last rebuild.
        checked_total: candidate rows handed out in all.
    """

    def __init__(self, book: AccountBook, *, rebuild_work: float = 0.3):
        self.book = book
        book.watch("screen")
        self.rebuild_work = float(rebuild_work)
        self.rate_cummax = np.maximum.accumulate(book.tiers.rates, axis=1)
        self.anchor: np.ndarray | None = None
        # per lane: rows sorted by headroom at the anchor, their keys, and the horizon
        # (accounts of the lane outside ``order`` have at least that much headroom)
        self.order = [np.zeros(0, dtype=np.int64) for _ in range(3)]
        self.sorted_keys = [np.zeros(0) for _ in range(3)]
        self.horizon = np.full(3, np.inf)
        self.changed_rows = np.zeros(0, dtype=np.int64)  # rows whose state changed since
        self.changed_keys = np.zeros(0)
        self.changed_lane = np.zeros(0, dtype=np.int8)
        # position of each row in changed_rows, -1 when absent (int32: 4 bytes a trader)
        self.changed_slot = np.full(book.n_traders, -1, dtype=np.int32)
        self.checked = 0
        self.checked_total = 0
        self.rebuilds = 0

    # ---- bounds ----------------------------------------------------------------------------
    def headroom(self, mark, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """Headroom and lane of ``rows`` (all when None) at ``mark``, in blocks of rows."""
        book = self.book
        rows = np.arange(book.n_traders) if rows is None else np.asarray(rows)
        out = np.empty(rows.size)
        lanes = np.empty(rows.size, dtype=np.int8)
        for lo in range(0, rows.size, BLOCK_ROWS):
            r = rows[lo : lo + BLOCK_ROWS]
            if r.size == book.n_traders:
                r = slice(None)  # plain views when one block covers the book
            out[lo : lo + BLOCK_ROWS], lanes[lo : lo + BLOCK_ROWS] = headroom(
                book.wallet[r],
                book.qty[r],
                book.entry[r],
                book.margin[r],
                book.isolated[r],
                mark,
                book.tiers,
                self.rate_cummax,
            )
        return out, lanes

    def rebuild(self, mark) -> None:
        """Anchor at ``mark``: every account's headroom; the nearest ones of each lane sorted.

        Only the ``NEAR_SHARE`` of a lane's accounts with the least headroom are kept, sorted;
        every other account of the lane has headroom at least the lane's :attr:`horizon`, so
        none of them can be a candidate before the prices have moved that far from the
        anchor, and by then the screen rebuilds. Selecting them is linear (a partition),
        sorting them a fraction of a full sort.
        """
        self.book.take_changed("screen")  # everything is recomputed now
        keys, lanes = self.headroom(mark)
        for lane in range(3):
            rows = np.flatnonzero(lanes == lane)
            k = keys[rows]
            size = max(int(rows.size * NEAR_SHARE), 1024)
            horizon = np.inf
            if size < rows.size:
                horizon = np.partition(k, size)[size]
                if not horizon > 0:  # most accounts at or past their boundary: keep them all
                    horizon = np.inf
            if np.isfinite(horizon):
                near = k < horizon
                rows, k = rows[near], k[near]
            order = np.argsort(k, kind="stable")
            self.order[lane] = rows[order]
            self.sorted_keys[lane] = k[order]
            self.horizon[lane] = horizon
        self.anchor = np.array(mark, dtype=float)
        self.changed_slot[self.changed_rows] = -1
        self.changed_rows = np.zeros(0, dtype=np.int64)
        self.changed_keys = np.zeros(0)
        self.changed_lane = np.zeros(0, dtype=np.int8)
        self.checked = 0
        self.rebuilds += 1

    def _absorb_changes(self, mark) -> None:
        """Recompute the headroom of accounts that changed, as keys relative to the anchor."""
        rows = self.book.take_changed("screen")
        if rows is None:  # the whole book changed
            self.rebuild(mark)
            return
        if rows.size == 0:
            return
        keys, lanes = self.headroom(mark, rows)
        keys = keys - reaches(mark, self.anchor)[_OFFSET_LANE][lanes]
        slot = self.changed_slot[rows]
        known = slot >= 0
        self.changed_keys[slot[known]] = keys[known]  # changed again: replace the key
        self.changed_lane[slot[known]] = lanes[known]
        new = ~known
        self.changed_slot[rows[new]] = np.arange(int(new.sum())) + self.changed_rows.size
        self.changed_rows = np.concatenate([self.changed_rows, rows[new]])
        self.changed_keys = np.concatenate([self.changed_keys, keys[new]])
        self.changed_lane = np.concatenate([self.changed_lane, lanes[new]])

    # ---- the query -------------------------------------------------------------------------
    def candidates(self, mark) -> np.ndarray:
        """Sorted rows that may be below maintenance at ``mark``; every other row is not."""
        n = self.book.n_traders
        if (
            self.anchor is None
            or self.checked > self.rebuild_work * n
            or (reaches(mark, self.anchor) >= self.horizon).any()
        ):
            self.rebuild(mark)
        self._absorb_changes(mark)
        if self.changed_rows.size > n // 4:
            self.rebuild(mark)
        reach = reaches(mark, self.anchor)
        parts = [
            self.order[lane][: np.searchsorted(self.sorted_keys[lane], reach[lane], side="right")]
            for lane in range(3)
        ]
        parts.append(self.changed_rows[self.changed_keys <= reach[self.changed_lane]])
        rows = np.unique(np.concatenate(parts))
        self.checked += rows.size
        self.checked_total += rows.size
        return rows
