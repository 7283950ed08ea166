"""Trading rules, each vectorised over the traders that follow it.

A rule is a class with a ``name`` and an ``orders(rows)`` method that returns the signed
quantities (buys positive) the traders in ``rows`` want to trade this step, as a (k, A) array.
Rules only say what they want: the model sums every rule's orders into one batch, caps what
they open at the initial margin and executes them through the market
(``model.orders.trade_voluntarily``). Rules see the model (prices, the account book, the
market's history) and draw randomness only from ``model.rng``.

The rules (parameters in ``[traders]``, DESIGN.md):

* ``hold``: keep the initial positions; trade only when liquidated.
* ``target_leverage``: rebalance toward a target leverage ``lambda`` each step, on the sides and
  asset weights of the initial positions: ``q* = side w lambda E / P``; the order closes the
  fraction ``rebalance`` of the gap. A rise lifts equity and lowers leverage, so the trader buys
  into rises and sells into falls: the procyclical leveraged fund of Thurner, Farmer and
  Geanakoplos (2012) and of Adrian and Shin (2010).
* ``momentum``: an overlay on the held position worth ``E L_m tanh(r_k / (sigma sqrt(k dt)))``
  of notional, ``r_k`` the log return over the last ``momentum_lookback`` steps: it sells into
  falls.
* ``value``: an overlay worth ``-E L_v tanh(log(P / F) / value_scale)``: it buys below the
  fundamental and sells above it, the stabilising side.
* ``noise``: an overlay that is an AR(1) random walk: each step it shrinks by the fraction
  ``rebalance`` and takes a normal order of ``noise_size x E`` notional.

The overlay rules trade the change of their overlay, so they start from their initial positions
without dumping them; a liquidation resets a trader's overlay (what is left is its new base).
Only the assets a trader held at the start are traded, and a flat account never trades (it was
liquidated; :mod:`model.reentry` may bring it back).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STRATEGIES",
    "Hold",
    "Momentum",
    "Noise",
    "Strategy",
    "TargetLeverage",
    "Value",
]


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class Strategy:
    """Base class: a trading rule applied to a group of account-book rows."""

    name = "strategy"

    def __init__(self, model):
        self.model = model
        self._setup_rows = None  # the rows the per-trader state was prepared for

    def _setup(self, rows) -> None:
        """Prepare per-trader state once for this group of rows (see :meth:`_prepare`)."""
        if self._setup_rows is not rows:
            self._prepare(rows)
            self._setup_rows = rows

    def _prepare(self, rows) -> None:
        """Per-trader state of a rule that keeps some (rules without any need nothing)."""

    def orders(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), A) signed order quantities for this step (buys positive)."""
        raise NotImplementedError

    def active(self) -> bool:
        """Whether the rule can ever trade (lets the model skip passive groups)."""
        return True

    def open_leverage(self, rows: np.ndarray):
        """Leverage at which the positions it opens are margined (default: the venue's cap)."""
        return self.model.book.max_leverage[None, :]

    def filled(self, rows: np.ndarray, dq: np.ndarray) -> None:
        """Hook after execution: ``dq`` is what was actually traded (after the margin cap)."""

    # shared views ------------------------------------------------------------------------
    def _initial(self, rows):
        """Sides, asset weights and leverage of the initial positions of ``rows``."""
        pop = self.model.population
        q0 = pop.qty[rows]
        n0 = np.abs(q0) * pop.entry[rows]
        total = n0.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(total > 0, n0 / np.where(total > 0, total, 1.0), 0.0)
            coll = pop.collateral[rows]
            lev0 = np.where(coll > 0, total[:, 0] / np.where(coll > 0, coll, 1.0), 0.0)
        return np.sign(q0), weights, lev0

    def _live(self, rows, equity):
        """Accounts that can trade: an open position and positive equity."""
        return (self.model.book.qty[rows] != 0).any(axis=1) & (equity > 0)


