"""The leverage cycle's two rules: leveraged value funds and a noise trader's demand curve.

Thurner, Farmer and Geanakoplos (2012; docs/reference/literature.md) model a market of one
asset of value ``V`` in which a noise trader's cash demand moves at random and leveraged value
funds buy below the value, up to a leverage cap. Expressed in the engine's own concepts
(docs/validation.md, checks 4b and 6d):

* ``noise_demand``: the account holds the cash demand ``xi_t`` of the paper's noise trader, an
  AR(1) in log, ``log xi_t = rho log xi_(t-1) + sigma chi_t + (1 - rho) log xi_0`` (``chi_t``
  standard normal from ``model.rng``, drawn at the step's start; ``xi_0`` the account's initial
  position times the initial price). Its demand ``xi / p`` in the first asset rests in the book
  as an elastic curve (:class:`ElasticDemand`): a walk that ends at ``p`` leaves it holding
  ``xi / p``, so every walk (the voluntary batch, every liquidation round) clears against it:
  the paper's clearing ``xi / p + sum_h D_h = N``. It sends no orders.
* ``leverage_cycle``: each fund ``h`` holds ``min(beta_h m, lambda) E / p`` of the first asset
  when it trades below the value (``m = (V - p) / V``, ``V`` the fundamental: the paper's
  ``V - p`` with its ``V = 1``; ``lambda`` the asset's ``max_leverage``), sized at the step's opening price and sent as a market order; the funds'
  aggressiveness ``beta_h`` runs evenly from ``aggressiveness_first`` to
  ``aggressiveness_last`` over the rule's accounts in book order. A fund whose equity falls to ``floor`` of its
  initial equity sells out, withdraws what is left and re-enters with its initial equity after
  ``reentry_steps``; investors move ``max(-W, flow_sensitivity (r_perf - benchmark) W)`` a
  step, ``r_perf`` an EWMA (weight ``performance_weight``) of the fund's returns. Every inflow
  and outflow is a deposit the model counts (:attr:`LeverageCycle.deposits`), so money stays
  conserved. The funds buy below the value only: their buys are scaled down so that the batch
  does not fill above ``V``.

The cap binds through the venue: a fund that a price move pushes above ``lambda`` is
margin-called back by the liquidation engine when the maintenance rate is ``1 / lambda``
(the paper's margin call; experiments/configs/leverage-cycle.toml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agents.book import RestingOrders
from agents.params import spec
from agents.strategies import Strategy, register_rule

__all__ = [
    "ElasticDemand",
    "LeverageCycle",
    "LeverageCycleParams",
    "NoiseDemand",
    "NoiseDemandParams",
]


class ElasticDemand(RestingOrders):
    """Constant cash demands ``xi`` (one per row) in asset 0: the rows buy ``xi / p - q`` if a
    walk ends at ``p`` (``q`` their positions now), so they hold ``xi / p`` after every walk.
    A row being liquidated withdraws its demand for good (:meth:`cancel`)."""

    def __init__(self, book, rows, xi):
        self.book = book
        self.rows = np.asarray(rows, dtype=np.int64)
        self.xi = np.asarray(xi, dtype=float)
        self.live = np.ones(self.rows.size, dtype=bool)

    def absorbed(self, a: int, price: float) -> tuple[float, float]:
        if a != 0:
            return 0.0, 0.0
        if self.live.all():
            xi, held = float(self.xi.sum()), float(self.book.qty[self.rows, 0].sum())
        else:
            xi = float(self.xi[self.live].sum())
            held = float(self.book.qty[self.rows[self.live], 0].sum())
        return xi / price - held, -xi / (price * price)

    def active(self, a: int) -> bool:
        return a == 0 and bool(self.live.any())

    def allocate(self, quantity, price):
        """Each row fills its own demand at the walk's price, the last row what is left of
        ``quantity``, so that the fills add up to what the walk absorbed to the bit."""
        rows, xi = self.rows[self.live], self.xi[self.live]
        dq = np.zeros((rows.size, self.book.n_assets))
        if rows.size == 0:  # every row withdrew (the walk then gives them nothing)
            return rows, dq
        dq[:-1, 0] = xi[:-1] / float(np.asarray(price)[0]) - self.book.qty[rows[:-1], 0]
        dq[-1, 0] = float(np.asarray(quantity)[0]) - dq[:-1, 0].sum()
        return rows, dq

    def cancel(self, rows) -> None:
        self.live &= ~np.isin(self.rows, rows)


@dataclass
class NoiseDemandParams:
    """The noise_demand rule: Thurner, Farmer and Geanakoplos's noise trader, a cash demand
    resting in the book (``[traders.rules.noise_demand]``)."""

    rho: float = spec(
        0.99, doc="persistence of the log cash demand's AR(1)", unit="per step", ge=0, lt=1
    )
    sigma: float = spec(
        0.035, doc="standard deviation of its shocks", unit="log demand per step", ge=0, le=1
    )


@register_rule("noise_demand")
class NoiseDemand(Strategy):
    """The paper's noise trader: a demand curve resting in the book (module docstring)."""

    Params = NoiseDemandParams
    rests_in_book = True

    def _prepare(self, rows):
        book, price = self.model.book, float(self.model.market.price[0])
        xi0 = book.qty[rows, 0] * price
        # an account without a long position in the first asset has no demand: it rests
        # nothing (and keeps what it holds)
        self.holders = np.flatnonzero(xi0 > 0)
        # log xi_0, and the demand's logs and levels with the C library's log and exp: the
        # few accounts that hold a demand curve do not need numpy's, whose last bit varies
        # with the machine's vector instructions
        self.mean_log = np.array([math.log(x) for x in xi0[self.holders]])
        self.log_xi = self.mean_log.copy()
        self.demand = ElasticDemand(book, rows[self.holders], xi0[self.holders])
        self.model.market.resting.append(self.demand)

    def begin_step(self, rows) -> None:
        """The step's new cash demand (one normal draw a row, before the market moves)."""
        self._setup(rows)
        p = self.params
        chi = self.model.rng.standard_normal(len(rows))[self.holders]
        self.log_xi = p.rho * self.log_xi + p.sigma * chi + (1.0 - p.rho) * self.mean_log
        self.demand.xi = np.array([math.exp(x) for x in self.log_xi])

    def orders(self, rows):
        self._setup(rows)
        return np.zeros((len(rows), self.model.book.n_assets))

    def active(self) -> bool:
        return False


