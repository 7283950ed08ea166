"""Auto-deleveraging: who pays the bad debt the insurance fund cannot.

When a liquidated unit ends with negative equity and the fund is empty, venues close positions
on the other side of the bankrupt one, at the bankrupt position's bankruptcy price, with no
market impact (Binance, Bybit, BitMEX, Hyperliquid; docs/reference/venues.md). The queue is
ranked by ``profit % x effective leverage`` (BitMEX, Bybit):

* profit % = ``uPnL / (|q| e)``;
* effective leverage = ``|q| M / (M value - bankruptcy value) = |q| M / unit equity``.

In this engine the bankrupt position has already been closed through the market at the round's
price ``P``, leaving a shortfall ``S`` on ``Q`` units. Its bankruptcy price is
``P_b = P + sign(Q) S / |Q|``: a counterparty closing ``c`` units at ``P_b`` instead of ``P``
gives back ``|c| S / |Q|``, and closing ``|Q|`` units gives back ``S``. Each deleveraged
position gives back at most its unrealised profit and its unit's equity (so ADL never makes a
profitable account insolvent); the queue is walked, the last position partly, until ``S`` is
covered. The market agent takes the other side at ``P`` (no impact), so the givebacks fill
exactly the hole the bad debt left, and money stays conserved.

Whatever the queue cannot cover is socialised as a haircut on paper profits: taken from every
cross position's unrealised profit pro rata (either side; Drift and Mango socialise losses over
open positions), each capped at its profit and its account's cross equity, so nobody pays more
than they have gained. Isolated positions are left alone: their margin moves only with their own
trades. Only a loss larger than all those paper profits stays unfunded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model.accounts import AccountBook

if TYPE_CHECKING:
    from agents.market import Market

__all__ = ["Deleveraging", "adl_scores", "allocate_in_order", "auto_deleverage", "socialize"]


@dataclass
class Deleveraging:
    """What one call of :func:`auto_deleverage` did; the engine records and accounts for it.

    Attributes:
        rows, asset, quantity, price, notional: (k,) the ADL fills: book row, asset index,
            closed quantity (signed as the position was), fill price (the bankruptcy price) and
            closed notional, in the order they were made.
        notional_by_asset: (A,) ADL notional per asset.
        socialized: the loss taken from paper profits once the queues were exhausted.
        unfunded: (A,) the part of the shortfall nobody could pay.
    """

    rows: np.ndarray
    asset: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    notional_by_asset: np.ndarray
    socialized: float
    unfunded: np.ndarray

    @property
    def adl_notional(self) -> float:
        """Notional closed by ADL, every asset together."""
        return float(self.notional_by_asset.sum())


def adl_scores(qty, entry, price, unit_equity) -> np.ndarray:
    """(k,) ADL ranking score ``profit % x effective leverage`` of positions (pure numpy).

    Args:
        qty, entry: (k,) signed quantities and entry prices of one asset's positions.
        price: the asset's price.
        unit_equity: (k,) equity of the unit backing each position (> 0).
    """
    qty = np.asarray(qty, dtype=float)
    absq = np.abs(qty)
    profit_pct = qty * (price - entry) / (absq * entry)
    effective_leverage = absq * price / unit_equity
    return profit_pct * effective_leverage


def allocate_in_order(capacity, need: float) -> np.ndarray:
    """Take ``need`` from ``capacity`` in order: each entry gives all it can until the need is met.

    Returns:
        (k,) amount taken from each entry; it sums to ``min(need, capacity.sum())``.
    """
    capacity = np.asarray(capacity, dtype=float)
    before = np.cumsum(capacity) - capacity
    return np.clip(need - before, 0.0, capacity)


def socialize(capacity, loss: float) -> np.ndarray:
    """Share of ``loss`` each entry pays, pro rata to its (non-negative) capacity, capped at it."""
    capacity = np.maximum(np.asarray(capacity, dtype=float), 0.0)
    total = capacity.sum()
    if total <= 0 or loss <= 0:
        return np.zeros_like(capacity)
    return capacity * (min(loss, total) / total)


def auto_deleverage(
    book: AccountBook, market: Market, shortfall_by_asset, price, bankrupt_qty=None
) -> Deleveraging:
    """Cover ``shortfall_by_asset`` by ADL, then by socialising; report what was done.

    The fills are applied to the book and the market agent here (each asset's queue sees the
    fills of the assets before it); recording them is the caller's.

    Args:
        book: the account book.
        market: the market agent (counterparty of the fills; its forced flow sets the side
            when ``bankrupt_qty`` does not).
        shortfall_by_asset: (A,) bad debt the fund could not pay, per asset.
        price: (A,) the round's execution price.
        bankrupt_qty: (A,) closed quantity of the bankrupt positions, signed as they were; when
            unknown or zero, the side is taken from the step's forced flow.
    """
    price = np.asarray(price, dtype=float)
    left = np.array(shortfall_by_asset, dtype=float)
    n_assets = book.n_assets
    bankrupt_qty = np.zeros(n_assets) if bankrupt_qty is None else np.asarray(bankrupt_qty)
    fills = []
    notional_by_asset = np.zeros(n_assets)
    for a in range(n_assets):  # a loop over assets, not traders
        side = np.sign(bankrupt_qty[a]) or np.sign(market.forced_flow[a])
        if left[a] <= 0 or side == 0:
            continue
        found = _deleverage_asset(book, a, side, left[a], bankrupt_qty[a], price)
        if found is None:
            continue
        rows, closed, fill_price, giveback = found
        dq = np.zeros((rows.size, n_assets))
        dq[:, a] = -closed
        prices = np.broadcast_to(price, dq.shape).copy()
        prices[:, a] = fill_price
        book.fill(rows, dq, prices)
        book.release_closed_isolated(rows)
        market.take_other_side(dq.sum(axis=0), price)
        left[a] = max(left[a] - float(giveback.sum()), 0.0)
        notional = np.abs(closed) * fill_price
        notional_by_asset[a] = float(notional.sum())
        fills.append((rows, np.full(rows.size, a), closed, fill_price, notional))

    socialized = 0.0
    rest = float(left.sum())
    if rest > 0:
        socialized = _haircut_profits(book, price, rest)
        left *= (rest - socialized) / rest
    columns = [np.concatenate(c) for c in zip(*fills, strict=True)] if fills else [np.zeros(0)] * 5
    return Deleveraging(*columns, notional_by_asset, socialized, left)


def _deleverage_asset(book: AccountBook, a: int, side, need: float, bankrupt_q, price):
    """Walk asset ``a``'s ADL queue for ``need``: ``(rows, closed, fill_price, giveback)`` of
    the positions it closes, or None when nobody on the other side can give anything."""
    rate = need / abs(bankrupt_q) if bankrupt_q != 0 else np.inf
    rows = np.flatnonzero(book.qty[:, a] * side < 0)
    if rows.size == 0:
        return None
    q = book.qty[rows, a]
    e = book.entry[rows, a]
    upnl = q * (price[a] - e)
    iso = book.isolated[rows, a]
    unit_equity = np.where(iso, book.margin[rows, a] + upnl, book.cross_equity(price, rows))
    ok = (upnl > 0) & (unit_equity > 0)
    if not ok.any():
        return None
    rows, q, e, upnl, unit_equity = rows[ok], q[ok], e[ok], upnl[ok], unit_equity[ok]
    capacity = np.minimum(np.minimum(np.abs(q) * rate, upnl), unit_equity)
    score = adl_scores(q, e, price[a], unit_equity)
    order = np.lexsort((rows, -score))  # highest score first; ties by row
    take = allocate_in_order(capacity[order], need)
    hit = take > 0
    if not hit.any():
        return None
    sel = order[hit]
    giveback = take[hit]
    closed = (giveback / capacity[sel]) * q[sel]  # signed as the position was
    fill_price = price[a] - giveback / closed
    return rows[sel], closed, fill_price, giveback


def _haircut_profits(book: AccountBook, price, loss: float) -> float:
    """Take ``loss`` pro rata from cross positions' paper profits; return what was taken."""
    profit = np.where(book.isolated, 0.0, book.qty * (price - book.entry))
    payers = np.flatnonzero((profit > 0).any(axis=1))
    if payers.size == 0:
        return 0.0
    profit = np.maximum(profit[payers].sum(axis=1), 0.0)
    capacity = np.minimum(profit, book.cross_equity(price, payers))
    share = socialize(capacity, loss)
    book.charge(payers, wallet=share)
    return float(share.sum())
