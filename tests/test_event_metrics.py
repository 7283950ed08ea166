"""The real-event metrics of summary.json (model.results.event_metrics), recomputed by hand
from the run folder's tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.config import build_config
from tests.helpers import small_config


def _oi(qty: np.ndarray, prices: np.ndarray) -> float:
    """One side of every position, the market agent (minus the traders' net) included."""
    total = 0.0
    for a in range(qty.shape[1]):
        traders = sum(abs(q) for q in qty[:, a])
        agent = abs(sum(qty[:, a]))
        total += (traders + agent) * prices[a] / 2
    return total


@pytest.mark.slow
def test_event_metrics_by_hand(tmp_path):
    data = small_config(steps=25, shocks=[{"step": 5, "asset": "BTC", "return": -0.3}])
    data["traders"] = {**data["traders"], "count": 300, "leverage": 25.0}
    data["margin"] = {**data["margin"], "insurance_fund": 10.0, "adl": True}
    m = ContagionModel(build_config(data), create_agents=False).run()
    folder = m.write_results(tmp_path / "run")
    s = json.loads((folder / "summary.json").read_text())
    fills = pd.read_parquet(folder / "liquidations.parquet")
    acc = pd.read_parquet(folder / "accounts.parquet")
    symbols = ["BTC", "ETH"]
    p0 = np.array([60000.0, 3000.0])
    q0 = acc[[f"initial_quantity_{x}" for x in symbols]].to_numpy()
    q1 = acc[[f"quantity_{x}" for x in symbols]].to_numpy()
    p1 = np.array([s["final_price"][x] for x in symbols])
    forced = fills[fills["kind"] != "adl"]
    adl = fills[fills["kind"] == "adl"]
    assert len(forced) > 0 and len(adl) > 0  # the case exercises every metric
    oi0 = _oi(q0, p0)
    liquidated = forced["notional"].sum()
    assert s["open_interest_start"] == pytest.approx(oi0, rel=1e-12)
    assert s["liquidated_share"] == pytest.approx(liquidated / oi0, rel=1e-12)
    longs = forced.loc[forced["quantity"] > 0, "notional"].sum()
    assert s["long_share_liquidated"] == pytest.approx(longs / liquidated, rel=1e-12)
    assert s["adl_share"] == pytest.approx(adl["notional"].sum() / liquidated, rel=1e-12)
    assert s["open_interest_drop"] == pytest.approx(1 - _oi(q1, p1) / oi0, rel=1e-9)
    assert s["insurance_fund_change"] == pytest.approx(s["insurance_fund_final"] / 10.0 - 1)


def test_event_metrics_without_liquidations_are_zero():
    data = small_config(steps=2, shocks=[])
    data["traders"] = {**data["traders"], "count": 50, "leverage": 1.5}
    s = ContagionModel(build_config(data), create_agents=False).run().summary()
    assert s["liquidations"] == 0
    for key in ("liquidated_share", "long_share_liquidated", "adl_share"):
        assert s[key] == 0.0
    assert s["open_interest_start"] > 0
