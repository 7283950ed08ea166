"""Trader: a Mesa agent that is a view onto one row of the account book.

The state of every trader lives in the model's numpy arrays (:class:`model.accounts.AccountBook`)
so that marking, margin checks and liquidation rounds run as array operations. A ``Trader``
gives each account a Mesa identity (``unique_id``, ``model.agents_by_type[Trader]``, selection,
the dashboard) and reads its row on demand.
"""

from __future__ import annotations

import mesa
import numpy as np

__all__ = ["Trader"]


class Trader(mesa.Agent):
    """One margin account.

    Attributes:
        row: the account's row in ``model.book``.
        trader_id: the id used in output tables (the population file's ``trader_id``).
        strategy: name of the trading rule it follows.
    """

    def __init__(self, model, row: int, trader_id: int, strategy: str = "hold"):
        super().__init__(model)
        self.row = row
        self.trader_id = trader_id
        self.strategy = strategy

    # Views onto the book -----------------------------------------------------------------
    @property
    def wallet(self) -> float:
        return float(self.model.book.wallet[self.row])

    @property
    def positions(self) -> dict[str, float]:
        """Signed quantity per asset symbol (flat assets omitted)."""
        q = self.model.book.qty[self.row]
        return {s: float(v) for s, v in zip(self.model.symbols, q, strict=True) if v != 0}

    @property
    def holdings(self) -> dict[str, float]:
        """Units held per collateral asset symbol (empty without collateral assets)."""
        book = self.model.book
        if book.collateral is None:
            return {}
        h = book.holdings[self.row]
        return {s: float(v) for s, v in zip(book.collateral.symbols, h, strict=True) if v != 0}

    @property
    def equity(self) -> float:
        return float(self.model.book.equity(self.model.mark, np.array([self.row]))[0])

    @property
    def leverage(self) -> float:
        return float(self.model.book.leverage(self.model.mark, np.array([self.row]))[0])

    @property
    def margin_ratio(self) -> float:
        return float(self.model.book.margin_ratio(self.model.mark, np.array([self.row]))[0])

    @property
    def liquidation_prices(self) -> dict[str, float]:
        lp = self.model.book.liquidation_price(self.model.mark, np.array([self.row]))[0]
        q = self.model.book.qty[self.row]
        return {s: float(p) for s, p, v in zip(self.model.symbols, lp, q, strict=True) if v != 0}

    @property
    def liquidated(self) -> bool:
        """Whether this account has been liquidated at least once."""
        return bool(self.model.liquidation_count[self.row] > 0)

    def step(self) -> None:  # the model steps the book as a whole
        pass

    def __repr__(self) -> str:
        return f"Trader(id={self.trader_id}, equity={self.equity:.2f}, positions={self.positions})"
