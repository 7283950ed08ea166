"""Real-event scenarios: compare a stylised replay with the figures reported for the event.

A scenario config (``experiments/configs/oct-2025.toml`` and the others) carries a
``[scenario]`` table with the reported figures; ``contagion run`` prints this comparison:

* liquidated share: liquidated notional (ADL fills excluded) over the open interest at the
  start; open interest is one side of every position, the market agent's included, at the
  initial prices (``(sum_i |q_ia| + |inventory_a|) P0_a / 2``), as data vendors count it;
* price drop: each asset's largest peak-to-trough fall of the market price in the run;
* low: an asset's lowest market price in the run (a collateral asset's depeg, say), for the
  assets whose reported low ``scenario.low`` gives.

The reported figures are stylised targets (aggregator data undercounts liquidations), so the
comparison reads as "same order, same ranking across assets", not as a fit.
"""

from __future__ import annotations

import numpy as np

from model.fills import liquidation_fills

__all__ = ["initial_open_interest", "liquidated_share", "scenario_comparison", "scenario_report"]


def initial_open_interest(model) -> float:
    """Open interest at the start, in quote currency: one side of every position."""
    pop = model.population
    p0 = model.market.initial_price
    gross = np.abs(pop.qty).sum(axis=0) + np.abs(pop.qty.sum(axis=0))  # traders + market agent
    return float((gross * p0).sum() / 2.0)


def liquidated_share(model) -> float:
    """Liquidated notional (without ADL fills and collateral sales) over the open interest at
    the start."""
    fills = model.engine.fills.columns()
    notional = float(fills["notional"][liquidation_fills(fills["kind"])].sum())
    oi = initial_open_interest(model)
    return notional / oi if oi > 0 else 0.0


def scenario_comparison(model, summary: dict | None = None) -> list[dict]:
    """Rows ``{"measure", "simulated", "reported", "unit"}`` (reported is None when not given;
    unit ``"share"`` for fractions, ``"price"`` for prices)."""
    sc = model.config.scenario
    if summary is None:
        summary = model.summary()
    rows = [
        {
            "measure": "liquidated share of open interest",
            "simulated": liquidated_share(model),
            "reported": None if sc is None else sc.liquidated_share,
            "unit": "share",
        }
    ]
    drops = summary["max_drawdown"]
    reported = {} if sc is None else sc.price_drop
    for sym in model.symbols:
        rows.append(
            {
                "measure": f"{sym} price drop",
                "simulated": float(drops[sym]),
                "reported": reported.get(sym),
                "unit": "share",
            }
        )
    prices = model.market_history.price
    for sym, low in ({} if sc is None else sc.low).items():
        j = model.symbols.index(sym)
        simulated = float(np.min(prices[:, j], initial=model.market.initial_price[j]))
        rows.append(
            {"measure": f"{sym} low", "simulated": simulated, "reported": low, "unit": "price"}
        )
    return rows


def scenario_report(model, summary: dict | None = None) -> str:
    """The comparison as text lines for the terminal."""
    sc = model.config.scenario
    title = sc.event if sc is not None and sc.event else model.config.name
    lines = [f"scenario {title}: simulated vs reported"]
    for row in scenario_comparison(model, summary):
        show = _price if row.get("unit") == "price" else _share
        rep = "not reported" if row["reported"] is None else show(row["reported"])
        lines.append(f"  {row['measure']}: {show(row['simulated'])} vs {rep}")
    return "\n".join(lines)


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


def _price(x: float) -> str:
    return f"{x:,.4g}"
