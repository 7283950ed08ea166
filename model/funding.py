"""Funding payments of perpetual contracts, between longs and shorts.

A perpetual has no expiry; venues tie its price to the index with periodic funding. Binance
style (docs/reference/venues.md): over each interval the premium ``(P - F) / F`` of the market
price over the fundamental (the index) is averaged; the rate is

    rate = clamp((premium + clamp(interest - premium, -0.05%, +0.05%)) / basis, -cap, +cap)

and each position pays ``q x mark x rate``: longs pay shorts when the rate is positive. The
bracket is the rate of ``basis`` intervals (``market.funding_basis``, 1 by default): Hyperliquid
and dYdX compute an 8-hour rate and pay an eighth of it every hour (basis 8;
docs/reference/venues.md §1.3), and their caps bound the hourly payment. The market agent holds
the other side of every trader position, so it pays or receives the rest and the payments sum
to zero: money is conserved. Collateral assets (:mod:`model.collateral`) are not perpetuals:
their rate is 0 (the market agent's short of the traders' holdings pays nothing). Positions the
liquidator vault took over (:mod:`model.vault`) pay
and receive funding as the traders' did. Funding comes out of the wallet for cross positions and
out of the position margin for isolated ones, so it can push accounts under maintenance; the
liquidation rounds of the same step then see it.

``market.funding_interval`` (steps; 0 switches funding off), ``market.funding_cap`` (per
interval), ``market.funding_interest`` (per basis), ``market.funding_basis``.
"""

from __future__ import annotations

import numpy as np

from agents.market import Market
from model.accounts import AccountBook, row_sum
from model.config import MarketConfig

__all__ = ["INTEREST_BAND", "Funding", "funding_rate", "funding_payments"]

INTEREST_BAND = 0.0005  # the interest term's clamp, per interval (Binance: +-0.05%)


def funding_rate(premium, interest: float, cap: float, basis: float = 1.0) -> np.ndarray:
    """(A,) funding rate of one interval from the interval's mean premium.

    Args:
        premium: (A,) the interval's mean premium ``(P - F) / F``.
        interest: the interest part of the rate of ``basis`` intervals.
        cap: the largest rate of one interval, either way.
        basis: how many intervals the formula's rate is for (each pays ``1 / basis`` of it).
    """
    premium = np.asarray(premium, dtype=float)
    raw = premium + np.clip(interest - premium, -INTEREST_BAND, INTEREST_BAND)
    if basis != 1.0:
        raw = raw / basis
    return np.clip(raw, -cap, cap)


def funding_payments(qty, mark, rate) -> np.ndarray:
    """(k, A) what each position pays (negative: receives): ``q x mark x rate``.

    A book of few assets is computed one column at a time, to the same bits: numpy
    broadcasting an (A,) array over (k, A) loops over rows of A entries (the whole book's
    payments at a settlement: 30 ms against 11 for 10^6 x 2).
    """
    qty = np.asarray(qty, dtype=float)
    if qty.ndim != 2 or qty.shape[1] >= 8:
        return qty * mark * rate
    mark = np.broadcast_to(np.asarray(mark, dtype=float), qty.shape[1:])
    rate = np.broadcast_to(np.asarray(rate, dtype=float), qty.shape[1:])
    out = np.empty(qty.shape)
    for a in range(qty.shape[1]):  # loop over assets, not traders
        column = out[:, a]
        np.multiply(qty[:, a], mark[a], out=column)
        column *= rate[a]
    return out


class Funding:
    """Accrues the premium every step and settles funding every ``interval`` steps.

    Args:
        market: the ``[market]`` section (``funding_interval`` > 0, ``funding_cap``,
            ``funding_interest``, ``funding_basis``).
        n_assets: how many assets.
        perpetual: (A,) which assets are perpetuals (None: all); the others pay no funding.

    Attributes:
        last_rate: (A,) the rate of the last settlement.
        paid_by_longs: total funding paid by long positions so far (negative: received).
        settlements: number of settlements so far.
    """

    def __init__(self, market: MarketConfig, n_assets: int, perpetual=None):
        self.perpetual = None if perpetual is None else np.asarray(perpetual, dtype=bool)
        self.interval = int(market.funding_interval)
        self.cap = float(market.funding_cap)
        self.interest = float(market.funding_interest)
        self.basis = float(market.funding_basis)
        self._premium_sum = np.zeros(n_assets)
        self._premium_steps = 0
        self.last_rate = np.zeros(n_assets)
        self.paid_by_longs = 0.0
        self.settlements = 0

    def step(self, book: AccountBook, market: Market, step: int, vault=None) -> None:
        """Accrue this step's premium; on a settlement step, pay funding (the liquidator
        ``vault``, when there is one, on the positions it holds)."""
        self._premium_sum += market.price / market.fundamental - 1.0
        self._premium_steps += 1
        if step % self.interval:
            return
        mean_premium = self._premium_sum / self._premium_steps
        rate = funding_rate(mean_premium, self.interest, self.cap, self.basis)
        if self.perpetual is not None:
            rate = np.where(self.perpetual, rate, 0.0)
        self._premium_sum[:] = 0.0
        self._premium_steps = 0
        self.last_rate = rate
        self.settlements += 1
        mark = market.mark
        pay = funding_payments(book.qty, mark, rate)
        if book.any_isolated:  # each isolated position pays out of its own margin
            iso = book.isolated
            book.charge(
                None, wallet=row_sum(np.where(iso, 0.0, pay)), margin=np.where(iso, pay, 0.0)
            )
        else:
            book.charge(None, wallet=row_sum(pay))
        if vault is not None:
            vault.cash -= float(funding_payments(vault.inventory, mark, rate).sum())
        # The market agent holds the opposite inventory: it pays the other side.
        market.cash -= funding_payments(market.inventory, mark, rate)
        self.paid_by_longs += float((pay * (book.qty > 0)).sum())  # (np.where against 0.0: slower)
