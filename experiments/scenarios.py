"""Real-event scenarios: compare a stylised replay with the figures reported for the event.

A scenario config (``experiments/configs/oct-2025.toml`` and the others) carries a
``[scenario]`` table with the reported figures; ``contagion run`` prints this comparison:

* liquidated share: liquidated notional (ADL fills excluded) over the open interest at the
  start; open interest is one side of every position, the market agent's included, at the
  initial prices (``(sum_i |q_ia| + |inventory_a|) P0_a / 2``), as data vendors count it;
* price drop: each asset's largest peak-to-trough fall of the market price in the run.

The reported figures are stylised targets (aggregator data undercounts liquidations), so the
comparison reads as "same order, same ranking across assets", not as a fit.
"""

from __future__ import annotations

from model.fills import Kind

__all__ = ["initial_open_interest", "liquidated_share", "scenario_comparison", "scenario_report"]


def initial_open_interest(model) -> float:
    """Open interest at the start, in quote currency: one side of every position."""
    from model.results import open_interest

    return open_interest(model.population.qty, model.market.initial_price)


def liquidated_share(model) -> float:
    """Liquidated notional (without ADL fills) over the open interest at the start."""
    fills = model.engine.fills.columns()
    notional = float(fills["notional"][fills["kind"] != Kind.ADL].sum())
    oi = initial_open_interest(model)
    return notional / oi if oi > 0 else 0.0


def scenario_comparison(model, summary: dict | None = None) -> list[dict]:
    """Rows ``{"measure", "simulated", "reported"}`` (reported is None when not given)."""
    sc = model.config.scenario
    if summary is None:
        summary = model.summary()
    rows = [
        {
            "measure": "liquidated share of open interest",
            "simulated": liquidated_share(model),
            "reported": None if sc is None else sc.liquidated_share,
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
            }
        )
    return rows


def scenario_report(model, summary: dict | None = None) -> str:
    """The comparison as text lines for the terminal."""
    sc = model.config.scenario
    title = sc.event if sc is not None and sc.event else model.config.name
    lines = [f"scenario {title}: simulated vs reported"]
    for row in scenario_comparison(model, summary):
        rep = "not reported" if row["reported"] is None else f"{100 * row['reported']:.1f}%"
        lines.append(f"  {row['measure']}: {100 * row['simulated']:.1f}% vs {rep}")
    return "\n".join(lines)