class Hold(Strategy):
    """Keep the initial positions; trade only when liquidated."""

    name = "hold"

    def orders(self, rows):
        return np.zeros((len(rows), self.model.book.n_assets))

    def active(self) -> bool:
        return False


class TargetLeverage(Strategy):
    """Rebalance toward a target leverage: buy into rises, sell into falls (procyclical)."""

    name = "target_leverage"

    def _prepare(self, rows):
        self.side, self.weights, lev0 = self._initial(rows)
        target = self.model.config.traders.target_leverage
        self.target = lev0 if target is None else np.full(len(rows), float(target))

    def orders(self, rows):
        self._setup(rows)
        book = self.model.book
        price = self.model.market.price
        equity = book.equity(price, rows)
        want = self.side * self.weights * (self.target * equity)[:, None] / price
        dq = self.model.config.traders.rebalance * (want - book.qty[rows])
        return np.where(self._live(rows, equity)[:, None], dq, 0.0)

    def open_leverage(self, rows):
        self._setup(rows)
        return np.maximum(self.target, 1.0)[:, None]


class _Overlay(Strategy):
    """A rule that holds an overlay on top of the held position and trades its changes."""

    def _prepare(self, rows):
        side, _, _ = self._initial(rows)
        self.universe = side != 0  # assets each trader held at the start
        self.overlay = np.zeros(side.shape)  # quantity the rule holds on top of its base
        self.seen = self.model.liquidation_count[rows].copy()

    def target(self, rows, equity, price) -> np.ndarray:
        """(k, A) the overlay quantity wanted now."""
        raise NotImplementedError

    def orders(self, rows):
        self._setup(rows)
        count = self.model.liquidation_count[rows]
        hit = count != self.seen
        if hit.any():  # a liquidation cut the position: what is left is the new base
            self.overlay[hit] = 0.0
            self.seen = count.copy()
        price = self.model.market.price
        equity = self.model.book.equity(price, rows)
        want = np.where(self.universe, self.target(rows, equity, price), 0.0)
        dq = want - self.overlay
        return np.where(self._live(rows, equity)[:, None], dq, 0.0)

    def filled(self, rows, dq):
        self.overlay += dq


class Momentum(_Overlay):
    """Trade on the recent return: buy after rises, sell after falls."""

    name = "momentum"

    def __init__(self, model):
        super().__init__(model)
        t = model.config.traders
        self.lookback = int(t.momentum_lookback)
        self.leverage = float(t.momentum_leverage)
        mk = model.market
        # return scale: one standard deviation of the lookback's return (floored)
        self.scale = np.maximum(mk.volatility * np.sqrt(self.lookback * mk.dt), 1e-3)
        self.history = [np.log(mk.price)]

    def signal(self) -> np.ndarray:
        """(A,) conviction in [-1, 1] from the log return over the lookback."""
        now = np.log(self.model.market.price)
        self.history.append(now)
        if len(self.history) > self.lookback + 1:
            del self.history[0]
        return np.tanh((now - self.history[0]) / self.scale)

    def target(self, rows, equity, price):
        return self.leverage * equity[:, None] * self.signal()[None, :] / price


class Value(_Overlay):
    """Buy below the fundamental, sell above it (the stabilising side)."""

    name = "value"

    def target(self, rows, equity, price):
        t = self.model.config.traders
        mispricing = np.log(price / self.model.market.fundamental)
        conviction = -np.tanh(mispricing / t.value_scale)
        return t.value_leverage * equity[:, None] * conviction[None, :] / price


class Noise(_Overlay):
    """Random orders: an AR(1) overlay with normal innovations of ``noise_size x E``."""

    name = "noise"

    def target(self, rows, equity, price):
        t = self.model.config.traders
        z = self.model.rng.standard_normal(self.overlay.shape)
        return (1.0 - t.rebalance) * self.overlay + t.noise_size * equity[:, None] * z / price


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Hold, TargetLeverage, Momentum, Value, Noise)
}