@dataclass
class LeverageCycleParams:
    """The leverage_cycle rule: Thurner, Farmer and Geanakoplos's leveraged value funds
    (``[traders.rules.leverage_cycle]``)."""

    aggressiveness_first: float = spec(
        50.0, doc="the first fund's beta: leverage wanted per unit of mispricing (V - p) / V",
        unit="leverage per unit of (V - p) / V", ge=0, le=1e6,
    )  # fmt: skip
    aggressiveness_last: float = spec(
        500.0, doc="the last fund's beta (the funds' betas are evenly spaced in between)",
        unit="leverage per unit of (V - p) / V", ge=0, le=1e6,
    )  # fmt: skip
    floor: float = spec(
        0.1, doc="equity, as a share of its initial equity, at which a fund defaults",
        unit="fraction", gt=0, lt=1,
    )  # fmt: skip
    reentry_steps: int = spec(
        100, doc="steps after a default until the fund re-enters with its initial equity",
        unit="steps", ge=1, le=1_000_000,
    )  # fmt: skip
    flow_sensitivity: float = spec(
        0.15, doc="investors' flow per unit of performance above the benchmark",
        unit="fraction of equity per unit of return", ge=0, le=100,
    )  # fmt: skip
    benchmark: float = spec(
        0.005, doc="return investors expect a step", unit="return per step", ge=-1, le=1
    )
    performance_weight: float = spec(
        0.1, doc="weight of the latest return in the performance EWMA",
        unit="fraction", gt=0, le=1,
    )  # fmt: skip


