"""Value traders' resting orders inside the liquidation rounds (``liquidity.value_orders``).

With ``"in_rounds"`` each value trader rests, when a step's liquidation rounds open, the rest
of its target curve as limit orders: it wants an overlay of ``E g(p)`` with
``g(p) = -L_v tanh(ln(p / F) / s_v) / p0`` (the value rule's target per unit of equity, its
quantity sized at the posting price ``p0``), so below ``p0`` it bids
``kappa E (g(p) - g(p0))`` and above it offers the same (negative). ``kappa`` in [0, 1] fits
the whole ladder in the account's initial margin when it is posted (venues check the initial
margin of an order when it is placed):

    free = E - sum_cross |q| p0 / L_max,  kappa = clip(free / sum_a ((L_v E + |o_a| p0) / L_max), 0, 1)

with ``o`` the rule's overlay. Every ladder of an asset has the shape ``g`` times its weight
``kappa E``, so the ladders of an asset add up exactly to one curve,
``E_bar (g(p) - g(p_min))`` below the lowest price they have filled at (``p_min``, ``p0`` at
posting), and the same above the highest; each ladder's fill is the aggregate's times its
weight over ``E_bar``, which is what its own orders would have filled. An account found below
maintenance has its ladder cancelled before the round's walk (its weight leaves ``E_bar``),
as venues cancel the open orders of an account under liquidation. Fills are booked round by
round at the round's price, so later rounds' margin checks see them; at the step's end the
value rule adds them to its overlays, and the ladders expire.

With ``"resting"`` the value traders send no market orders: each rests its whole target
curve as limit orders from the step's start (posted before the voluntary batch) to its end,
anchored at what it holds. Trader ``i`` with ladder weight ``w_i = kappa E`` and overlay
``h_i`` bids ``w_i g(p) - h_i`` at the prices where that is positive and offers it where it is
negative, so it never buys above (or sells below) the price ``q_i`` at which its target equals
its holding. At the open some of these orders may cross the book (the price moved since the
last step); the step's first walk (the voluntary batch, with or without other orders) clears
them like an opening auction at one price, ``W g(p) - H`` with ``W = sum w_i`` and
``H = sum h_i``, each ladder filling ``w_i g(p) - h_i``: no trader trades past its own
target, as a market order sized at the price before its own impact can (the value rule's
overshoot). After that walk every ladder is on the curve and the ladders fill as with
``"in_rounds"``, filled orders gone for the rest of the step. A value trader's trades thus come
only from flow crossing its orders: the other traders', the cascade's, and at the open the
gap the fundamental's move and the book's refill left.

Only cross-margin accounts rest ladders (isolated ones trade once a step, before the rounds).
"""

from __future__ import annotations

import math

import numpy as np

from agents.book import RestingOrders
from model.accounts import AccountBook

__all__ = ["ValueLadders"]


