"""Trading rules, each vectorised over the traders that follow it, and their registry.

A rule is a :class:`Strategy` subclass with an ``orders(rows)`` method that returns the signed
quantities (buys positive) the traders in ``rows`` want to trade this step, as a (k, A) array.
Rules only say what they want: the model sums every rule's orders into one batch, caps what
they open at the initial margin and executes them through the market
(``model.orders.trade_voluntarily``). Rules see the model (prices, the account book, the
market's history) and draw randomness only from ``model.rng``.

Each rule registers itself under a name with :func:`register_rule`, and declares its
parameters as a small dataclass of :func:`agents.params.spec` fields (its ``Params``). A config
names rules in ``traders.strategies`` and sets their parameters in ``[traders.rules.<name>]``,
validated like every other key. A rule written in a user's own file is registered the same way
and can then be used without editing this package::

    @dataclass
    class ContrarianParams:
        size: float = spec(0.5, doc="fraction of equity traded against the last move", ge=0)

    @register_rule("contrarian")
    class Contrarian(Strategy):
        Params = ContrarianParams

        def orders(self, rows): ...

The rules of this module:

* ``hold``: keep the initial positions; trade only when liquidated.
* ``target_leverage``: rebalance toward a target leverage ``lambda`` each step, on the sides and
  asset weights of the initial positions: ``q* = side w lambda E / P``; the order closes the
  fraction ``rebalance`` of the gap. A rise lifts equity and lowers leverage, so the trader buys
  into rises and sells into falls: the procyclical leveraged fund of Thurner, Farmer and
  Geanakoplos (2012) and of Adrian and Shin (2010).
* ``momentum``: an overlay on the held position worth ``E L_m tanh(r_k / (sigma sqrt(k dt)))``
  of notional, ``r_k`` the log return over the last ``lookback`` steps: it sells into falls.
* ``value``: an overlay worth ``-E L_v tanh(log(P / F) / scale)``: it buys below the
  fundamental and sells above it, the stabilising side.
* ``noise``: an overlay that is an AR(1) random walk: each step it shrinks by the fraction
  ``decay`` and takes a normal order of ``size x E`` notional (plus ``persistence`` times its
  previous order: persistent order flow).

The overlay rules trade the change of their overlay, so they start from their initial positions
without dumping them; a liquidation resets a trader's overlay (what is left is its new base).
Only the assets a trader held at the start are traded, and a flat account never trades (it was
liquidated; ``model.reentry`` may bring it back).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from agents.params import spec

__all__ = [
    "STRATEGIES",
    "Hold",
    "Momentum",
    "MomentumParams",
    "NoParams",
    "Noise",
    "NoiseParams",
    "Strategy",
    "TargetLeverage",
    "TargetLeverageParams",
    "Value",
    "ValueParams",
    "register_rule",
]


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


@dataclass
class NoParams:
    """The parameters of a rule that has none (hold: keep the initial positions)."""


class Strategy:
    """Base class: a trading rule applied to a group of account-book rows.

    Args:
        model: the model whose prices, book and market the rule reads.
        params: the rule's parameters (an instance of its ``Params``); default: the defaults.
    """

    name = "strategy"
    Params: type = NoParams
    # whether the rule's orders rest in the book (:class:`agents.book.RestingOrders` in
    # ``market.resting``) and fill inside the walks, which the model then wires to the book
    rests_in_book = False

    def __init__(self, model, params=None):
        self.model = model
        self.params = self.Params() if params is None else params
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

    def begin_step(self, rows: np.ndarray) -> None:
        """Hook at the start of a step, before the market moves: state that a rule keeps in
        the book between its orders (the noise trader's demand curve of
        :mod:`agents.leverage_cycle` takes its new shock here)."""

    # shared views ------------------------------------------------------------------------
    def _initial(self, rows):
        """Sides, asset weights and leverage of the initial positions of ``rows``."""
        pop = self.model.population
        q0 = pop.qty[rows]
        n0 = np.abs(q0) * pop.entry[rows]
        total = n0.sum(axis=1, keepdims=True)
        held = self.model.book.collateral  # collateral holdings count at the initial prices
        prices = None if held is None else self.model.market.initial_price[held.cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(total > 0, n0 / np.where(total > 0, total, 1.0), 0.0)
            coll = pop.collateral_value(prices)[rows]
            lev0 = np.where(coll > 0, total[:, 0] / np.where(coll > 0, coll, 1.0), 0.0)
        return np.sign(q0), weights, lev0

    def _live(self, rows, equity):
        """Accounts that can trade: an open position and positive equity."""
        return self.model.book.has_position(rows) & (equity > 0)

    @staticmethod
    def _only(keep, dq):
        """``dq`` where ``keep`` ((k,) or (k, A)), 0 elsewhere; ``dq`` itself when every row
        is kept, as it usually is (``np.where`` is slow on a mask it cannot predict)."""
        if keep.all():
            return dq
        if keep.ndim == 2:
            return _where_kept(keep, dq)
        out = dq.copy()  # (np.where broadcasting (k, 1) over (k, A) costs twice this)
        out[~keep] = 0.0
        return out


def _where_kept(keep: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.where(keep, x, 0.0)`` for a float array ``x`` and a mask of its shape, bit for
    bit, as an AND of the bits with all ones (kept) or all zeros (``+0.0``): ``np.where``
    branches on each element, and on a mask it cannot predict (the assets each trader holds)
    costs three to four times this."""
    bits = keep.astype(np.int64)
    np.negative(bits, out=bits)  # True -> -1: every bit set
    np.bitwise_and(np.asarray(x, dtype=np.float64).view(np.int64), bits, out=bits)
    return bits.view(np.float64)


