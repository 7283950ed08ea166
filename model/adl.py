"""Auto-deleveraging: who pays the bad debt the insurance fund cannot.

When a liquidated unit ends with negative equity and the fund is empty, venues close positions
on the other side of the bankrupt one, at the bankrupt position's bankruptcy price, with no
market impact (Binance, Bybit, BitMEX, Hyperliquid; ``reference/venues.md``). The queue is
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

import numpy as np

from model.liquidation import KIND_ADL

__all__ = ["adl_scores", "allocate_in_order", "auto_deleverage", "socialize"]


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


def auto_deleverage(engine, step, rnd, shortfall_by_asset, price, bankrupt_qty=None) -> np.ndarray:
    """Cover ``shortfall_by_asset`` by ADL, then by socialising; return what stays unfunded.

    Args:
        engine: the :class:`model.liquidation.LiquidationEngine` (book, market, fills, totals).
        step, rnd: when (for the fill records).
        shortfall_by_asset: (A,) bad debt the fund could not pay, per asset.
        price: (A,) the round's execution price.
        bankrupt_qty: (A,) closed quantity of the bankrupt positions, signed as they were; when
            unknown or zero, the side is taken from the step's forced flow.

    Returns:
        (A,) the part of the shortfall nobody could pay.
    """
    book = engine.book
    market = engine.market
    price = np.asarray(price, dtype=float)
    left = np.array(shortfall_by_asset, dtype=float)
    n_assets = book.n_assets
    bankrupt_qty = np.zeros(n_assets) if bankrupt_qty is None else np.asarray(bankrupt_qty)
    for a in range(n_assets):  # a loop over assets, not traders
        need = left[a]
        if need <= 0:
            continue
        side = np.sign(bankrupt_qty[a]) or np.sign(market.forced_flow[a])
        if side == 0:
            continue
        rate = need / abs(bankrupt_qty[a]) if bankrupt_qty[a] != 0 else np.inf
        rows = np.flatnonzero(book.qty[:, a] * side < 0)
        if rows.size == 0:
            continue
        q = book.qty[rows, a]
        e = book.entry[rows, a]
        upnl = q * (price[a] - e)
        iso = book.isolated[rows, a]
        unit_equity = np.where(iso, book.margin[rows, a] + upnl, book.cross_equity(price, rows))
        ok = (upnl > 0) & (unit_equity > 0)
        if not ok.any():
            continue
        rows, q, e, upnl, unit_equity = rows[ok], q[ok], e[ok], upnl[ok], unit_equity[ok]
        capacity = np.minimum(np.minimum(np.abs(q) * rate, upnl), unit_equity)
        score = adl_scores(q, e, price[a], unit_equity)
        order = np.lexsort((rows, -score))  # highest score first; ties by row
        take = allocate_in_order(capacity[order], need)
        hit = take > 0
        if not hit.any():
            continue
        sel = order[hit]
        giveback = take[hit]
        closed = (giveback / capacity[sel]) * q[sel]  # signed as the position was
        fill_price = price[a] - giveback / closed
        r = rows[sel]
        dq = np.zeros((r.size, n_assets))
        dq[:, a] = -closed
        prices = np.broadcast_to(price, dq.shape).copy()
        prices[:, a] = fill_price
        book.fill(r, dq, prices)
        book.release_closed_isolated(r)
        market.take_other_side(dq.sum(axis=0), price)
        left[a] = max(need - float(giveback.sum()), 0.0)

        notional = np.abs(closed) * fill_price
        engine.fills.append(
            {
                "step": np.full(r.size, step, dtype=np.int64),
                "round": np.full(r.size, rnd, dtype=np.int64),
                "trader_id": book.ids[r],
                "asset": np.full(r.size, a, dtype=np.int64),
                "quantity": closed,
                "price": fill_price,
                "notional": notional,
                "fee": np.zeros(r.size),
                "bad_debt": np.zeros(r.size),
                "kind": np.full(r.size, KIND_ADL, dtype=np.int8),
            }
        )
        engine.totals.adl_notional += float(notional.sum())

    rest = float(left.sum())
    if rest > 0:
        paid = _haircut_profits(book, price, rest)
        engine.socialized_loss += paid
        left *= (rest - paid) / rest
    return left


def _haircut_profits(book, price, loss: float) -> float:
    """Take ``loss`` pro rata from cross positions' paper profits; return what was taken."""
    profit = np.where(book.isolated, 0.0, book.qty * (price - book.entry))
    payers = np.flatnonzero((profit > 0).any(axis=1))
    if payers.size == 0:
        return 0.0
    profit = np.maximum(profit[payers].sum(axis=1), 0.0)
    capacity = np.minimum(profit, book.cross_equity(price, payers))
    share = socialize(capacity, loss)
    book.wallet[payers] -= share
    mark_changed = getattr(book, "mark_changed", None)
    if mark_changed is not None:
        mark_changed(payers)
    return float(share.sum())
