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
comparison reads as "same order, same ranking across assets", not as a fit. Where the event has
been calibrated (``experiments/calibrations/<name>/``, ``contagion calibrate``), each line also
shows the 90% interval of the posterior-predictive runs for that figure: what the model says
once its parameters are inferred from the reported figures, with their uncertainty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.fills import liquidation_fills

__all__ = [
    "CALIBRATIONS",
    "calibration_targets",
    "initial_open_interest",
    "liquidated_share",
    "posterior_predictive_interval",
    "scenario_comparison",
    "scenario_report",
]

# Shipped calibrations of the real events: <name>/predictive.parquet (contagion calibrate).
CALIBRATIONS = Path(__file__).resolve().parent / "calibrations"


def initial_open_interest(model) -> float:
    """Open interest at the start, in quote currency: one side of every position."""
    from model.results import open_interest

    return open_interest(model.population.qty, model.market.initial_price)


def liquidated_share(model) -> float:
    """Liquidated notional (without ADL fills and collateral sales) over the open interest at
    the start."""
    fills = model.engine.fills.columns()
    notional = float(fills["notional"][liquidation_fills(fills["kind"])].sum())
    oi = initial_open_interest(model)
    return notional / oi if oi > 0 else 0.0


def posterior_predictive_interval(name: str, metric: str) -> tuple[float, float] | None:
    """The 5% and 95% quantiles of ``metric`` over the posterior-predictive runs of the
    shipped calibration ``name`` (None when there is none, or it lacks the metric)."""
    path = CALIBRATIONS / name / "predictive.parquet"
    if not path.exists():
        return None
    table = pd.read_parquet(path)
    if metric not in table:
        return None
    x = table.loc[table["status"] == "ok", metric].to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    lo, hi = np.quantile(x, [0.05, 0.95], method="hazen")
    return float(lo), float(hi)


def calibration_targets(name: str) -> dict:
    """The reported figures a shipped calibration of ``name`` was fitted to (metric -> value
    or [low, high]), from its calibration.json; empty when there is none."""
    import json

    path = CALIBRATIONS / name / "calibration.json"
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("targets", {}))


def scenario_comparison(model, summary: dict | None = None) -> list[dict]:
    """Rows ``{"measure", "simulated", "reported", "metric", "unit"}`` (reported is None when
    not given; metric names the run metric the row is, None when it is none; unit ``"share"``
    for fractions, ``"price"`` for prices)."""
    sc = model.config.scenario
    if summary is None:
        summary = model.summary()
    rows = [
        {
            "measure": "liquidated share of open interest",
            "simulated": liquidated_share(model),
            "reported": None if sc is None else sc.liquidated_share,
            "metric": "liquidated_share",
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
                "metric": f"max_drawdown_{sym}",
                "unit": "share",
            }
        )
    prices = model.market_history.price
    for sym, low in ({} if sc is None else sc.low).items():
        j = model.symbols.index(sym)
        simulated = float(np.min(prices[:, j], initial=model.market.initial_price[j]))
        rows.append(
            {
                "measure": f"{sym} low",
                "simulated": simulated,
                "reported": low,
                "metric": None,
                "unit": "price",
            }
        )
    return rows


def scenario_report(model, summary: dict | None = None) -> str:
    """The comparison as text lines for the terminal."""
    sc = model.config.scenario
    title = sc.event if sc is not None and sc.event else model.config.name
    if summary is None:
        summary = model.summary()
    lines = [f"scenario {title}: simulated vs reported"]
    name = model.config.name
    rows = scenario_comparison(model, summary)
    bands = []  # the posterior-predictive interval of each line that has one
    for row in rows:
        show = _price if row["unit"] == "price" else _share
        rep = "not reported" if row["reported"] is None else show(row["reported"])
        band = row["metric"] and posterior_predictive_interval(name, row["metric"])
        bands.append(band)
        lines.append(f"  {row['measure']}: {show(row['simulated'])} vs {rep}" + _band_text(band))
    shown = {row["metric"] for row in rows}
    for metric, observed in calibration_targets(name).items():
        if metric in shown or not isinstance(summary.get(metric), (int, float)):
            continue  # per-asset drawdowns are nested in the summary and shown above
        rep = _share_range(observed) if isinstance(observed, list) else _share(observed)
        band = posterior_predictive_interval(name, metric)
        bands.append(band)
        lines.append(f"  {metric}: {_share(summary[metric])} vs {rep}" + _band_text(band))
    calibrated = any(bands)
    if calibrated:
        lines.append(
            f"  posterior predictive: {CALIBRATIONS.name}/{name}/report.md (contagion calibrate)"
        )
    return "\n".join(lines)


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


def _share_range(pair) -> str:
    return f"{100 * pair[0]:.1f}-{100 * pair[1]:.1f}%"


def _band_text(band) -> str:
    """`` (posterior predictive 90%: 1.5-19.5%)``, or nothing without a band."""
    return f" (posterior predictive 90%: {_share_range(band)})" if band else ""


def _price(x: float) -> str:
    return f"{x:,.4g}"
