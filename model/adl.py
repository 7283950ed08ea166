"""Auto-deleveraging: who pays the bad debt the insurance fund cannot.

When a liquidated unit ends with negative equity and the insurance fund cannot pay, venues close
positions on the other side of the bankrupt one, with no market impact, in an order of their own
(``margin.adl_ranking``), at the bankrupt position's bankruptcy price: BitMEX, Bybit, Binance and
dYdX say so (docs/reference/venues.md §1.2, §3.1, §3.2, §3.4, §3.6). Hyperliquid and OKX publish
a fill at the mark price (§3.3, §3.5); in this engine the bankrupt position has already been
sold into the book, so its debt can only be funded by the bankruptcy-price fill, which stands in
for theirs too.

The bankruptcy price. The bankrupt positions were closed through the market at the round's price
``P``, leaving a shortfall ``S`` (the part of their debt the fund did not pay) on ``Q`` units (the
same part of their closed quantity, signed as they were). Their bankruptcy price, the price at
which closing them would have left exactly zero equity, is

    P_b = P + sign(Q) S / |Q|

(a bankrupt long was sold below its bankruptcy price). Where several bankrupt units of one
asset close in a round, ``P_b`` is their average, weighted by quantity. A counterparty position
``q`` (of sign ``-sign(Q)``) that closes ``c`` units (signed as ``q``) at ``P_b``, while the market
agent takes the other side at ``P``, gives back

    g = c (P - P_b) = |c| S / |Q|

relative to closing at ``P``; closing ``|Q|`` units in all gives back ``S``: the debt is covered.

The cap. Each position's *capacity* is what it can give back:

    default:               cap = min(|q| S / |Q|, E)
    margin.adl_profit_cap: cap = min(|q| S / |Q|, E, uPnL)

with ``E`` the equity at ``P`` of the unit backing it (its account's cross book, or the isolated
position) and ``uPnL = q (P - e)``. By default every fill is at ``P_b``: a position the walk takes
``g`` from closes ``g |Q| / S`` units at ``P_b``, so ADL closes exactly the bankrupt quantity
``|Q|`` when the queue is long enough. A counterparty whose entry lies beyond ``P_b`` (a short
from 95 against a bankruptcy price of 98, the price now 90) gives back 8 a unit, its 5 of profit
and 3 of its margin, as those venues take it. A unit is never taken below zero equity: a fill
that left ``E < 0`` would be new bad debt for a fund that is already empty, and ADL would chase
its own tail. A unit that cannot afford its whole position at ``P_b`` gives all its equity by
closing ``E |Q| / S`` units; the rest of its position is left with zero equity and is
liquidated in the next round, like any account below maintenance.

The profit cap, off by default, was this engine's earlier rule: a position whose capacity is
below ``|q| S / |Q|`` is closed whole at the price that gives back exactly its capacity,
``P - cap / q``: its entry price (it loses its profit and keeps its margin) or its own
bankruptcy price. With it, the 3 a unit of the short above is not taken: it is left to
socialisation or stays unfunded. (When ``Q`` is unknown, a round whose bankrupt longs and shorts
of one asset cancel out, ``P_b`` is undefined and that rule is used too.)

Money. The counterparty's cash-equivalent ``W - q e`` moves by ``-dq P_b`` and the market
agent's by ``+dq P`` (:func:`model.accounts.apply_fills`): together they lose ``sum g``, exactly
the debt the write-off of the bankrupt unit had added to the traders' money. So traders +
insurance fund + market agent + liquidator vault - unfunded bad debt does not change.

Rankings (``margin.adl_ranking``; the queue walks the positions from the highest score down,
ties by book row; every function below is pure and vectorised):

* ``bitmex`` (BitMEX, Bybit; §3.4, §3.2): ``PnL% x L`` if ``PnL% > 0``, ``PnL% / L`` if not,
  ``PnL% = q (P - e) / (|q| e)``, effective leverage ``L = |q| P / E``.
* ``binance`` (§3.1, the "exact formulation" as quoted on Binance's developer forum, *unverified*
  against the FAQ): per unit, ``max(0, uPnL) / max(1, W) x MM / (W + uPnL)`` (0 when
  ``W + uPnL <= 0``), with ``W`` the unit's wallet (cross wallet, or isolated margin), ``uPnL``
  its unrealised PnL and ``MM`` its maintenance. Binance shows the rank as a quantile; the order
  is the same. Losing units score 0 and keep their book order.
* ``hyperliquid`` (§3.5): ``(P / e) x (|q| P / E)`` for longs. The docs print the same index for
  shorts, where ``P / e`` *falls* with profit and would put the worst-losing shorts first, while
  the text says the traders "in profit" are ranked; shorts therefore use ``e / P``, which ranks
  them by profit as the printed index ranks longs (this engine's reading, not stated by the
  docs).
* ``pro_rata``: no queue: every opposite position gives back in proportion to its size, each
  capped at its capacity (what a capped position cannot give is spread over the others).
* ``random`` (dYdX, §3.6): the opposite positions in book order from a random start, wrapping
  round (one draw from the model's random stream per deleveraged asset).

What the queue cannot cover is socialised as a haircut on paper profits: taken from every cross
position's unrealised profit pro rata (either side; Drift and Mango socialise losses over open
positions), each capped at its profit and its account's cross equity, so nobody pays more than
they have gained. Isolated positions are left alone: their margin moves only with their own
trades. Only a loss larger than all those paper profits stays unfunded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model import kernels
from model.accounts import AccountBook, column_sum, row_any, row_sum, take_rows
from model.sorting import stable_argsort

if TYPE_CHECKING:
    from agents.market import Market

__all__ = [
    "RANKINGS",
    "Candidates",
    "Deleveraging",
    "allocate_in_order",
    "auto_deleverage",
    "givebacks",
    "pro_rata",
    "queue_order",
    "score_binance",
    "score_bitmex",
    "score_hyperliquid",
    "socialize",
]

# ``margin.adl_ranking`` choices, with a one-line description each.
RANKINGS = {
    "bitmex": "BitMEX and Bybit: PnL% x effective leverage if in profit, PnL% / leverage if not",
    "binance": "Binance: max(0, uPnL) / wallet x maintenance / equity, per unit (unverified)",
    "hyperliquid": "Hyperliquid: (mark / entry) x (notional / account value), inverted for shorts",
    "pro_rata": "no queue: every opposite position in proportion to its size",
    "random": "dYdX: opposite positions in book order from a random start",
}


@dataclass
class Deleveraging:
    """What one call of :func:`auto_deleverage` did; the engine records and accounts for it.

    Attributes:
        rows, asset, quantity, price, notional: (k,) the ADL fills: book row, asset index,
            closed quantity (signed as the position was), fill price (the bankruptcy price; with
            the profit cap, a capped position's own price: see the module docstring) and closed
            notional, in the order they were made.
        giveback: (k,) what each fill gave back: its loss against closing at the round's price.
        notional_by_asset: (A,) ADL notional per asset.
        socialized: the loss taken from paper profits once the queues were exhausted.
        unfunded: (A,) the part of the shortfall nobody could pay.
    """

    rows: np.ndarray
    asset: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    giveback: np.ndarray
    notional_by_asset: np.ndarray
    socialized: float
    unfunded: np.ndarray

    @property
    def adl_notional(self) -> float:
        """Notional closed by ADL, every asset together."""
        return float(self.notional_by_asset.sum())


@dataclass
class Candidates:
    """The positions on the other side of a bankrupt one, as the rankings read them.

    Attributes:
        rows: (k,) book rows, ascending.
        qty, entry: (k,) signed quantity and entry price of each position.
        unit_equity: (k,) equity of the unit backing each position (> 0).
        unit_wallet, unit_upnl, unit_maintenance: (k,) the unit's wallet (cross wallet or
            isolated margin), unrealised PnL and maintenance (read by the ``binance`` ranking;
            None when not computed).
    """

    rows: np.ndarray
    qty: np.ndarray
    entry: np.ndarray
    unit_equity: np.ndarray
    unit_wallet: np.ndarray | None = None
    unit_upnl: np.ndarray | None = None
    unit_maintenance: np.ndarray | None = None

    def __len__(self) -> int:
        return int(np.asarray(self.rows).size)


# --------------------------------------------------------------------------------------------
# Rankings (pure, vectorised)
# --------------------------------------------------------------------------------------------


def score_bitmex(qty, entry, price, unit_equity) -> np.ndarray:
    """(k,) BitMEX's score: ``PnL% x L`` if ``PnL% > 0``, else ``PnL% / L`` (§3.4).

    Args:
        qty, entry: (k,) signed quantities and entry prices of one asset's positions.
        price: the asset's price (the mark the score is taken at).
        unit_equity: (k,) equity of the unit backing each position (> 0).
    """
    qty = np.asarray(qty, dtype=float)
    entry = np.asarray(entry, dtype=float)
    absq = np.abs(qty)
    pnl_pct = qty * (price - entry) / (absq * entry)
    leverage = absq * price / np.asarray(unit_equity, dtype=float)
    return np.where(pnl_pct > 0, pnl_pct * leverage, pnl_pct / leverage)


def score_binance(unit_wallet, unit_upnl, unit_maintenance) -> np.ndarray:
    """(k,) Binance's "LeveragePnL": ``max(0, uPnL) / max(1, W) x MM / (W + uPnL)`` (§3.1,
    unverified), 0 where ``W + uPnL <= 0``. Per unit: every position of a unit shares it."""
    w = np.asarray(unit_wallet, dtype=float)
    upnl = np.asarray(unit_upnl, dtype=float)
    equity = w + upnl
    pnl_pct = np.maximum(upnl, 0.0) / np.maximum(w, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(equity > 0, np.asarray(unit_maintenance, float) / equity, 0.0)
    return pnl_pct * ratio


def score_hyperliquid(qty, entry, price, unit_equity) -> np.ndarray:
    """(k,) Hyperliquid's index ``(mark / entry) x (notional / account value)`` (§3.5), with
    ``entry / mark`` for shorts so that they too rank by profit (module docstring)."""
    qty = np.asarray(qty, dtype=float)
    entry = np.asarray(entry, dtype=float)
    ratio = np.where(qty > 0, price / entry, entry / price)
    return ratio * np.abs(qty) * price / np.asarray(unit_equity, dtype=float)


def queue_order(ranking: str, cand: Candidates, price: float, rng=None) -> np.ndarray:
    """(k,) indices of ``cand`` in the order the ADL queue walks them.

    ``pro_rata`` has no queue (book order is returned: the order its fills are recorded in);
    ``random`` needs ``rng`` (a numpy Generator: the model's stream).
    """
    k = len(cand)
    if ranking in ("pro_rata", "random"):
        start = int(rng.integers(k)) if ranking == "random" and k else 0
        return np.roll(np.arange(k), -start)
    return stable_argsort(-queue_score(ranking, cand, price), cand.rows)  # highest first


def queue_score(ranking: str, cand: Candidates, price: float) -> np.ndarray:
    """(k,) the score a ranked queue (``bitmex``, ``binance``, ``hyperliquid``) walks
    ``cand`` by: highest first, ties by book row."""
    if ranking == "bitmex":
        score = score_bitmex(cand.qty, cand.entry, price, cand.unit_equity)
    elif ranking == "hyperliquid":
        score = score_hyperliquid(cand.qty, cand.entry, price, cand.unit_equity)
    elif ranking == "binance":
        score = score_binance(cand.unit_wallet, cand.unit_upnl, cand.unit_maintenance)
    else:
        raise ValueError(f"unknown ADL ranking {ranking!r}")
    return score


def _queue_head(ranking: str, cand: Candidates, price: float, capacity, need: float):
    """The head of a ranked queue (:func:`queue_order`) long enough to cover ``need``: the
    first ``m`` entries of the full order, ``m`` the least of 64, 512, ... whose capacity
    reaches ``need``, or the whole queue when that would be a large part of it (a
    cascade that drains the queue). Selecting them with a partition and sorting only them
    gives the same entries in the same order as sorting the whole queue, whose other entries
    would give nothing (:func:`allocate_in_order`)."""
    key = -queue_score(ranking, cand, price)
    k = key.size
    m = 64
    if capacity.sum() < 4.0 * need:  # the head would be a good part of the queue
        m = k
    while 8 * m < k:
        bound = np.partition(key, m - 1)[m - 1]  # the m-th smallest key
        if bound != bound:  # NaN: fewer than m numbers
            break
        head = np.flatnonzero(key <= bound)  # the first m or more of the order (ties kept)
        head = head[stable_argsort(key[head], cand.rows[head])]
        if np.cumsum(capacity[head])[-1] >= need:  # as allocate_in_order adds them up
            return head
        m *= 8
    return stable_argsort(key, cand.rows)  # (ties by book row)


# --------------------------------------------------------------------------------------------
# Allocation
# --------------------------------------------------------------------------------------------


def allocate_in_order(capacity, need: float) -> np.ndarray:
    """Take ``need`` from ``capacity`` in order: each entry gives all it can until the need is met.

    Returns:
        (k,) amount taken from each entry; it sums to ``min(need, capacity.sum())``.
    """
    capacity = np.asarray(capacity, dtype=float)
    before = np.cumsum(capacity) - capacity
    return np.clip(need - before, 0.0, capacity)


def pro_rata(capacity, size, need: float) -> np.ndarray:
    """Take ``need`` in proportion to ``size``, each entry capped at its ``capacity``.

    Every entry gives ``min(lam x size, capacity)`` with the one level ``lam`` at which they sum
    to ``need`` (water filling). The total at level ``lam`` is piecewise linear and increasing in
    ``lam``, with kinks at each entry's own ``capacity / size``: sorted by those, the total at the
    ``j``-th kink is ``sum_{i<j} capacity_i + r_j sum_{i>=j} size_i``, and ``lam`` lies on the
    first piece whose end reaches ``need``.

    Args:
        capacity: (k,) the most each entry can give (>= 0).
        size: (k,) the weights (> 0): the positions' sizes.
        need: the amount wanted.

    Returns:
        (k,) amount taken from each entry; it sums to ``min(need, capacity.sum())``.
    """
    capacity = np.asarray(capacity, dtype=float)
    size = np.asarray(size, dtype=float)
    if need <= 0 or capacity.size == 0:
        return np.zeros_like(capacity)
    if need >= capacity.sum():
        return capacity.copy()
    ratio = capacity / size
    order = stable_argsort(ratio)
    r, c, s = ratio[order], capacity[order], size[order]
    capped_before = np.cumsum(c) - c
    size_from = np.cumsum(s[::-1])[::-1]
    total_at = capped_before + r * size_from
    j = min(int(np.searchsorted(total_at, need)), r.size - 1)
    level = (need - capped_before[j]) / size_from[j]
    return np.minimum(level * size, capacity)


def givebacks(ranking: str, cand: Candidates, price: float, capacity, need: float, rng=None):
    """What each candidate gives back towards ``need``, in the order the fills are made.

    Returns:
        ``(order, take)``: indices into ``cand`` and the amount each of them gives: every
        candidate, or for a ranked queue the head of it that covers ``need`` (the others
        would give nothing).
    """
    capacity = np.asarray(capacity, dtype=float)
    if ranking in ("bitmex", "binance", "hyperliquid"):  # only the head of the queue gives
        order = _queue_head(ranking, cand, price, capacity, need)
        return order, allocate_in_order(capacity[order], need)
    order = queue_order(ranking, cand, price, rng)
    if ranking == "pro_rata":
        take = pro_rata(capacity, np.abs(cand.qty), need)[order]
    else:
        take = allocate_in_order(capacity[order], need)
    return order, take


def socialize(capacity, loss: float) -> np.ndarray:
    """Share of ``loss`` each entry pays, pro rata to its (non-negative) capacity, capped at it."""
    capacity = np.maximum(np.asarray(capacity, dtype=float), 0.0)
    total = capacity.sum()
    if total <= 0 or loss <= 0:
        return np.zeros_like(capacity)
    return capacity * (min(loss, total) / total)


# --------------------------------------------------------------------------------------------
# The engine's entry point
# --------------------------------------------------------------------------------------------


def auto_deleverage(
    book: AccountBook,
    market: Market,
    shortfall_by_asset,
    price,
    bankrupt_qty=None,
    *,
    ranking: str = "bitmex",
    profit_cap: bool = False,
    rng=None,
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
            unknown or zero, the side is taken from the step's forced flow and each position
            gives back up to its capacity, closed whole (as if ``|Q|`` were tiny).
        ranking: the queue's order, one of :data:`RANKINGS`.
        profit_cap: cap what a position gives back at its paper profit too.
        rng: the random stream of the ``random`` ranking.
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
        per_unit = left[a] / abs(bankrupt_qty[a]) if bankrupt_qty[a] != 0 else np.inf
        found = _deleverage_asset(book, a, side, left[a], per_unit, price, ranking, profit_cap, rng)
        if found is None:
            continue
        rows, closed, fill_price, giveback = found
        dq = np.zeros((rows.size, n_assets))
        dq[:, a] = -closed
        prices = np.broadcast_to(price, dq.shape).copy()
        prices[:, a] = fill_price
        book.fill(rows, dq, prices)
        book.release_closed_isolated(rows)
        market.take_other_side(column_sum(dq), price)
        left[a] = max(left[a] - float(giveback.sum()), 0.0)
        notional = np.abs(closed) * fill_price
        notional_by_asset[a] = float(notional.sum())
        fills.append((rows, np.full(rows.size, a), closed, fill_price, notional, giveback))

    socialized = 0.0
    rest = float(left.sum())
    if rest > 0:
        socialized = _haircut_profits(book, price, rest)
        left *= (rest - socialized) / rest
    columns = [np.concatenate(c) for c in zip(*fills, strict=True)] if fills else [np.zeros(0)] * 6
    return Deleveraging(*columns, notional_by_asset, socialized, left)


def _candidates(book: AccountBook, a: int, side, price, ranking: str, profit_cap: bool):
    """The positions of asset ``a`` on the side opposite ``side`` that can give something:
    ``(Candidates, upnl)``, or None when there are none."""
    held = book.qty[:, a]
    rows = np.flatnonzero(held * side < 0)
    if rows.size == 0:
        return None
    q = held.take(rows)
    e = book.entry[:, a].take(rows)
    upnl = q * (price[a] - e)
    cross_equity = book.cross_equity(price, rows)
    if book.any_isolated:
        iso = book.isolated[:, a].take(rows)
        unit_equity = np.where(iso, book.margin[:, a].take(rows) + upnl, cross_equity)
    else:  # (no isolated position: every unit is its cross book)
        iso = np.zeros(rows.size, dtype=bool)
        unit_equity = cross_equity
    ok = unit_equity > 0
    if profit_cap:
        ok &= upnl > 0
    if not ok.any():
        return None
    rows, q, e, upnl, iso = rows[ok], q[ok], e[ok], upnl[ok], iso[ok]
    cand = Candidates(rows, q, e, unit_equity[ok])
    if ranking == "binance":  # the unit's wallet, PnL and maintenance
        wallet = book.wallet[rows]
        cand.unit_wallet = np.where(iso, book.margin[rows, a], wallet)
        cand.unit_upnl = np.where(iso, upnl, cross_equity[ok] - wallet)
        position_mm = book.position_maintenance(price, rows)[:, a]
        cand.unit_maintenance = np.where(iso, position_mm, book.cross_maintenance(price, rows))
    return cand, upnl


def _deleverage_asset(book, a, side, need, per_unit, price, ranking, profit_cap, rng):
    """Deleverage asset ``a`` for ``need`` at ``per_unit`` given back a unit closed:
    ``(rows, closed, fill_price, giveback)`` of the positions it closes, or None when nobody on
    the other side can give anything."""
    found = _candidates(book, a, side, price, ranking, profit_cap)
    if found is None:
        return None
    cand, upnl = found
    capacity = np.minimum(np.abs(cand.qty) * per_unit, cand.unit_equity)
    if profit_cap:
        capacity = np.minimum(capacity, upnl)
    order, take = givebacks(ranking, cand, price[a], capacity, need, rng)
    hit = take > 0
    if not hit.any():
        return None
    sel = order[hit]
    giveback = take[hit]
    q = cand.qty[sel]
    if profit_cap or not np.isfinite(per_unit):  # whole at the price giving back the capacity
        closed = (giveback / capacity[sel]) * q  # signed as the position was
        fill_price = price[a] - capacity[sel] / q
    else:  # every fill at the bankruptcy price
        closed = np.sign(q) * np.minimum(giveback / per_unit, np.abs(q))
        fill_price = np.full(sel.size, price[a] + side * per_unit)
    return cand.rows[sel], closed, fill_price, giveback


def _paying_profits(book: AccountBook, price) -> tuple[np.ndarray, np.ndarray]:
    """The rows holding a cross position in profit, and each one's paper profit (its cross
    positions' unrealised PnL, floored at 0); for a compiled book in one pass
    (:func:`model.kernels.paying_profits`)."""
    isolated = book.any_isolated and bool(book.isolated.any())
    if book.compiled():
        n = book.n_traders
        rows, profit = np.empty(n, dtype=np.int64), np.empty(n)
        found = kernels.paying_profits(
            book.qty, book.entry, book.isolated, isolated, np.asarray(price, dtype=float), rows,
            profit,
        )  # fmt: skip
        return rows[:found].copy(), profit[:found].copy()
    profit = book.upnl(price)
    if isolated:
        profit = np.where(book.isolated, 0.0, profit)
    payers = np.flatnonzero(row_any(profit > 0))
    return payers, np.maximum(row_sum(take_rows(profit, payers)), 0.0)  # (.sum(axis=1)'s bits)


def _haircut_profits(book: AccountBook, price, loss: float) -> float:
    """Take ``loss`` pro rata from cross positions' paper profits; return what was taken."""
    payers, profit = _paying_profits(book, price)
    if payers.size == 0:
        return 0.0
    capacity = np.minimum(profit, book.cross_equity(price, payers))
    share = socialize(capacity, loss)
    book.charge(payers, wallet=share)
    return float(share.sum())