# Rules by name, in the order they were registered (the order their orders join the batch).
STRATEGIES: dict[str, type[Strategy]] = {}
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def register_rule(name: str):
    """Class decorator: register a :class:`Strategy` subclass as the trading rule ``name``.

    The class's ``Params`` (a dataclass of :func:`agents.params.spec` fields, default: none)
    becomes the config section ``[traders.rules.<name>]``. Registering the same class again
    (a module imported twice) replaces it; another class under a taken name is refused.

    Raises:
        ValueError: the name is not a bare key, or another rule holds it.
        TypeError: the class is not a Strategy, or its Params is not a dataclass.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"trading rule name {name!r}: use letters, digits, '_' and '-'")

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"trading rule {name!r}: {cls!r} is not a Strategy subclass")
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"trading rule {name!r}: Params must be a dataclass")
        held = STRATEGIES.get(name)
        if held is not None and (held.__module__, held.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(
                f"trading rule {name!r} is already registered ({held.__module__}.{held.__qualname__})"
            )
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return register


@register_rule("hold")
class Hold(Strategy):
    """Keep the initial positions; trade only when liquidated."""

    def orders(self, rows):
        return np.zeros((len(rows), self.model.book.n_assets))

    def active(self) -> bool:
        return False


@dataclass
class TargetLeverageParams:
    """The target_leverage rule: rebalance toward a leverage, buying into rises and selling
    into falls (``[traders.rules.target_leverage]``)."""

    target: float | None = spec(
        None,
        doc="leverage the rule keeps (default: each account's initial leverage)",
        unit="x (notional / equity)",
        ge=1,
        le=1000,
    )
    rebalance: float = spec(
        0.5,
        doc="fraction of the gap to the target leverage closed each step",
        unit="fraction per step",
        gt=0,
        le=1,
    )


@register_rule("target_leverage")
class TargetLeverage(Strategy):
    """Rebalance toward a target leverage: buy into rises, sell into falls (procyclical)."""

    Params = TargetLeverageParams

    def _prepare(self, rows):
        self.side, self.weights, lev0 = self._initial(rows)
        target = self.params.target
        self.target = lev0 if target is None else np.full(len(rows), float(target))

    def orders(self, rows):
        self._setup(rows)
        book = self.model.book
        price = self.model.market.price
        equity = book.equity(price, rows)
        want = self.side * self.weights * (self.target * equity)[:, None] / price
        (qty,) = book.read(rows, "qty")
        dq = self.params.rebalance * (want - qty)
        return self._only(self._live(rows, equity), dq)

    def open_leverage(self, rows):
        self._setup(rows)
        return np.maximum(self.target, 1.0)[:, None]


class _Overlay(Strategy):
    """A rule that holds an overlay on top of the held position and trades its changes.

    Attributes:
        passive: (k,) rows whose target rests in the book as limit orders (the value rule
            under ``liquidity.value_orders = "resting"``, set by :mod:`model.ladders`): they
            send no orders, or None.
    """

    def _prepare(self, rows):
        side, _, _ = self._initial(rows)
        self.universe = side != 0  # assets each trader held at the start
        self.overlay = np.zeros(side.shape)  # quantity the rule holds on top of its base
        self.seen = self.model.liquidation_count[rows].copy()
        self.seen_total = self.model.liquidation_total
        self.passive = None

    def sync(self, rows) -> None:
        """Rows that a liquidation cut since the last look start a new overlay (what is left
        is the new base). Without a liquidation since the last look (the venue's count of
        them unchanged) no row was cut, and the rows' counts are not read."""
        self._setup(rows)
        total = self.model.liquidation_total
        if total == self.seen_total:
            return
        self.seen_total = total
        count = self.model.liquidation_count.take(rows)
        hit = count != self.seen
        if hit.any():
            self.overlay[hit] = 0.0
            self.seen = count.copy()

    def target(self, rows, equity, price) -> np.ndarray:
        """(k, A) the overlay quantity wanted now."""
        raise NotImplementedError

    def orders(self, rows):
        self.sync(rows)
        price = self.model.market.price
        equity = self.model.book.equity(price, rows)
        want = self._only(self.universe, self.target(rows, equity, price))
        dq = want - self.overlay
        keep = self._live(rows, equity)
        if self.passive is not None:
            keep = keep & ~self.passive
        return self._only(keep, dq)

    def filled(self, rows, dq):
        self.overlay += dq


