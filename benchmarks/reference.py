"""A per-agent reference: the one-asset liquidation scenario written the way a Mesa user would.

One :class:`MarginTrader` agent per account holds its own wallet, quantity and entry price and
checks its own margin in Python; each liquidation round loops over every agent. The market is
the same price-impact rule as :class:`agents.market.Market` (docs/design.md, "Market impact")
with a deterministic fundamental (scheduled shocks only), and liquidation follows the engine's
rules for one cross-margined asset with ``full`` liquidation: close the position at the price
after the round's batch, pay the fee from what equity remains, send negative equity to the
insurance fund and what it cannot pay to unfunded bad debt.

:func:`scenario` (a shock every few steps) and :func:`sliding_scenario` (a shock every step,
cascades in most steps) build the accounts and shocks once; :func:`engine_model` turns them into a
:class:`model.ContagionModel` and :class:`ReferenceModel` runs the same thing agent by agent.
The benchmark runs both side by side and checks that they liquidate the same accounts in the
same rounds and end at the same prices (tests/test_benchmarks.py does the same at small size).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import mesa
import numpy as np

from model.config import build_config
from model.population import Population

__all__ = [
    "MarginTrader",
    "ReferenceModel",
    "Scenario",
    "engine_model",
    "scenario",
    "sliding_scenario",
]


@dataclass
class Scenario:
    """Accounts, market and shocks shared by the engine and the reference."""

    wallet: np.ndarray  # (n,) collateral
    qty: np.ndarray  # (n,) signed quantity
    entry: np.ndarray  # (n,) entry price
    price: float = 60000.0
    depth: float = 2.0e7  # quote notional that moves the price 1%
    impact_exponent: float = 0.5
    resilience: float = 0.1
    maintenance: float = 0.005
    fee: float = 0.005
    insurance_fund: float = 1.0e6
    max_rounds: int = 100
    steps: int = 50
    shocks: tuple[tuple[int, float], ...] = ()  # (step, return)

    @property
    def n_traders(self) -> int:
        return self.wallet.size


def scenario(n: int, *, steps: int = 50, seed: int = 1) -> Scenario:
    """A crowded one-asset market: ``n`` accounts at 2x to 60x, shocks every few steps.

    The book's depth grows with ``n`` so that the cascades have a similar shape at every
    size: a shock liquidates the most leveraged accounts, whose selling takes a few more.
    """
    rng = np.random.default_rng(seed)
    sc = _accounts(n, rng)
    shocks = []
    for t in range(5, steps + 1, 7):
        shocks.append((t, float(rng.choice([-1.0, 1.0], p=[0.7, 0.3]) * rng.uniform(0.01, 0.04))))
    return dataclasses.replace(sc, steps=steps, shocks=tuple(shocks))


def sliding_scenario(
    n: int, *, steps: int = 200, seed: int = 1, drift: float = -0.003, volatility: float = 0.002
) -> Scenario:
    """The accounts of :func:`scenario` in a sliding market: a shock every step.

    Every step's log return is ``drift + volatility * z`` (``z`` standard normal): by default
    the price falls about 0.3% a step, faster than the impact of the last cascade recovers,
    so most steps make a new low and start a cascade (at 100,000 traders and 200 steps: 160
    steps with liquidations, several rounds each, about 64,000 liquidations). The steady
    slide also moves prices past the margin screen's horizon again and again, so the run
    pays for screen rebuilds as well as for cascades.
    """
    rng = np.random.default_rng(seed)
    sc = _accounts(n, rng)
    returns = np.expm1(drift + volatility * rng.standard_normal(steps))
    shocks = tuple((t, float(returns[t - 1])) for t in range(1, steps + 1))
    return dataclasses.replace(sc, steps=steps, shocks=shocks)


def _accounts(n: int, rng) -> Scenario:
    """``n`` accounts at 2x to 60x (65% long) around one price, and a book deep in ``n``."""
    price = 60000.0
    collateral = 1000.0 * (rng.pareto(1.5, n) + 1.0)
    leverage = np.exp(rng.uniform(np.log(2.0), np.log(60.0), n))
    side = np.where(rng.random(n) < 0.65, 1.0, -1.0)
    entry = price * np.exp(rng.normal(0.0, 0.01, n))
    qty = side * leverage * collateral / entry
    return Scenario(wallet=collateral, qty=qty, entry=entry, price=price, depth=2.0e7 * n / 1e4)


# --------------------------------------------------------------------------------------------
# The engine's side
# --------------------------------------------------------------------------------------------


def engine_model(sc: Scenario, **kwargs):
    """A :class:`model.ContagionModel` of the scenario (keyword arguments go to it)."""
    from model import ContagionModel

    cfg = build_config(
        {
            "name": "reference-scenario",
            "seed": 1,
            "steps": sc.steps,
            "market": {
                "volatility": 0.0,
                "correlation": 0.0,
                "impact_exponent": sc.impact_exponent,
                "resilience": sc.resilience,
            },
            "assets": [
                {"symbol": "BTC", "price": sc.price, "depth": sc.depth, "max_leverage": 100.0}
            ],
            "traders": {"count": sc.n_traders},
            "margin": {
                "mode": "cross",
                "maintenance": sc.maintenance,
                "liquidation": "full",
                "fee": sc.fee,
                "insurance_fund": sc.insurance_fund,
                "max_rounds": sc.max_rounds,
                "adl": False,
            },
            "shocks": [{"step": t, "asset": "BTC", "return": r} for t, r in sc.shocks],
        }
    )
    n = sc.n_traders
    population = Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=sc.wallet.copy(),
        qty=sc.qty[:, None].copy(),
        entry=sc.entry[:, None].copy(),
        isolated=np.zeros((n, 1), dtype=bool),
        margin=np.zeros((n, 1)),
        strategy=np.full(n, "hold", dtype=object),
    )
    return ContagionModel(cfg, population=population, **kwargs)


def engine_events(model) -> list[tuple[int, int, int]]:
    """(step, round, trader_id) of every liquidation the engine made, in order."""
    cols = model.engine.fills.columns()
    return list(
        zip(cols["step"].tolist(), cols["round"].tolist(), cols["trader_id"].tolist(), strict=True)
    )


# --------------------------------------------------------------------------------------------
# The per-agent reference
# --------------------------------------------------------------------------------------------


class MarginTrader(mesa.Agent):
    """One cross-margined account in one asset, with its own margin check."""

    def __init__(self, model, trader_id: int, wallet: float, qty: float, entry: float):
        super().__init__(model)
        self.trader_id = trader_id
        self.wallet = wallet
        self.qty = qty
        self.entry = entry

    def equity(self, price: float) -> float:
        return self.wallet + self.qty * (price - self.entry)

    def below_maintenance(self, price: float) -> bool:
        if self.qty == 0.0:
            return False
        return self.equity(price) < abs(self.qty) * price * self.model.maintenance

    def close_out(self, price: float) -> tuple[float, float]:
        """Close the whole position at ``price``; returns (fee paid, bad debt left)."""
        notional = abs(self.qty) * price
        self.wallet += self.qty * (price - self.entry)
        self.qty = 0.0
        self.entry = 0.0
        fee = min(max(self.model.fee * notional, 0.0), max(self.wallet, 0.0))
        self.wallet -= fee
        debt = max(-self.wallet, 0.0)
        self.wallet += debt
        return fee, debt


class ReferenceModel(mesa.Model):
    """The scenario stepped agent by agent: every round asks every agent for its margin."""

    def __init__(self, sc: Scenario):
        super().__init__(rng=1)
        self.maintenance = sc.maintenance
        self.fee = sc.fee
        self.max_rounds = sc.max_rounds
        self.depth_qty = sc.depth / sc.price
        self.beta = sc.impact_exponent
        self.resilience = sc.resilience
        self.shocks = dict(sc.shocks)
        self.log_fundamental = math.log(sc.price)
        self.impact = 0.0
        self.impact_start = 0.0
        self.flow = 0.0
        self.insurance_fund = sc.insurance_fund
        self.unfunded_bad_debt = 0.0
        self.events: list[tuple[int, int, int]] = []
        for i in range(sc.n_traders):
            MarginTrader(self, i, float(sc.wallet[i]), float(sc.qty[i]), float(sc.entry[i]))

    @property
    def price(self) -> float:
        return math.exp(self.log_fundamental + self.impact)

    def execute(self, flow: float) -> float:
        """Walk the book with this batch (sells positive); the price after it."""
        self.flow += flow
        x = self.flow
        sign = (x > 0) - (x < 0)
        self.impact = self.impact_start - 0.01 * sign * (abs(x) / self.depth_qty) ** self.beta
        return self.price

    def step(self) -> None:
        t = self.steps
        if t in self.shocks:
            self.log_fundamental += math.log(1.0 + self.shocks[t])
        self.impact = (1.0 - self.resilience) * self.impact
        self.impact_start = self.impact
        self.flow = 0.0
        for rnd in range(1, self.max_rounds + 1):
            price = self.price
            hit = [a for a in self.agents if a.below_maintenance(price)]
            if not hit:
                break
            price = self.execute(sum(a.qty for a in hit))
            debt = 0.0
            for a in hit:
                self.events.append((t, rnd, a.trader_id))
                fee, bad = a.close_out(price)
                self.insurance_fund += fee
                debt += bad
            paid = min(debt, self.insurance_fund)
            self.insurance_fund -= paid
            self.unfunded_bad_debt += debt - paid
