"""Re-entry: liquidated traders come back after a cooldown with fresh collateral.

``traders.reentry_steps = k`` (0: never). An account that a liquidation left flat re-enters
``k`` steps after the step of that liquidation: it deposits what tops its equity up to its
initial collateral and reopens its initial positions (same sides, asset weights and leverage)
at the current price, as orders in the voluntary batch (so they move the price and pay the
initial margin like any other). Deposits are explicit inflows (``Reentry.deposits``, the
model's ``deposits``), and money is conserved as initial money plus deposits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agents.market import Market
from model import kernels
from model.accounts import AccountBook
from model.population import Population
from model.sorting import union_of_sorted

__all__ = ["Reentry"]


class Reentry:
    """Tracks liquidated, flat accounts and sends their re-entry orders.

    Args:
        population: the initial accounts (what a re-entrant comes back with).
        book, market: the account book and the market (re-entrants buy at its price).
        liquidation_count: (n,) how many rounds liquidated each account so far (the
            liquidation engine's, updated in place).
        liquidation_total: the sum of ``liquidation_count``, kept by its owner (the engine's
            running count); when it has not moved since the last step, the counts are not
            read again.
        cooldown: steps between the liquidation and the re-entry (>= 1).
        eligible: (n,) accounts that may re-enter (default: all).

    Attributes:
        deposits: money deposited by re-entrants so far.
        reentries: how many re-entries so far.
    """

    def __init__(
        self,
        population: Population,
        book: AccountBook,
        market: Market,
        liquidation_count: np.ndarray,
        liquidation_total: Callable[[], int],
        cooldown: int,
        eligible: np.ndarray | None = None,
    ):
        self.book = book
        self.market = market
        self.liquidation_count = liquidation_count
        self.cooldown = int(cooldown)
        pop = population
        held = book.collateral  # holdings count at the initial prices
        prices = None if held is None else market.initial_price[held.cols]
        self.collateral = np.asarray(pop.collateral_value(prices), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(self.collateral > 0, self.collateral, 1.0)
            # signed initial leverage per asset: q0 e0 / C0
            self.exposure = np.where(
                self.collateral[:, None] > 0, pop.qty * pop.entry / c[:, None], 0.0
            )
        self.leverage = np.abs(self.exposure).sum(axis=1)
        if eligible is not None:  # only these accounts come back (not market makers)
            self.leverage = np.where(eligible, self.leverage, 0.0)
        n = len(self.collateral)
        self.seen = np.zeros(n, dtype=np.int64)
        self.last_liquidation = np.full(n, -1, dtype=np.int64)
        self.last_reentry = np.full(n, -1, dtype=np.int64)
        self._total = liquidation_total
        self._seen_total = 0
        # sorted rows liquidated since their last re-entry that may come back: a calm step
        # looks only at them, not at the whole book
        self._waiting = np.zeros(0, dtype=np.int64)
        self.reentries = 0
        self.deposits = 0.0

    def orders(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Deposits for this step's re-entrants, and their orders.

        Returns:
            ``(rows, dq, open_leverage)``: (k,), (k, A) and (k, 1) arrays.
        """
        book = self.book
        total = self._total()
        if total != self._seen_total:
            self._note_liquidated(step)
            self._seen_total = total
        waiting = self._waiting
        a = book.n_assets
        if book.compiled():  # (one pass: model.kernels)
            at = np.empty(waiting.size, dtype=np.intp)
            at = at[: kernels.due_and_flat(waiting, self.last_liquidation, step, self.cooldown,
                                           book.qty, at)]  # fmt: skip
        else:
            at = np.flatnonzero(step - self.last_liquidation[waiting] >= self.cooldown)
            if at.size:  # only flat accounts come back
                at = at[~(book.qty[waiting[at]] != 0).any(axis=1)]
        rows = waiting[at]
        if rows.size == 0:
            return rows, np.zeros((0, a)), np.ones((0, 1))
        price = self.market.price
        equity = book.equity(price, rows)
        deposit = np.maximum(self.collateral[rows] - equity, 0.0)
        book.deposit(rows, deposit)
        self.deposits += float(deposit.sum())
        self.last_reentry[rows] = step
        self._waiting = np.delete(waiting, at)
        self.reentries += int(rows.size)
        equity = equity + deposit
        dq = self.exposure[rows] * equity[:, None] / price
        return rows, dq, self.leverage[rows][:, None]

    def _note_liquidated(self, step: int) -> None:
        """Date the accounts liquidated since the last look to the step before ``step`` (its
        rounds liquidated them) and add those that may come back to the waiting rows: not
        one liquidated in the step it re-entered (its liquidation is not after its
        re-entry), nor one that never re-enters."""
        count = self.liquidation_count
        new = np.flatnonzero(count != self.seen)
        if not new.size:
            return
        self.last_liquidation[new] = step - 1
        self.seen[new] = count[new]
        new = new[(self.last_liquidation[new] > self.last_reentry[new]) & (self.leverage[new] > 0)]
        self._waiting = union_of_sorted(self._waiting, new)  # (both sorted, distinct)

    def filled(self, rows, dq) -> None:
        """Nothing to remember: re-entered accounts follow their own rule from now on."""