@register_rule("leverage_cycle")
class LeverageCycle(Strategy):
    """The paper's value funds (module docstring) as a trading rule over their rows.

    Attributes:
        deposits: every inflow and outflow of the funds so far (the model counts it).
        capped: steps in which some active fund was held back by the cap.
    """

    Params = LeverageCycleParams

    def __init__(self, model, params=None):
        super().__init__(model, params)
        self.deposits = 0.0
        self.capped = 0

    def _prepare(self, rows):
        k, p = len(rows), self.params
        self.betas = np.linspace(p.aggressiveness_first, p.aggressiveness_last, k)
        self.w0 = self.model.book.equity(self.model.market.price, rows).copy()
        self.dormant = np.zeros(k, dtype=np.int64)  # steps left before re-entry
        self.defaulting = np.zeros(k, dtype=bool)  # sold out last step: withdraw now
        self.perf = np.zeros(k)
        self.last_wealth = self.w0.copy()  # equity after the last step's flows

    def open_leverage(self, rows):
        return self.model.book.max_leverage[None, :]

    def _flow(self, rows, amount) -> None:
        """Investors' money in (amount > 0) or out of the funds' wallets."""
        book = self.model.book
        book.credit(rows, wallet=np.maximum(amount, 0.0))
        book.charge(rows, wallet=np.maximum(-amount, 0.0))
        self.deposits += float(amount.sum())

    def _investors(self, rows, mark):
        """Re-entries with fresh capital, last step's defaults withdrawing what they have
        left, and investors' flows on performance; the funds active this step."""
        p, book = self.params, self.model.book
        wealth = book.equity(mark, rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = np.where(self.last_wealth > 0, wealth / self.last_wealth - 1.0, 0.0)
        back = self.dormant == 1
        self._flow(rows, np.where(back, self.w0 - wealth, 0.0))
        self.dormant = np.maximum(self.dormant - 1, 0)
        gone = self.defaulting
        self._flow(rows, np.where(gone, -np.maximum(wealth, 0.0), 0.0))
        self.dormant[gone], self.defaulting[:] = p.reentry_steps, False
        active = self.dormant == 0
        fresh = back | ~active
        w = p.performance_weight
        self.perf = np.where(fresh, 0.0, (1 - w) * self.perf + w * ret)
        wealth = book.equity(mark, rows)
        flows = np.maximum(p.flow_sensitivity * (self.perf - p.benchmark) * wealth, -wealth)
        self._flow(rows, np.where(active & ~back & (wealth > 0), flows, 0.0))
        return active

    def orders(self, rows):
        self._setup(rows)
        book, market = self.model.book, self.model.market
        price, cap = float(market.price[0]), float(book.max_leverage[0])
        mark = np.array(market.price[:1])
        active = self._investors(rows, mark)
        wealth = book.equity(mark, rows)
        # leverage targeting, held back by the cap; sell out at the default floor
        value = float(market.fundamental[0])
        m = (value - price) / value  # the mispricing, relative (the paper's V is 1)
        want = np.minimum(self.betas * max(m, 0.0), cap)
        self.capped += int((active & (self.betas * m > cap)).any())
        alive = active & (wealth > self.params.floor * self.w0)
        self.defaulting = active & ~alive
        target = np.where(alive, want * wealth / price, 0.0)
        self.last_wealth = np.where(active, np.maximum(wealth, 0.0), 0.0)
        dq = np.zeros((len(rows), book.n_assets))
        dq[:, 0] = target - book.qty[rows, 0]
        return self._below_value(dq)

    def _below_value(self, dq):
        """Value funds buy below the value only: their buys are scaled down (bisection on
        the batch's price) so that the batch does not fill above ``V``. Sized at the opening
        price, the funds' orders could otherwise, when several re-enter at once, bid for more
        than the noise trader holds."""
        market = self.model.market
        value = float(market.fundamental[0])
        buys, sells = np.maximum(dq, 0.0), np.minimum(dq, 0.0)
        if not buys.any() or market.quote(-(dq.sum(axis=0)))[0] <= value:
            return dq
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if market.quote(-(mid * buys + sells).sum(axis=0))[0] <= value:
                lo = mid
            else:
                hi = mid
        return lo * buys + sells
