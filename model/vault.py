"""The liquidator vault: a backstop that takes over positions instead of selling them.

Hyperliquid (docs/reference/venues.md §2.4 [HL-LIQ]): "If the account equity drops below 2/3 of
the maintenance margin without successful liquidation through the book, a backstop liquidation
happens through the liquidator vault": a cross account's cross positions and cross margin, or an
isolated position and its margin, move to the vault (HLP), and "During backstop liquidation,
the maintenance margin is not returned to the user".

In this engine (``margin.vault``, ``margin.vault_threshold``): in each liquidation round, a unit
below maintenance whose equity at the mark is below ``vault_threshold x maintenance`` is not sent
to the book. The vault takes its positions at the mark, with no price impact, and then whatever
equity the unit has left, so the unit ends at zero. A unit whose equity is negative leaves that
as bad debt, paid like any other (insurance fund, then ADL: Hyperliquid deleverages when an
account value turns negative, §3.5). Hyperliquid first tries the book and backstops a unit that
keeps falling; here a unit already below the threshold when a round finds it (after a jump,
say) goes to the vault at once: an approximation at the scale of a round.

The vault is a holder of money and positions like the market agent: it pays ``q M`` for the
positions it takes (the trader's cash-equivalent ``W - q e`` rises by as much, so neither side's
value moves at the mark) and receives the equity the units had left. It holds what it took to
the end of the run, paying and receiving funding on it (:mod:`model.funding`); its value is
``cash + inventory . mark``. Money: traders + insurance fund +
market agent + vault - unfunded bad debt is constant. ADL ranks traders' positions only: the
vault's are not deleveraged.
"""

from __future__ import annotations

import numpy as np

from model.accounts import AccountBook

__all__ = ["LiquidatorVault"]


class LiquidatorVault:
    """Positions and money taken over by the backstop.

    Args:
        n_assets: how many assets.
        threshold: a unit whose equity is below ``threshold x maintenance`` is taken over.

    Attributes:
        inventory: (A,) the positions the vault holds.
        cash: the vault's cash (negative after paying for long positions).
        taken_notional: notional taken over so far (at the mark when taken).
        equity_taken: equity the units had left when taken over, in all.
    """

    def __init__(self, n_assets: int, threshold: float):
        self.threshold = float(threshold)
        self.inventory = np.zeros(n_assets)
        self.cash = 0.0
        self.taken_notional = 0.0
        self.equity_taken = 0.0

    def value(self, mark) -> float:
        """Cash plus inventory at ``mark``."""
        return float(self.cash + self.inventory @ np.asarray(mark, dtype=float))

    def notional(self, mark) -> float:
        """Gross notional the vault holds at ``mark``."""
        return float(np.abs(self.inventory) @ np.asarray(mark, dtype=float))

    def select(self, book: AccountBook, rows, cross, cross_pos, iso_pos, mark):
        """The units of the round's accounts that fall to the vault.

        Args:
            book: the account book.
            rows: (k,) the round's accounts.
            cross: (k,) whose cross book is liquidated; cross_pos (k, A) its open positions.
            iso_pos: (k, A) the isolated positions liquidated.
            mark: (A,) the round's mark.

        Returns:
            ``(cross_taken, iso_taken)``: (k,) cross books and (k, A) isolated positions taken.
        """
        cross_taken = np.zeros(len(rows), dtype=bool)
        if cross.any():
            eq = book.cross_equity(mark, rows)
            cross_taken = cross & (eq < self.threshold * book.cross_maintenance(mark, rows))
        iso_taken = iso_pos.copy()
        if iso_pos.any():
            eq = book.isolated_equity(mark, rows)
            iso_taken &= eq < self.threshold * book.position_maintenance(mark, rows)
        return cross_taken, iso_taken

    def take_positions(self, book: AccountBook, rows, quantity, mark) -> None:
        """Take ``quantity`` (k, A; signed as the positions are) from ``rows`` at ``mark``."""
        book.fill(rows, -quantity, mark)
        moved = quantity.sum(axis=0)
        self.inventory = self.inventory + moved
        self.cash -= float(moved @ np.asarray(mark, dtype=float))
        self.taken_notional += float((np.abs(quantity) * mark).sum())

    def take_equity(self, book: AccountBook, rows, cross_taken, iso_taken) -> None:
        """Take what equity the taken units have left (their positions already gone): the cross
        wallet of ``cross_taken`` (k,) rows, the margin of ``iso_taken`` (k, A) positions."""
        wallet = np.where(cross_taken, np.maximum(book.wallet[rows], 0.0), 0.0)
        margin = np.where(iso_taken, np.maximum(book.margin[rows], 0.0), 0.0)
        book.charge(rows, wallet=wallet, margin=margin)
        taken = float(wallet.sum() + margin.sum())
        self.cash += taken
        self.equity_taken += taken
