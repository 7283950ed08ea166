"""The account book: every trader's collateral and positions as numpy arrays.

A venue margins each account with a few array operations; nothing here loops over traders.
Notation (docs/design.md): wallet ``W`` (quote currency), signed quantity ``q``, entry price ``e``,
mark price ``M``, notional ``N = |q| M``, side ``s = sign(q)``.

* A cross position draws on the account's wallet: the account's cross equity
  ``W + sum q (M - e)`` backs ``sum mm(N)`` of all its cross positions.
* An isolated position has its own margin ``m``: its equity ``m + q (M - e)`` backs only its own
  ``mm(N)``; a loss on it never touches the wallet or another position.

* Collateral assets (:mod:`model.collateral`): an account's holdings ``H_c`` of them count
  ``H_c P_c (1 - h_c)`` toward its cross equity (their haircut value) and ``H_c P_c`` toward what
  it owns (:meth:`AccountBook.equity`); isolated positions take none of them. Without collateral
  assets (``collateral`` None) none of this costs anything.

Maintenance is tiered: ``mm(N) = N r_t - cum_t`` with ``t`` the first tier whose cap is at
least ``N`` and ``cum_t = cum_{t-1} + cap_{t-1} (r_t - r_{t-1})``, so ``mm`` is continuous and
convex in ``N``. A flat rate is a single tier with an infinite cap.

The functions at module level are pure kernels; :class:`AccountBook` holds the state and
wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model import kernels
from model.collateral import CollateralAssets
from model.gathers import SharedGathers, put_rows, take_rows
from model.ids import as_ids
from model.sorting import run_starts

__all__ = [
    "AccountBook",
    "TierTable",
    "adds_rows_in_order",
    "apply_fills",
    "column_sum",
    "maintenance_margin",
    "put_rows",
    "row_any",
    "row_sum",
    "take_rows",
]


# --------------------------------------------------------------------------------------------
# Maintenance tiers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierTable:
    """Maintenance tiers of every asset, padded to a common length.

    Attributes:
        caps: (A, T) upper notional bound of each tier; the last is +inf.
        rates: (A, T) maintenance rate of each tier.
        cums: (A, T) maintenance amount that keeps ``N r_t - cum_t`` continuous.
    """

    caps: np.ndarray
    rates: np.ndarray
    cums: np.ndarray

    @classmethod
    def from_lists(cls, tiers: list[list[tuple[float, float]]]) -> TierTable:
        """Build from one list of ``(cap, rate)`` per asset; a flat rate is ``[(inf, r)]``."""
        width = max(len(t) for t in tiers)
        a = len(tiers)
        caps = np.full((a, width), np.inf)
        rates = np.zeros((a, width))
        cums = np.zeros((a, width))
        for i, tier in enumerate(tiers):
            cap = np.array([c for c, _ in tier], dtype=float)
            rate = np.array([r for _, r in tier], dtype=float)
            cap[-1] = np.inf  # positions beyond the last cap stay in the last tier
            floor = np.concatenate([[0.0], cap[:-1]])
            cum = np.cumsum(floor * np.diff(rate, prepend=rate[0]))
            k = len(tier)
            caps[i, :k], rates[i, :k], cums[i, :k] = cap, rate, cum
            # pad with copies of the last tier so every row has the same width
            caps[i, k:], rates[i, k:], cums[i, k:] = np.inf, rate[-1], cum[-1]
        return cls(caps, rates, cums)

    @classmethod
    def flat(cls, rates) -> TierTable:
        return cls.from_lists([[(np.inf, float(r))] for r in np.atleast_1d(rates)])

    @property
    def n_assets(self) -> int:
        return self.caps.shape[0]

    @property
    def max_rate(self) -> np.ndarray:
        """(A,) the highest maintenance rate of each asset."""
        return self.rates.max(axis=1)

    def tier_index(self, notional: np.ndarray) -> np.ndarray:
        """(k, A) index of the tier each notional falls in."""
        notional = np.asarray(notional, dtype=float)
        out = np.empty(notional.shape, dtype=np.intp)
        for a in range(self.n_assets):  # loop over assets, not traders
            out[..., a] = np.searchsorted(self.caps[a], notional[..., a], side="left")
        return np.minimum(out, self.caps.shape[1] - 1)


def maintenance_margin(notional: np.ndarray, tiers: TierTable) -> np.ndarray:
    """``mm(N) = N r_t - cum_t`` elementwise over a (k, A) notional array."""
    notional = np.asarray(notional, dtype=float)
    if tiers.caps.shape[1] == 1:  # flat rates: no tier search
        return notional * tiers.rates[:, 0]
    t = tiers.tier_index(notional)
    cols = np.arange(tiers.n_assets)
    rate = tiers.rates[cols, t]
    cum = tiers.cums[cols, t]
    return np.maximum(notional * rate - cum, 0.0)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------
_NO_VALUES = np.zeros(0)  # (an empty array: no collateral values, for the kernels)
_NO_FLAGS = np.zeros((0, 0), dtype=bool)  # (no isolated flags or margins needed, for the
_NO_MARGINS = np.zeros((0, 0))  # kernels)
# Least number of rows whose gathers AccountBook shares between reads (AccountBook.read).
GATHER_SHARED = 2048
# Reductions over a row of a few assets are faster one column at a time, and equal to numpy's
# to the bit below 8 columns. (take_rows and put_rows, the fast gathers and scatters of rows,
# are in model.gathers.)


@dataclass
class RoundSums:
    """What :meth:`AccountBook.close_cross_books` closed: the positions closed ``qty`` (k, A),
    the market's prices before and after the round's flow (A,), per position the
    ``notional`` and the ``fee`` and ``bad`` debt spread over it (k, A), each row's closed
    notional (k,), and the round's fees, bad debt and closed notional (each ``x.sum()`` of
    its array)."""

    qty: np.ndarray
    price_before: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    fee: np.ndarray
    bad: np.ndarray
    row_notional: np.ndarray
    fees: float
    bad_debt: float
    liquidated: float


def row_sum(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=1)`` of a (k, A) array: column by column below 8 columns (numpy's own
    reduction then adds the row's entries in the same order, so the bits are the same, and
    it is slow along a short last axis: 1.5 ms against 0.05 for 10^5 x 2)."""
    if x.shape[1] >= 8 or x.shape[1] == 0:
        return x.sum(axis=1)
    out = x[:, 0] + 0.0  # numpy starts from 0.0 too: a sum of -0.0 alone is +0.0
    for a in range(1, x.shape[1]):  # loop over assets, not traders
        out += x[:, a]
    return out


