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
to zero: money is conserved. Positions the liquidator vault took over (:mod:`model.vault`) pay
and receive funding as the traders' did. Funding comes out of the wallet for cross positions and
out of the position margin for isolated ones, so it can push accounts under maintenance; the
liquidation rounds of the same step then see it.

``market.funding_interval`` (steps; 0 switches funding off), ``market.funding_cap`` (per
interval), ``market.funding_interest`` (per basis), ``market.funding_basis``.
"""

from __future__ import annotations

import numpy as np

from agents.market import Market
from model.accounts import AccountBook
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
    """(k, A) what each position pays (negative: receives): ``q x mark x rate``."""
    return np.asarray(qty, dtype=float) * mark * rate


class Funding:
    """Accrues the premium every step and settles funding every ``interval`` steps.

    Args:
        market: the ``[market]`` section (``funding_interval`` > 0, ``funding_cap``,
            ``funding_interest``, ``funding_basis``).
        n_assets: how many perpetuals.

    Attributes:
        last_rate: (A,) the rate of the last settlement.
        paid_by_longs: total funding paid by long positions so far (negative: received).
        settlements: number of settlements so far.
    """

    def __init__(self, market: MarketConfig, n_assets: int):
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
        self._premium_sum[:] = 0.0
        self._premium_steps = 0
        self.last_rate = rate
        self.settlements += 1
        mark = market.mark
        pay = funding_payments(book.qty, mark, rate)
        iso = book.isolated
        book.charge(
            None, wallet=np.where(iso, 0.0, pay).sum(axis=1), margin=np.where(iso, pay, 0.0)
        )
        if vault is not None:
            vault.cash -= float(funding_payments(vault.inventory, mark, rate).sum())
        # The market agent holds the opposite inventory: it pays the other side.
        market.cash -= funding_payments(market.inventory, mark, rate)
        self.paid_by_longs += float(np.where(book.qty > 0, pay, 0.0).sum())