class ValueLadders(RestingOrders):
    """The value rule's ladders for one step, aggregated per asset.

    Args:
        book: the account book.
        rule: the value rule (:class:`agents.strategies.Value`): its parameters, its traders'
            universe and overlays.
        rows: the book rows that follow it.
        all_step: ``"resting"``: the ladders rest from the step's start and are anchored at
            the rows' holdings (the module docstring); else ``"in_rounds"``.

    Attributes:
        posted: whether ladders rest now (posted when the step's first round opens, or at the
            step's start with ``all_step``).
        opening: (A,) with ``all_step``, assets whose ladders have not yet traded this step
            (their orders are still anchored at the holdings).
        holding: (k, A) with ``all_step``, each live ladder's overlay when it was posted.
        weight: (k, A) each row's ladder weight ``kappa E`` per asset (0 once cancelled).
        total: (A,) ``E_bar``, the sum of the weights.
        filled: (k, A) what each ladder bought this step.
    """

    def __init__(self, book: AccountBook, rule, rows: np.ndarray, all_step: bool = False):
        self.book = book
        self.rule = rule
        self.all_step = bool(all_step)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.slot = np.full(book.n_traders, -1, dtype=np.int64)
        self.slot[self.rows] = np.arange(self.rows.size)
        a = book.n_assets
        self.posted = False
        self.weight = np.zeros((self.rows.size, a))
        self.total = np.zeros(a)
        self.filled = np.zeros((self.rows.size, a))
        self.p0 = np.ones(a)
        self.p_min = np.ones(a)
        self.p_max = np.ones(a)
        self.log_f = np.zeros(a)
        self.opening = np.zeros(a, dtype=bool)
        self.holding = np.zeros((self.rows.size, a))
        self.held = np.zeros(a)  # H: the holdings' sum over live ladders

    # ---- posting and cancelling -----------------------------------------------------------
    def post(self, price, fundamental, isolated_accounts) -> None:
        """Rest every live cross account's ladder at ``price`` (the IM cap of the module
        docstring); the aggregate curve of each asset starts there."""
        rows, book, rule = self.rows, self.book, self.rule
        if self.all_step:
            rule.sync(rows)  # overlays cut by a liquidation restart from 0 before posting
        else:
            rule._setup(rows)
        p = rule.params
        lmax = book.max_leverage
        equity = book.equity(price, rows)
        cross = ~(book.isolated[rows].any(axis=1) | isolated_accounts[rows])
        live = cross & (book.qty[rows] != 0).any(axis=1) & (equity > 0)
        universe = rule.universe & live[:, None]
        held = (np.abs(book.qty[rows]) * price / lmax).sum(axis=1)
        reach = p.leverage * equity[:, None] + np.abs(rule.overlay) * price
        cost = np.where(universe, reach / lmax, 0.0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = np.where(cost > 0, np.clip((equity - held) / cost, 0.0, 1.0), 0.0)
        self.weight = np.where(universe, (kappa * equity)[:, None], 0.0)
        self.total = self.weight.sum(axis=0)
        self.p0 = np.asarray(price, dtype=float).copy()
        self.p_min = self.p0.copy()
        self.p_max = self.p0.copy()
        self.log_f = np.log(np.asarray(fundamental, dtype=float))
        self.filled = np.zeros_like(self.weight)
        self.posted = True
        if self.all_step:
            rule.passive = cross  # these rows send no orders: their target rests here
            self.holding = np.where(self.weight > 0, rule.overlay, 0.0)
            self.held = self.holding.sum(axis=0)
            self.opening = self.total > 0

    def cancel(self, rows) -> None:
        """Cancel the ladders of ``rows`` (book rows; those not following the rule are
        ignored)."""
        if not self.posted:
            return
        slots = self.slot[rows]
        slots = slots[slots >= 0]
        if slots.size:
            self.total = self.total - self.weight[slots].sum(axis=0)
            self.weight[slots] = 0.0
            self.total = np.maximum(self.total, 0.0)
            if self.opening.any():
                self.held = self.held - self.holding[slots].sum(axis=0)
                self.holding[slots] = 0.0

    # ---- the curve ------------------------------------------------------------------------
    def active(self, a: int) -> bool:
        return self.posted and self.total[a] > 0

    def _g(self, a: int, price: float) -> tuple[float, float]:
        """The ladder shape ``g`` at ``price`` and its derivative in price."""
        s = self.rule.params.scale
        lev = self.rule.params.leverage
        x = (math.log(price) - self.log_f[a]) / s
        t = math.tanh(x)
        g = -lev * t / self.p0[a]
        dg = -lev * (1.0 - t * t) / (s * price * self.p0[a])
        return g, dg

    def absorbed(self, a: int, price: float) -> tuple[float, float]:
        """What the ladders of asset ``a`` buy beyond their fills so far if the walk ends at
        ``price`` (negative above the highest price they sold at), and its derivative."""
        if self.opening[a]:  # anchored at the holdings: W g(p) - H
            g, dg = self._g(a, price)
            return self.total[a] * g - self.held[a], self.total[a] * dg
        edge = self.p_min[a] if price < self.p_min[a] else self.p_max[a]
        if self.p_min[a] <= price <= self.p_max[a]:
            return 0.0, 0.0
        g, dg = self._g(a, price)
        g_edge, _ = self._g(a, edge)
        return self.total[a] * (g - g_edge), self.total[a] * dg

    def allocate(self, quantity, price) -> tuple[np.ndarray, np.ndarray]:
        """Split what the ladders of each asset bought (A,) among their rows, pro rata to
        their weights; move the filled range's edges to ``price``. Returns the rows that
        traded and their (k, A) fills."""
        quantity = np.asarray(quantity, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_weight = np.where(
                self.total > 0, quantity / np.where(self.total > 0, self.total, 1.0), 0.0
            )
        dq = self.weight * per_weight[None, :]
        price = np.asarray(price, dtype=float)
        if self.opening.any():  # each ladder to its point of the curve at the price
            dq = np.where(self.opening, self._opening_fills(price), dq)
            self.p_min = np.where(self.opening, price, self.p_min)
            self.p_max = np.where(self.opening, price, self.p_max)
            self.opening = np.zeros_like(self.opening)
        self.p_min = np.where(quantity > 0, np.minimum(self.p_min, price), self.p_min)
        self.p_max = np.where(quantity < 0, np.maximum(self.p_max, price), self.p_max)
        self.filled += dq
        keep = (dq != 0).any(axis=1)
        return self.rows[keep], dq[keep]

    def _opening_fills(self, price) -> np.ndarray:
        """(k, A) ``w_i g(p) - h_i`` per live ladder at ``price`` (0 for the others)."""
        g = np.array([self._g(a, float(price[a]))[0] for a in range(price.size)])
        return np.where(self.weight > 0, self.weight * g[None, :] - self.holding, 0.0)

    def expire(self) -> None:
        """The step is over: the value rule adds the fills to its overlays; ladders expire."""
        if self.posted and self.filled.any():
            self.rule.filled(self.rows, self.filled)
        self.posted = False
        self.weight[:] = 0.0
        self.total = np.zeros_like(self.total)
        self.filled = np.zeros_like(self.filled)