def column_sum(x) -> np.ndarray:
    """``x.sum(axis=0)`` of a (k, A) array, to the bit. With few columns numpy adds each column
    row by row (a reduction over the outer axis: 1.5 ms for 10^5 x 2, against 0.06 ms for the
    columns' own sums, which add in another order); a large batch goes to a compiled loop that
    adds in the same order (:func:`model.kernels.column_sums`)."""
    x = np.asarray(x, dtype=float)
    if not adds_rows_in_order(x) or not kernels.use(x.shape[0]):
        return x.sum(axis=0)
    out = np.empty(x.shape[1])
    kernels.column_sums(x, out)
    return out


def adds_rows_in_order(x: np.ndarray) -> bool:
    """Whether numpy's ``x.sum(axis=0)`` adds the rows of ``x`` one at a time from the first:
    a C array of 2 to 7 columns. Then :func:`column_sum` is that order, and a compiled loop
    that sums the columns while it reads ``x`` for something else gives the same bits (with
    one column, or in another layout, numpy sums pairwise)."""
    return x.ndim == 2 and x.flags.c_contiguous and 2 <= x.shape[1] < 8


def row_any(x: np.ndarray) -> np.ndarray:
    """``x.any(axis=1)`` of a (k, A) boolean array, column by column."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], dtype=bool)
    out = x[:, 0].copy()
    for a in range(1, x.shape[1]):
        out |= x[:, a]
    return out


def _update_rows(a: np.ndarray, rows, op, values) -> None:
    """``a[rows] = op(a[rows], values)`` (``a[rows] += values`` for ``np.add``; rows None:
    every row, in place)."""
    if rows is None:
        op(a, values, out=a)
    else:
        put_rows(a, rows, op(take_rows(a, rows), values))


# --------------------------------------------------------------------------------------------
# Fills
# --------------------------------------------------------------------------------------------


def apply_fills(qty, entry, dq, price):
    """Execute signed fills ``dq`` (buys positive) at ``price``; venue-style bookkeeping.

    Reducing a position realises ``c (P - e)`` on the closed part ``c`` (signed as the position
    was) and keeps the entry price; adding to it averages the entry price; a flip closes the
    old position and opens the rest at ``P``. In every case the account's cash-equivalent
    ``W - q e`` changes by exactly ``-dq P``, which is what keeps money conserved.

    Args:
        qty, entry: (k, A) positions before the fills.
        dq: (k, A) signed fill quantities.
        price: (A,) or (k, A) fill prices.

    Returns:
        ``(qty, entry, realized, closed)``: new positions and entry prices, the realised PnL per
        position, and the closed quantity per position, signed as the position was.
    """
    qty = np.asarray(qty, dtype=float)
    entry = np.asarray(entry, dtype=float)
    dq = np.asarray(dq, dtype=float)
    price = np.asarray(price, dtype=float)  # (A,) broadcasts against (k, A)
    abs_q, abs_dq = np.abs(qty), np.abs(dq)
    new_qty = qty + dq
    opposite = (qty * dq) < 0
    closed = np.where(opposite, np.sign(qty) * np.minimum(abs_dq, abs_q), 0.0)
    realized = closed * (price - entry)
    flipped = opposite & (abs_dq > abs_q)
    adding = ~opposite & (dq != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        averaged = (qty * entry + dq * price) / new_qty
    new_entry = np.where(adding, averaged, entry)
    if flipped.any():  # (each np.where is a pass over k x A entries: only when needed)
        new_entry = np.where(flipped, price, new_entry)
    # A position closed to exactly zero keeps no entry price; tiny float residues count as closed.
    flat = np.abs(new_qty) <= 1e-12 * np.maximum(abs_q, abs_dq)
    if flat.any():
        new_qty = np.where(flat, 0.0, new_qty)
        new_entry = np.where(flat, 0.0, new_entry)
    return new_qty, new_entry, realized, closed


# --------------------------------------------------------------------------------------------
# The book
# --------------------------------------------------------------------------------------------


def _cross_equity(w, q, e, iso, mark):
    """(k,) wallet plus the unrealised PnL of the cross positions, from gathered rows."""
    pnl = q * (mark - e)
    return w + row_sum(np.where(iso, 0.0, pnl) if iso.any() else pnl)


def _cross_maintenance(q, iso, mark, tiers):
    """(k,) maintenance of the cross positions, from gathered rows."""
    return row_sum(np.where(iso, 0.0, maintenance_margin(np.abs(q) * mark, tiers)))


def _isolated_equity(m, q, e, iso, mark):
    """(k, A) margin plus unrealised PnL of each isolated position (0 for cross ones)."""
    return np.where(iso, m + q * (mark - e), 0.0)


def _sorted_unique(rows: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``rows`` (row indices below ``n``), like ``np.unique``.

    ``np.unique`` hashes (numpy >= 2.3) and then sorts: 23 ms for 100,000 rows. Above ``n / 64``
    rows a boolean mask over the book is cheaper (one pass over ``n`` bytes, 0.3 ms at
    ``n = 10^6``); below, a sort and a comparison of neighbours.
    """
    if rows.size > n >> 6:
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        return np.flatnonzero(mask)
    rows = np.sort(rows)
    return rows.take(run_starts(rows))


