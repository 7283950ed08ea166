"""Voluntary orders: the initial-margin cap and their execution.

Phase 2 of a step. Every trading rule (:mod:`agents.strategies`) says what its traders want to
trade; re-entering traders (:mod:`model.reentry`) add theirs. :func:`trade_voluntarily` sums
them into one batch, caps what the batch opens at the initial margin, sends its net flow
through the market, fills every order at the price after the batch, and books the other side
with the market agent.

Initial margin: what a batch opens (the part of an order that increases a position's size) must
fit in the account's free collateral, ``cross equity - sum over cross positions of N / L_max``;
orders are scaled down until ``sum opened N / L_open`` fits (reductions always pass). ``L_open``
is the leverage the rule margins what it opens at (its target leverage, or the venue's cap
``L_max``). The cap is applied at the price before the batch and again at the price the batch
would fill at: a crowd opening at once moves the price, and its own impact must not carry an
account past its initial margin.

Isolated margin: positions of isolated-margin accounts get ``opened N / L_open`` moved from the
wallet into their margin; reductions release the closed share of the margin and the realised
PnL to the wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.market import Market
from agents.strategies import Strategy
from model import kernels
from model.accounts import (
    AccountBook,
    adds_rows_in_order,
    column_sum,
    put_rows,
    row_any,
    row_sum,
)
from model.reentry import Reentry

__all__ = [
    "OrderGroup",
    "cap_to_initial_margin",
    "collect_orders",
    "settle_isolated_margin",
    "split_order",
    "trade_voluntarily",
]


# --------------------------------------------------------------------------------------------
# Pure kernels
# --------------------------------------------------------------------------------------------


def _zero_unless(keep, x):
    """``np.where(keep, x, 0.0)``; ``x`` itself when every entry is kept. The traders of a
    rule usually all pass (cross accounts, open positions, orders within their margin), and
    ``np.where`` costs ten times an arithmetic pass on a mask it cannot predict."""
    if np.all(keep):
        return x
    return np.where(keep, x, 0.0)


def split_order(qty, dq):
    """Split orders into the part that reduces a position and the part that opens one.

    Args:
        qty: (k, A) positions before the order.
        dq: (k, A) signed orders (buys positive).

    Returns:
        ``(reduced, opened)``: the position once the reducing part is done (``qty`` when the
        order adds, ``qty + dq`` when it only reduces, 0 when it flips), and the signed quantity
        opened beyond it, so that ``reduced + opened == qty + dq``.
    """
    qty = np.asarray(qty, dtype=float)
    dq = np.asarray(dq, dtype=float)
    new = qty + dq
    opposite = qty * dq < 0
    flips = opposite & (np.abs(dq) > np.abs(qty))
    reduced = np.where(opposite, np.where(flips, 0.0, new), qty)
    return reduced, new - reduced


def cap_to_initial_margin(equity, reduced, opened, price, cross, max_leverage, open_leverage):
    """Scale the opening part of orders so that the account's initial margin fits.

    ``free = equity - sum_cross |reduced| P / L_max`` must cover
    ``cost = sum |opened| P / L_open``; the opening part is multiplied by
    ``clip(free / cost, 0, 1)``.

    Args:
        equity: (k,) cross equity (wallet plus cross unrealised PnL) of each account.
        reduced, opened: (k, A) from :func:`split_order`.
        price: (A,) the price the orders are sized at.
        cross: (k, A) whether each position is (or will be) a cross position.
        max_leverage: (A,) the venue's leverage cap per asset.
        open_leverage: (k, A) or scalar leverage at which opened positions are margined
            (at most the cap).

    Returns:
        (k,) the factor applied to each account's opened quantities.
    """
    lev = np.minimum(np.broadcast_to(open_leverage, np.shape(opened)), max_leverage)
    return _cap_factor(equity, np.abs(reduced), np.abs(opened), price, cross, max_leverage, lev)


def _cap_factor(equity, abs_reduced, abs_opened, price, cross, max_leverage, lev):
    """:func:`cap_to_initial_margin` from ``|reduced|``, ``|opened|`` and the leverage
    ``min(L_open, L_max)`` (the batch computes those once for both prices it sizes at)."""
    held = row_sum(_zero_unless(cross, abs_reduced * price / max_leverage))
    cost = row_sum(abs_opened * price / lev)
    free = np.asarray(equity, dtype=float) - held
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(cost > 0, np.clip(free / np.where(cost > 0, cost, 1.0), 0.0, 1.0), 1.0)
    return factor


def settle_isolated_margin(
    book: AccountBook, rows, qty_before, margin_before, realized, price, open_leverage
) -> None:
    """Move margin between wallet and isolated positions after voluntary fills.

    A reduced isolated position releases the closed share of its margin and the realised PnL
    (which :meth:`model.accounts.AccountBook.fill` put into the margin) to the wallet, so the
    margin left is proportional to the quantity left; an opened (or flipped) one gets
    ``|opened| P / L_open`` from the wallet. Money only moves inside each account.
    """
    (iso,) = book.read(rows, "isolated")
    if not iso.any():  # all cross: nothing to move (and scattered writes are what costs)
        return
    (q_after,) = book.read(rows, "qty")
    reduced, opened = split_order(qty_before, q_after - qty_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.where(qty_before != 0, np.abs(reduced) / np.abs(qty_before), 0.0)
    release = np.where(iso, (1.0 - kept) * margin_before + realized, 0.0)
    lev = np.minimum(np.broadcast_to(open_leverage, q_after.shape), book.max_leverage)
    post = np.where(iso, np.abs(opened) * price / lev, 0.0)
    book.move_to_margin(rows, post - release)


# --------------------------------------------------------------------------------------------
# The phase
# --------------------------------------------------------------------------------------------


@dataclass
class OrderGroup:
    """One owner's orders in the batch (a trading rule, or re-entry).

    Attributes:
        owner: told what was traded (``filled(all_rows, dq)``).
        rows, dq, leverage: the rows that sent an order, their (k, A) orders, and the leverage
            what they open is margined at.
        all_rows: every row of the owner (``filled`` gets one row of ``dq`` for each).
        keep: which of ``all_rows`` sent an order (None: all of them).
    """

    owner: Any
    rows: np.ndarray
    dq: np.ndarray
    leverage: np.ndarray
    all_rows: np.ndarray
    keep: np.ndarray | None


def collect_orders(
    step: int,
    rules: dict[str, Strategy],
    rule_rows: dict[str, np.ndarray],
    reentry: Reentry | None = None,
) -> list[OrderGroup]:
    """This step's orders: re-entries first, then each active rule's non-zero orders.

    Args:
        step: the current step (re-entries are due by step).
        rules: the trading rule of each name, and ``rule_rows`` the book rows following it.
        reentry: the re-entry of liquidated traders, if on.
    """
    groups = []
    if reentry is not None:
        rows, dq, lev = reentry.orders(step)
        if rows.size:
            lev = np.broadcast_to(lev, dq.shape)
            groups.append(OrderGroup(reentry, rows, dq, lev, rows, None))
    for name, rule in rules.items():
        if not rule.active():
            continue
        rows = rule_rows[name]
        dq = rule.orders(rows)
        lev = np.broadcast_to(rule.open_leverage(rows), dq.shape)
        keep = row_any(dq != 0)
        if keep.all():  # every row sends an order: the rule's own rows, not a copy
            groups.append(OrderGroup(rule, rows, dq, lev, rows, None))
        elif keep.any():  # (np.take of the rows that send: faster than a mask's indexing)
            at = np.flatnonzero(keep)
            if lev.strides[0] == 0:  # one leverage row for all (a broadcast): no gather
                sent_lev = np.broadcast_to(lev[:1], (at.size, lev.shape[1]))
            else:
                sent_lev = lev.take(at, axis=0)
            sent_rows = rows.take(at)
            sent_rows.flags.writeable = False  # (see model.gathers.Gathers.holds)
            sent = sent_rows, dq.take(at, axis=0), sent_lev
            groups.append(OrderGroup(rule, *sent, rows, keep))
    return groups


def trade_voluntarily(
    book: AccountBook, market: Market, groups: list[OrderGroup], isolated_accounts: np.ndarray
) -> None:
    """Phase 2 of a step: every rule's orders (and re-entries) as one batch through the market.

    Orders are capped at the initial margin, at the price before the batch and at the price the
    batch would fill at; every fill then happens at the price after it, and the market agent
    takes the other side.

    Args:
        book, market: the account book and the market agent.
        groups: the step's orders (:func:`collect_orders`).
        isolated_accounts: (n,) accounts whose new positions are isolated.
    """
    if not groups:
        return
    if len(groups) == 1:  # one rule trades: its rows, so the book's reads of them are shared
        rows, dq, lev = groups[0].rows, groups[0].dq, groups[0].leverage
        if groups[0].keep is not None:  # the rule read all its rows: those that trade
            book.narrow(groups[0].all_rows, groups[0].keep)
    else:
        rows = np.concatenate([g.rows for g in groups])
        dq = np.concatenate([g.dq for g in groups])
        lev = np.concatenate([g.leverage for g in groups])
        # one group's rows are distinct by construction; check only where groups meet
        seen = np.zeros(book.n_traders, dtype=bool)
        seen[rows] = True
        if np.count_nonzero(seen) != rows.size:  # pragma: no cover
            raise RuntimeError("a trader received orders from two rules in one step")
    if not np.isfinite(dq).all():  # a rule facing absurd prices sends nothing
        dq = np.where(np.isfinite(dq), dq, 0.0)
    q_before, held_iso = book.read(rows, "qty", "isolated")
    iso = held_iso  # what the batch holds or opens isolated: with no isolated account, held
    if isolated_accounts.any():
        iso = held_iso | isolated_accounts.take(rows)[:, None]
    dq, net_buy = _cap_batch(book, market, rows, dq, lev, iso, q_before, held_iso)
    _execute_batch(book, market, rows, dq, net_buy, lev, iso, q_before)
    _report_filled(groups, dq)


def _cap_batch(
    book: AccountBook, market: Market, rows, dq, lev, iso, q_before, held_iso
) -> tuple[np.ndarray, np.ndarray]:
    """The batch's orders with what they open scaled to fit the initial margin, and their
    column sums (the batch's net buying, :func:`model.accounts.column_sum`).

    Sized at the price before the batch, then again at the price the batch would fill at. The
    second cap only shrinks the batch, so the final fill price lies between the two and the cap
    holds there too.
    """
    price = market.price
    lev = np.broadcast_to(lev, np.shape(dq))
    equity = book.cross_equity(price, rows)
    if 0 < book.n_assets < 8 and kernels.use(dq.shape[0]):  # the same, one loop a sizing
        dq = np.asarray(dq, dtype=float)
        out, net = np.empty(dq.shape), np.empty(dq.shape[1])
        scale, factor, work = np.ones(dq.shape[0]), np.empty(dq.shape[0]), np.empty((3, len(dq)))
        in_order = adds_rows_in_order(out)  # (else column_sum adds in another order)
        for sizing_price, last in ((price, False), (None, True)):
            if sizing_price is None:
                sizing_price = market.quote(-(net if in_order else column_sum(out)))
                scale, factor = factor, scale  # (the first sizing's factor scales the second)
            kernels.cap_orders(
                q_before, dq, held_iso, iso, equity, lev, book.max_leverage, price,
                np.asarray(sizing_price, dtype=float), last, scale, factor, out, net, work,
            )  # fmt: skip
        return out, (net if in_order else column_sum(out))
    reduced, opened = split_order(q_before, dq)
    cross_qty = _zero_unless(~held_iso, q_before)
    open_lev = np.minimum(lev, book.max_leverage)
    abs_reduced = np.abs(reduced)
    for sizing_price in (price, None):
        if sizing_price is None:
            sizing_price = market.quote(-(reduced - q_before + opened).sum(axis=0))
        factor = _cap_factor(  # cap_to_initial_margin, with what both prices share
            equity + row_sum(cross_qty * (sizing_price - price)),  # cross equity there
            abs_reduced,
            np.abs(opened),
            sizing_price,
            ~iso,
            book.max_leverage,
            open_lev,
        )
        scaled = factor[:, None] * opened
        opened = scaled if (factor > 0).all() else np.where(factor[:, None] > 0, scaled, 0.0)
    dq = reduced - q_before + opened
    dq = _zero_unless(np.abs(dq) > 1e-12 * np.abs(q_before), dq)
    return dq, column_sum(dq)


def _execute_batch(
    book: AccountBook, market: Market, rows, dq, net_buy, lev, iso, q_before
) -> None:
    """Send the batch's net flow ``net_buy`` through the market and fill every order at the
    price after it; settle isolated margins; the market agent takes the other side."""
    isolate = iso & (dq != 0)
    if isolate.any():  # (isolating nothing would only drop the book's shared reads)
        book.set_isolated(rows, isolate)
    (margin_before,) = book.read(rows, "margin")
    fill_price = market.execute(-net_buy, forced=False)
    realized, _ = book.fill(rows, dq, fill_price)
    settle_isolated_margin(book, rows, q_before, margin_before, realized, fill_price, lev)
    book.release_closed_isolated(rows)
    market.take_other_side(net_buy, fill_price)


def _report_filled(groups: list[OrderGroup], dq) -> None:
    """Tell each owner what its rows traded (zeros for the rows that sent nothing)."""
    start = 0
    for g in groups:
        done = dq[start : start + g.rows.size]
        start += g.rows.size
        if g.keep is not None:
            full = np.zeros((g.all_rows.size, dq.shape[1]))
            put_rows(full, np.flatnonzero(g.keep), done)  # (whole rows: faster than a mask)
            done = full
        g.owner.filled(g.all_rows, done)