@dataclass
class MomentumParams:
    """The momentum rule: an overlay that buys after rises and sells after falls
    (``[traders.rules.momentum]``)."""

    lookback: int = spec(
        24, doc="steps of past return the rule trades on", unit="steps", ge=1, le=100_000
    )
    leverage: float = spec(
        2.0,
        doc="extra leverage taken at full conviction",
        unit="x (notional / equity)",
        ge=0,
        le=1000,
    )


@register_rule("momentum")
class Momentum(_Overlay):
    """Trade on the recent return: buy after rises, sell after falls."""

    Params = MomentumParams

    def __init__(self, model, params=None):
        super().__init__(model, params)
        self.lookback = int(self.params.lookback)
        self.leverage = float(self.params.leverage)
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


@dataclass
class ValueParams:
    """The value rule: an overlay that buys below the fundamental and sells above it
    (``[traders.rules.value]``)."""

    leverage: float = spec(
        2.0,
        doc="extra leverage taken at full conviction",
        unit="x (notional / equity)",
        ge=0,
        le=1000,
    )
    scale: float = spec(
        0.05,
        doc="mispricing log(price / fundamental) of full conviction",
        unit="log price",
        gt=0,
        le=10,
    )


@register_rule("value")
class Value(_Overlay):
    """Buy below the fundamental, sell above it (the stabilising side)."""

    Params = ValueParams

    def target(self, rows, equity, price):
        p = self.params
        mispricing = np.log(price / self.model.market.fundamental)
        conviction = -np.tanh(mispricing / p.scale)
        return p.leverage * equity[:, None] * conviction[None, :] / price


@dataclass
class NoiseParams:
    """The noise rule: a random AR(1) overlay (``[traders.rules.noise]``)."""

    size: float = spec(
        0.1,
        doc="standard deviation of an order, as a fraction of equity",
        unit="fraction of equity",
        ge=0,
        le=100,
    )
    decay: float = spec(
        0.5,
        doc="fraction of the overlay that fades each step",
        unit="fraction per step",
        gt=0,
        le=1,
    )
    persistence: float = spec(
        0.0,
        doc="phi: each order adds phi times the trader's previous order (split, persistent "
        "order flow; 0: independent orders)",
        unit="dimensionless",
        ge=0,
        lt=1,
    )


@register_rule("noise")
class Noise(_Overlay):
    """Random orders: an AR(1) overlay with normal innovations of ``size x E``; with
    ``persistence = phi > 0`` each order also repeats ``phi`` of the trader's previous one
    (metaorders split over steps: persistent order flow)."""

    Params = NoiseParams

    def _prepare(self, rows):
        super()._prepare(rows)
        self.last_order = np.zeros(self.overlay.shape)  # each trader's previous order

    def target(self, rows, equity, price):
        p = self.params
        z = self.model.rng.standard_normal(self.overlay.shape)
        # (1 - decay) overlay + size E z / P, in place: a hundred thousand noise traders'
        # (k, A) temporaries cost more than the arithmetic on them; and one column at a time,
        # as numpy broadcasting a (k,) or (A,) array over (k, A) loops over rows of A entries
        scaled = p.size * equity
        for a in range(z.shape[1]):  # loop over assets, not traders
            column = z[:, a]
            np.multiply(scaled, column, out=column)
            column /= price[a]
        step = z
        fresh = (1.0 - p.decay) * self.overlay
        fresh += step
        if p.persistence == 0:
            return fresh
        want = fresh + p.persistence * self.last_order
        self.last_order = want - self.overlay
        return want