class _ChangeLog:
    """Rows reported changed since a reader last asked (see AccountBook.watch)."""

    __slots__ = ("everything", "last", "pending")

    def __init__(self):
        self.pending: list[np.ndarray] = []
        self.last = None  # the rows object noted last, to skip it when noted again at once
        self.everything = False


class AccountBook:
    """Collateral and positions of every trader, one row per trader, one column per asset.

    Attributes:
        ids: (n,) trader ids, as in the population file (``int64`` or ``str``), or 0..n-1;
            only outputs read them (:mod:`model.ids`), the engine works on rows.
        wallet: (n,) cross wallet balance ``W``.
        qty: (n, A) signed position quantities ``q``.
        entry: (n, A) entry prices ``e`` (0 where flat).
        margin: (n, A) isolated position margin ``m`` (0 for cross positions).
        isolated: (n, A) whether each position is isolated.
        tiers: maintenance tiers per asset.
        max_leverage: (A,) initial-margin cap per asset.
        collateral: which assets are collateral and their haircuts
            (:class:`model.collateral.CollateralAssets`), or None (no collateral asset).
        holdings: (n, C) units of each collateral asset held (``C = 0`` without them).
        any_isolated: whether any position is isolated (it stays so once it is).

    Read the arrays freely; write them only through the methods (:meth:`fill`,
    :meth:`charge`, :meth:`credit`, :meth:`deposit`, :meth:`move_to_margin`,
    :meth:`set_isolated`, :meth:`release_closed_isolated`, :meth:`sell_collateral`), which
    record what changed.
    """

    def __init__(
        self,
        ids,
        wallet,
        qty,
        entry,
        tiers: TierTable,
        *,
        isolated=None,
        margin=None,
        max_leverage=None,
        collateral: CollateralAssets | None = None,
        holdings=None,
    ):
        self.ids = as_ids(ids)
        self.wallet = np.asarray(wallet, dtype=float).copy()
        self.qty = np.asarray(qty, dtype=float).copy()
        self.entry = np.asarray(entry, dtype=float).copy()
        n, a = self.qty.shape
        self.isolated = (
            np.zeros((n, a), dtype=bool)
            if isolated is None
            else np.asarray(isolated, dtype=bool).copy()
        )
        self.margin = np.zeros((n, a)) if margin is None else np.asarray(margin, float).copy()
        self.tiers = tiers
        self.max_leverage = (
            np.full(a, np.inf) if max_leverage is None else np.asarray(max_leverage, dtype=float)
        )
        self.collateral = collateral
        c = 0 if collateral is None else collateral.size
        self.holdings = (
            np.zeros((n, c)) if holdings is None else np.asarray(holdings, dtype=float).copy()
        )
        if self.holdings.shape != (n, c):
            raise ValueError(f"holdings: expected shape {(n, c)}, got {self.holdings.shape}")
        # Whether any position is isolated (a flag that only set_isolated() raises: an
        # isolated position stays isolated), so that books without any skip that work.
        self.any_isolated = bool(self.isolated.any())
        # Rows whose state changed, one log per reader (see watch() and take_changed()).
        self._logs: dict[str, _ChangeLog] = {}
        self._totals: tuple[np.ndarray, float] | None = None  # see aggregate_equity()
        # Rows gathered since the last write, and their arrays' rows (see read()).
        self._gathers = SharedGathers(self)

    # ---- shape --------------------------------------------------------------------------
    @property
    def n_traders(self) -> int:
        return self.qty.shape[0]

    @property
    def n_assets(self) -> int:
        return self.qty.shape[1]

    def read(self, rows, *names) -> list[np.ndarray]:
        """The rows of the named arrays (``"wallet"``, ``"qty"``, ...), read only: one list
        entry per name (:func:`take_rows`; with ``rows`` None the book's own arrays, to read
        and never to write).

        Reads of the same rows share their gathers (:mod:`model.gathers`): a trading rule's
        equity, the batch's margin cap and the fill read the same rows of the same arrays,
        and so do the checks of one block of candidates. Every write method ends with
        :meth:`_note_changed`, which drops them or, after a write of a few rows, notes those
        to be re-read into them; write methods read their own rows before their first write.
        Small sets of rows are gathered afresh (comparing the rows would cost as much).
        """
        if rows is None or not isinstance(rows, np.ndarray) or rows.size < GATHER_SHARED:
            return [take_rows(getattr(self, name), rows) for name in names]
        return self._gathers.read(rows, names)

    def holds_gathers(self, rows) -> bool:
        """Whether :meth:`read` of ``rows`` is served by gathers already made (the rows a large
        fill wrote, or read last): reading them then costs no pass over the book."""
        return any(g.holds(rows) for g in self._gathers.held)

    def narrow(self, rows, keep) -> None:
        """``rows[keep]`` will be read next: when ``rows`` were the rows read last, their
        gathers narrowed by the mask ``keep`` (contiguous, so cheaply) serve the subset
        (:meth:`read`), instead of new gathers from the whole book; a large fill of the subset
        then updates the gathers of ``rows`` too (:mod:`model.gathers`)."""
        at = np.flatnonzero(keep)
        if at.size >= GATHER_SHARED:
            self._gathers.narrow(rows, at)

    def has_position(self, rows=None) -> np.ndarray:
        """(k,) whether each account holds an open position."""
        (q,) = self.read(rows, "qty")
        return row_any(q != 0)

    # ---- marking ------------------------------------------------------------------------
    def notional(self, mark, rows=None) -> np.ndarray:
        """(k, A) position notional ``|q| M``."""
        (q,) = self.read(rows, "qty")
        return np.abs(q) * mark

    def upnl(self, mark, rows=None) -> np.ndarray:
        """(k, A) unrealised PnL ``q (M - e)``; with fewer than 8 assets one asset column at a
        time, to the same bits (numpy broadcasting an (A,) mark over rows of a few assets
        loops over A entries at a time: 1.9 against 1.2 ms for 150,000 x 2)."""
        q, e = self.read(rows, "qty", "entry")
        mark = np.asarray(mark, dtype=float)
        if q.ndim != 2 or mark.shape != q.shape[1:] or q.shape[1] >= 8:
            return q * (mark - e)
        out = np.empty(q.shape)
        for a in range(q.shape[1]):  # loop over assets, not traders
            np.multiply(q[:, a], mark[a] - e[:, a], out=out[:, a])
        return out

    def position_maintenance(self, mark, rows=None) -> np.ndarray:
        """(k, A) maintenance margin of each position."""
        return maintenance_margin(self.notional(mark, rows), self.tiers)

    def cross_equity(self, mark, rows=None) -> np.ndarray:
        """(k,) wallet plus unrealised PnL of the cross positions (plus the haircut value of the
        collateral holdings, when there are collateral assets)."""
        w, q, e, iso = self.read(rows, "wallet", "qty", "entry", "isolated")
        if self.compiled():  # the same arithmetic, one loop (model.kernels)
            cash = np.empty(q.shape[0])
            kernels.equities(w, _NO_MARGINS, q, e, iso, np.asarray(mark, dtype=float), True, cash)
        else:
            cash = _cross_equity(w, q, e, iso, mark)
        return self._plus_collateral(cash, mark, rows)

    def cross_maintenance(self, mark, rows=None) -> np.ndarray:
        """(k,) maintenance required of the cross positions."""
        q, iso = self.read(rows, "qty", "isolated")
        return _cross_maintenance(q, iso, mark, self.tiers)

    def isolated_equity(self, mark, rows=None) -> np.ndarray:
        """(k, A) margin plus unrealised PnL of each isolated position (0 for cross ones)."""
        m, q, e, iso = self.read(rows, "margin", "qty", "entry", "isolated")
        return _isolated_equity(m, q, e, iso, mark)

    def equity(self, mark, rows=None) -> np.ndarray:
        """(k,) everything the trader owns: wallet, isolated margins, unrealised PnL (and the
        collateral holdings at full market value)."""
        w, m, q, e = self.read(rows, "wallet", "margin", "qty", "entry")
        if self.compiled():  # the same arithmetic, one loop (model.kernels)
            eq = np.empty(q.shape[0])
            kernels.equities(w, m, q, e, _NO_FLAGS, np.asarray(mark, dtype=float), False, eq)
        else:
            eq = w + row_sum(m) + row_sum(q * (mark - e))
        if self.collateral is not None:
            eq = eq + self.collateral.market_value(take_rows(self.holdings, rows), mark)
        return eq

    def total_equity(self, mark) -> float:
        """Sum of every trader's equity."""
        total = self.wallet.sum() + self.margin.sum() + (self.qty * (mark - self.entry)).sum()
        if self.collateral is not None:
            total += self.collateral.market_value(self.holdings, mark).sum()
        return float(total)

    def _plus_collateral(self, cash, mark, rows) -> np.ndarray:
        """(k,) ``cash`` plus the haircut value of the rows' collateral holdings: what backs the
        cross positions besides their PnL (``cash`` itself without collateral assets)."""
        held = self.collateral_margin_value(mark, rows)
        return cash if held is None else cash + held

    def collateral_margin_value(self, mark, rows=None) -> np.ndarray | None:
        """(k,) haircut value of each account's collateral holdings; None without collateral
        assets."""
        if self.collateral is None:
            return None
        return self.collateral.margin_value(take_rows(self.holdings, rows), mark)

    def aggregate_equity(self, mark) -> float:
        """Sum of every trader's equity, from aggregates: ``Q . M + K``.

        ``Q`` (A,) is the traders' net quantity per asset (their summed holdings, for a collateral
        asset) and ``K`` their summed cash-equivalent ``W + m - q e``. A fill changes them by ``sum dq`` and ``-sum dq P`` (see
        :func:`apply_fills`), so they are updated in O(A) per batch of fills; cash moved by
        :meth:`charge` and :meth:`credit` updates ``K`` by its sum, and a write to every row
        drops them, to be recomputed in full. A step in which nothing but prices moved costs
        O(A) instead of a pass over the book. Equal to :meth:`total_equity` up to rounding; :meth:`total_equity` stays the
        independent full sum used to check conservation.
        """
        if self._totals is None:
            cash = (
                self.wallet.sum() + self.margin.sum() - np.einsum("ij,ij->", self.qty, self.entry)
            )
            net = column_sum(self.qty)
            if self.collateral is not None:
                net[self.collateral.cols] += column_sum(self.holdings)
            self._totals = (net, float(cash))
        net_qty, cash = self._totals
        return float(net_qty @ np.asarray(mark, dtype=float) + cash)

    def leverage(self, mark, rows=None) -> np.ndarray:
        """(k,) effective leverage: gross notional over equity (inf when equity <= 0)."""
        gross = row_sum(self.notional(mark, rows))
        eq = self.equity(mark, rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                eq > 0, gross / np.where(eq > 0, eq, 1.0), np.where(gross > 0, np.inf, 0.0)
            )

    def margin_ratio(self, mark, rows=None) -> np.ndarray:
        """(k,) cross maintenance over cross equity, as venues show it; >= 1 means liquidatable.

        Accounts with no cross position have ratio 0; a non-positive equity gives inf.
        """
        mm = self.cross_maintenance(mark, rows)
        eq = self.cross_equity(mark, rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(eq > 0, mm / np.where(eq > 0, eq, 1.0), np.inf)
        return np.where(mm > 0, ratio, 0.0)

    # ---- margin checks ------------------------------------------------------------------
    def cross_liquidatable(self, mark, rows=None) -> np.ndarray:
        """(k,) cross equity below cross maintenance (accounts with a cross position only)."""
        w, q, e, iso = self.read(rows, "wallet", "qty", "entry", "isolated")
        has_cross = row_any((q != 0) & ~iso)
        equity = self._plus_collateral(_cross_equity(w, q, e, iso, mark), mark, rows)
        return has_cross & (equity < _cross_maintenance(q, iso, mark, self.tiers))

    def isolated_liquidatable(self, mark, rows=None) -> np.ndarray:
        """(k, A) isolated positions whose equity is below their maintenance."""
        m, q, e, iso = self.read(rows, "margin", "qty", "entry", "isolated")
        open_iso = iso & (q != 0)
        equity = _isolated_equity(m, q, e, iso, mark)
        return open_iso & (equity < maintenance_margin(np.abs(q) * mark, self.tiers))

    # ---- liquidation and bankruptcy prices ----------------------------------------------
    def liquidation_price(self, mark, rows=None) -> np.ndarray:
        """(k, A) the mark of each asset at which its position would be liquidated.

        Each position is solved with every other price held at ``mark`` (the venues' one-way
        formula ``LP = (W - MM_other + uPnL_other + cum - q e) / (|q| r - q)``, with the tier
        that contains the solution). Cross positions use the account's wallet and other cross
        positions (and its collateral holdings at their haircut value at ``mark``); isolated
        ones their own margin. NaN where flat or where no positive price liquidates the
        position.
        """
        w, m, q, e, iso = self.read(rows, "wallet", "margin", "qty", "entry", "isolated")
        upnl = q * (mark - e)
        mm = maintenance_margin(np.abs(q) * mark, self.tiers)
        cross_upnl = np.where(iso, 0.0, upnl)
        cross_mm = np.where(iso, 0.0, mm)
        w = self._plus_collateral(w, mark, rows)[:, None]  # holdings held at ``mark``
        # Budget available to the position: what backs it apart from its own PnL and margin.
        budget = np.where(
            iso,
            m,
            w
            + cross_upnl.sum(axis=1, keepdims=True)
            - cross_upnl
            - (cross_mm.sum(axis=1, keepdims=True) - cross_mm),
        )
        absq = np.abs(q)
        result = np.full(q.shape, np.nan)
        lower = np.concatenate(
            [np.zeros((self.n_assets, 1)), self.tiers.caps[:, :-1]], axis=1
        )  # (A, T) lower notional bound of each tier
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in range(self.tiers.caps.shape[1]):
                rate = self.tiers.rates[:, t]
                cum = self.tiers.cums[:, t]
                denom = absq * rate - q
                p = (budget + cum - q * e) / denom
                notional = absq * p
                inside = (p > 0) & (notional >= lower[:, t]) & (notional <= self.tiers.caps[:, t])
                inside &= np.isnan(result) & (q != 0) & np.isfinite(p)
                result = np.where(inside, p, result)
        return result

    def bankruptcy_price(self, mark, rows=None) -> np.ndarray:
        """(k, A) the mark at which each position's backing equity reaches zero (others fixed).

        Isolated: ``e - m / q``; cross: the price at which the cross equity is zero (collateral
        holdings at their haircut value at ``mark``). NaN when flat or when the price would not
        be positive.
        """
        w, m, q, e, iso = self.read(rows, "wallet", "margin", "qty", "entry", "isolated")
        cross_upnl = np.where(iso, 0.0, q * (mark - e))
        w = self._plus_collateral(w, mark, rows)[:, None]
        backing = np.where(
            iso,
            m,
            w + cross_upnl.sum(axis=1, keepdims=True) - cross_upnl,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            p = e - backing / q
        return np.where((q != 0) & (p > 0), p, np.nan)

    # ---- state changes ------------------------------------------------------------------
    # Every write to the arrays goes through the methods below, and each reports the rows it
    # wrote: :class:`model.screen.MarginScreen` skips accounts whose margin bound says they are
    # far from liquidation, and that bound is only valid for the state it was computed from.
    # Each also keeps the equity aggregates (see aggregate_equity()) current.

    def charge(self, rows, *, wallet=None, margin=None) -> None:
        """Take cash from accounts: a fee, a funding payment, a socialised loss.

        Args:
            rows: the accounts (index array, or None for every account).
            wallet: (k,) amount taken from each account's wallet.
            margin: (k, A) amount taken from each isolated position's margin.
            Negative amounts are paid to the account.
        """
        cash = 0.0
        if wallet is not None:
            wallet = np.asarray(wallet, dtype=float)
            _update_rows(self.wallet, rows, np.subtract, wallet)
            cash -= float(wallet.sum())
        if margin is not None:
            margin = np.asarray(margin, dtype=float)
            _update_rows(self.margin, rows, np.subtract, margin)
            cash -= float(margin.sum())
        self._cash_changed(rows, cash)

    def credit(self, rows, *, wallet=None, margin=None) -> None:
        """Pay cash to accounts: a negative balance written off as bad debt, say.

        Args:
            rows: the accounts (index array, or None for every account).
            wallet: (k,) amount added to each account's wallet.
            margin: (k, A) amount added to each isolated position's margin.
        """
        cash = 0.0
        if wallet is not None:
            wallet = np.asarray(wallet, dtype=float)
            _update_rows(self.wallet, rows, np.add, wallet)
            cash += float(wallet.sum())
        if margin is not None:
            margin = np.asarray(margin, dtype=float)
            _update_rows(self.margin, rows, np.add, margin)
            cash += float(margin.sum())
        self._cash_changed(rows, cash)

    def deposit(self, rows, amount) -> None:
        """Money from outside the venue into the wallets of ``rows`` ((k,) amounts)."""
        self.credit(rows, wallet=amount)

    def move_to_margin(self, rows, amount) -> None:
        """Move ``amount`` (k, A) from each account's wallet into its isolated positions'
        margins (negative: from a margin back to the wallet). Equity does not change."""
        amount = np.asarray(amount, dtype=float)
        _update_rows(self.margin, rows, np.add, amount)
        _update_rows(self.wallet, rows, np.subtract, row_sum(amount))
        self._note_changed(rows)  # money moved inside each account: totals unchanged

    def set_isolated(self, rows, positions) -> None:
        """Make the positions ``positions`` ((k, A) mask) of ``rows`` isolated (an isolated
        position stays isolated)."""
        positions = np.asarray(positions, dtype=bool)
        _update_rows(self.isolated, rows, np.logical_or, positions)
        self.any_isolated = self.any_isolated or bool(positions.any())
        self._note_changed(rows)

    def _cash_changed(self, rows, cash: float) -> None:
        """After wallets and margins of ``rows`` moved by ``cash`` in all (no quantity or entry
        changed): the aggregates (:meth:`_cash_moved`) and the change logs."""
        self._cash_moved(rows, cash)
        self._note_changed(rows)

    def _cash_moved(self, rows, cash: float) -> None:
        """Update the aggregates by ``cash`` moved into the wallets and margins of ``rows``,
        or drop them when every row was written (the write was a pass over the book already:
        the next use recomputes them exactly)."""
        if rows is None:
            self._totals = None
        elif self._totals is not None:
            net_qty, total = self._totals
            self._totals = (net_qty, total + cash)

    def watch(self, name: str) -> None:
        """Start a change log called ``name``: :meth:`take_changed` then gives the rows
        reported since its last call (the margin screen and the finiteness check each keep
        one)."""
        self._logs.setdefault(name, _ChangeLog())

    def _note_changed(self, rows, *, gathers: bool = True, seen_by: str | None = None) -> None:
        """Add changed rows to every change log (without dropping the aggregates) but
        ``seen_by``'s (its reader saw them written); tell the gathers shared between reads
        (:meth:`read`) unless ``gathers`` is False (the writer updated them itself)."""
        if gathers and self._gathers.held:
            self._gathers.written(rows)
        if not self._logs:
            return
        if rows is None or (isinstance(rows, slice) and rows == slice(None)):
            for log in self._logs.values():
                log.everything = True
            return
        idx = None
        for name, log in self._logs.items():
            if name == seen_by:
                continue
            if log.pending and rows is log.last:
                continue  # fill then release_closed_isolated on the same rows: noted once
            if idx is None:
                idx = np.asarray(rows)
                if idx.dtype == bool:
                    idx = np.flatnonzero(idx)
                elif idx.dtype.kind not in "iu":
                    idx = np.arange(self.n_traders)[rows]
                idx = (idx if idx.ndim == 1 else idx.ravel()).astype(np.int64, copy=False)
            log.last = rows
            log.pending.append(idx)

    def take_changed(self, name: str = "screen") -> np.ndarray | None:
        """Rows reported to the change log ``name`` since the last call (sorted, unique), and
        forget them; None when the whole book changed."""
        pending = self.take_changed_writes(name)
        if pending is None:
            return None
        if not pending:
            return np.zeros(0, dtype=np.int64)
        rows = pending[0] if len(pending) == 1 else np.concatenate(pending)
        if rows.size < 2 or (rows[1:] > rows[:-1]).all():  # already sorted and unique
            return rows
        return _sorted_unique(rows, self.n_traders)

    def take_changed_writes(self, name: str) -> list[np.ndarray] | None:
        """:meth:`take_changed` as the rows of each write (as written, in the order written;
        a row may be in several): for a reader that does not need them merged. None when the
        whole book changed."""
        log = self._logs.get(name)
        if log is None:
            raise KeyError(f"no change log {name!r}: call watch({name!r}) first")
        everything, pending = log.everything, log.pending
        log.pending, log.last, log.everything = [], None, False
        return None if everything else pending

    def compiled(self) -> bool:
        """Whether the compiled kernels (:mod:`model.kernels`) do this book's row arithmetic,
        for batches of any size: a book large enough (:func:`model.kernels.use`), numba
        installed, and 1 to 7 assets (beyond, numpy sums a row in another order than the
        kernels)."""
        return 0 < self.n_assets < 8 and kernels.use(self.n_traders)

    def liquidatable(self, mark, rows) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`cross_liquidatable` and :meth:`isolated_liquidatable` of ``rows`` together:
        ``(cross (k,), iso (k, A))``."""
        if not self.compiled():
            return self.cross_liquidatable(mark, rows), self.isolated_liquidatable(mark, rows)
        w, q, e, m, flags = self.read(rows, "wallet", "qty", "entry", "margin", "isolated")
        cross = np.empty(q.shape[0], dtype=bool)
        iso = np.empty(q.shape, dtype=bool)
        held = self.collateral_margin_value(mark, rows)
        t = self.tiers
        kernels.liquidatable(
            w, q, e, m, flags, np.asarray(mark, dtype=float), t.caps, t.rates, t.cums,
            _NO_VALUES if held is None else held, cross, iso,
        )  # fmt: skip
        return cross, iso

    @property
    def balance_names(self) -> tuple[str, ...]:
        """The arrays of the traders' balances: wallets, quantities, entries, margins, and
        the collateral holdings when there are collateral assets (what the finiteness check
        sums, :meth:`sum_of_balances`)."""
        names = ("wallet", "qty", "entry", "margin")
        return names if self.collateral is None else (*names, "holdings")

    def sum_of_balances(self, rows) -> float:
        """The sum of the wallets, quantities, entries and margins (and collateral holdings)
        of ``rows``, each array's rows gathered and summed as numpy sums them, then added in
        that order: finite only if every value is (:meth:`model.ContagionModel.check_finite`).
        A compiled book without collateral assets takes one compiled call
        (:func:`model.kernels.sums_of_rows`)."""
        if self.collateral is None and self.compiled():
            out = np.empty(4)
            kernels.sums_of_rows(rows, self.wallet, self.qty, self.entry, self.margin, out)
            return sum(out.tolist())
        return sum(float(take_rows(getattr(self, a), rows).sum()) for a in self.balance_names)

    def cross_liquidatable_rows(self, mark, rows) -> np.ndarray:
        """The ``rows`` (sorted) whose cross book is below maintenance at ``mark``: the rows of
        :meth:`liquidatable` of a compiled book (:meth:`compiled`) with no isolated position
        and no collateral asset, found in one compiled call that reads the book's rows itself
        (:func:`model.kernels.cross_liquidatable_rows`)."""
        out = np.empty(len(rows), dtype=np.int64)
        t = self.tiers
        found = kernels.cross_liquidatable_rows(
            rows, self.wallet, self.qty, self.entry, self.isolated, np.asarray(mark, dtype=float),
            t.caps, t.rates, t.cums, out,
        )  # fmt: skip
        return out[:found]

    def fill(self, rows, dq, price) -> tuple[np.ndarray, np.ndarray]:
        """Execute fills ``dq`` (k, A) for ``rows`` (distinct) at ``price``; realised PnL goes
        to the wallet (cross positions) or to the position margin (isolated).

        The rows written stay as the rows' gathers (:meth:`read`): the margin screen and the
        next step's trading rules read the same rows of a large batch again.

        Returns:
            ``(realized, closed)`` per position, as :func:`apply_fills` does.
        """
        q0, e0, iso = self.read(rows, "qty", "entry", "isolated")
        if self.compiled():  # the same arithmetic, one loop (model.kernels)
            dq = np.asarray(dq, dtype=float)
            q, e, realized, closed, traded = (np.empty(dq.shape) for _ in range(5))
            cash, net = np.empty(dq.shape[0]), np.empty(dq.shape[1])
            at = np.asarray(price, dtype=float).reshape(-1, dq.shape[1])  # (1, A) or (k, A)
            kernels.apply_fills(q0, e0, iso, dq, at, q, e, realized, closed, cash, traded, net)
        else:
            q, e, realized, closed = apply_fills(q0, e0, dq, price)
            cash = traded = net = None
        if cash is None:  # the cross positions' realised PnL (all of it when none is isolated)
            cash = row_sum(np.where(iso, 0.0, realized) if iso.any() else realized)
        (w0,) = self.read(rows, "wallet")
        written = {"qty": q, "entry": e, "wallet": w0 + cash}
        if iso.any():
            (m0,) = self.read(rows, "margin")
            written["margin"] = m0 + np.where(iso, realized, 0.0)
        # all cross: the margins are not written (scattered writes cost more than arithmetic)
        for name, values in written.items():
            put_rows(getattr(self, name), rows, values)
        if self._totals is not None:
            dq = np.asarray(dq, dtype=float)
            if traded is None:
                traded = dq * np.asarray(price, dtype=float)
            self._filled_totals(dq, traded, net)
        shared = isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.size >= GATHER_SHARED
        if shared:  # what was written stays as the rows' gathers
            self._gathers.filled(rows, written)
        self._note_changed(rows, gathers=not shared)
        return realized, closed

    def close_cross_books(self, rows, fee_rate, walk) -> RoundSums:
        """A full liquidation round of the cross books of ``rows`` (distinct; no isolated
        position, no collateral asset) as one write: every position read, their net flow
        walked through the market (``walk``: :meth:`agents.market.Market.walk_state`), every
        position sold at the price after it, the fee of ``fee_rate`` times the closed notional
        from what equity is left, negative wallets written off. The reads, the walk, the
        arithmetic and the writes, and the round's sums, are one compiled call
        (:func:`model.kernels.walk_and_close`); a compiled book only (:meth:`compiled`).
        """
        k, n_assets = rows.size, self.n_assets
        qty = np.empty((k, n_assets))
        flow, price_before, price, net = (np.empty(n_assets) for _ in range(4))
        new_wallet, paid, debt, row_notional = (np.empty(k) for _ in range(4))
        notional, fee, bad, traded = (np.empty((k, n_assets)) for _ in range(4))
        sums = np.empty(6)
        any_debt = kernels.walk_and_close(
            rows, self.wallet, self.qty, self.entry, fee_rate, *walk, qty, flow, price_before,
            price, new_wallet, notional, fee, bad, traded, paid, debt, net, row_notional, sums,
        )  # fmt: skip
        traded_sum, paid_sum, debt_sum, fees, bad_debt, liquidated = sums.tolist()
        self.book_close(rows, traded_sum, paid_sum, debt_sum, any_debt, net)
        return RoundSums(
            qty, price_before, price, notional, fee, bad, row_notional, fees, bad_debt, liquidated
        )

    def book_close(self, rows, traded, paid, debt, any_debt, net) -> None:
        """The bookkeeping of a round of whole closes a compiled call wrote: the aggregates
        moved by its sums (the fills' cash flow ``traded``, the fees ``paid``, the ``debt``
        written off when ``any_debt``; ``net`` (A,) the fill's column sums), as
        :meth:`_filled_totals` and :meth:`_cash_moved` move them, and the rows noted as one
        write."""
        self.book_closes(rows, [(traded, paid, debt, any_debt, net)])

    def book_closes(self, rows, closes, *, seen: int = 0, seen_by: str | None = None) -> None:
        """:meth:`book_close` of rounds a compiled call wrote one after the other: the
        aggregates moved by each round's sums in turn (``closes``: its ``traded``, ``paid``,
        ``debt``, ``any_debt`` and ``net``), and the rounds' rows (``rows``, round after
        round) noted as one write, the first ``seen`` of them to every change log but
        ``seen_by``'s (its reader saw them written), the others to every log."""
        if self._totals is not None:
            net_qty, total = self._totals
            for traded, paid, debt, any_debt, net in closes:
                total = (total - traded) + (0.0 + -paid)  # the fills, the fees taken
                if any_debt:  # the debt written off
                    total = total + (0.0 + debt)
                net_qty = net_qty + net
            self._totals = (net_qty, total)
        if seen:
            self._note_changed(rows[:seen], seen_by=seen_by)
        if seen < len(rows):
            self._note_changed(rows[seen:])

    def _filled_totals(self, dq, traded, net=None) -> None:
        """After a fill of ``dq`` (k, A) whose cash flow is ``traded`` (``dq P``): the traders'
        net quantity moves by its column sums (``net`` when a kernel summed them while it read
        ``dq``), their cash-equivalent ``W + m - q e`` by ``-sum dq P``."""
        if self._totals is None:
            return
        net_qty, total = self._totals
        if net is None or not adds_rows_in_order(dq):
            net = column_sum(dq)
        self._totals = (net_qty + net, total - float(traded.sum()))

    def sell_collateral(self, rows, sold, price) -> None:
        """Sell ``sold`` (k, C) units of the collateral holdings of ``rows`` at ``price`` (C,);
        the proceeds go to the wallet (the market agent takes the other side)."""
        sold = np.asarray(sold, dtype=float)
        price = np.asarray(price, dtype=float)
        proceeds = sold * price
        self.holdings[rows] -= sold
        self.wallet[rows] += proceeds.sum(axis=1)
        if self._totals is not None:  # holdings leave the traders' net quantity, cash comes in
            net_qty, cash = self._totals
            net_qty = net_qty.copy()
            net_qty[self.collateral.cols] -= sold.sum(axis=0)
            self._totals = (net_qty, cash + float(proceeds.sum()))
        self._note_changed(rows)

    def release_closed_isolated(self, rows) -> None:
        """Move the margin of closed isolated positions (what is left of it) back to the wallet."""
        iso = take_rows(self.isolated, rows) if self.any_isolated else None
        if iso is None or not iso.any():  # nothing isolated among these rows: nothing moves
            return
        q, m = self.read(rows, "qty", "margin")
        done = iso & (q == 0)
        _update_rows(self.wallet, rows, np.add, row_sum(np.where(done, m, 0.0)))
        put_rows(self.margin, rows, np.where(done, 0.0, m))
        self._note_changed(rows)  # money moved between margin and wallet: totals unchanged
