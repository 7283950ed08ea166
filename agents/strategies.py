"""Trading rules, each vectorised over the traders that follow it.

A rule is a class with a ``name`` and an ``orders(model, rows)`` method that returns the signed
quantities (buys positive) the traders in ``rows`` want to trade this step, as a (k, A) array.
The model sums every rule's orders, sends the net flow through the market, and fills every
order at the price after the batch. Rules see the model (prices, the account book, the
market's history) and draw randomness only from ``model.rng``.

The registry :data:`STRATEGIES` maps the names used in ``traders.strategies`` and in the
``strategy`` column of a population file to rule classes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STRATEGIES", "Hold", "Strategy"]


class Strategy:
    """Base class: a trading rule applied to a group of account-book rows."""

    name = "strategy"

    def __init__(self, model):
        self.model = model

    def orders(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), A) signed order quantities for this step (buys positive)."""
        raise NotImplementedError

    def active(self) -> bool:
        """Whether the rule can ever trade (lets the model skip passive groups)."""
        return True


class Hold(Strategy):
    """Keep the initial positions; trade only when liquidated."""

    name = "hold"

    def orders(self, rows):
        return np.zeros((len(rows), self.model.book.n_assets))

    def active(self) -> bool:
        return False


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Hold,)}
