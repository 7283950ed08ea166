"""ContagionModel: money conserved every step, determinism, Mesa agents as views."""

import hashlib

import numpy as np
import pytest

from agents.trader import Trader
from model import ContagionModel
from model.config import build_config
from tests.helpers import comparable_bytes, small_config

BTC_TIERS = [
    {"cap": 5e4, "rate": 0.004},
    {"cap": 2.5e5, "rate": 0.005},
    {"cap": 1e6, "rate": 0.01},
    {"cap": 1e7, "rate": 0.025},
]


@pytest.mark.parametrize(
    "margin",
    [
        {"mode": "cross", "liquidation": "partial"},
        {"mode": "cross", "liquidation": "full", "insurance_fund": 0.0},
        {"mode": "isolated", "liquidation": "partial"},
        {"mode": "isolated", "liquidation": "full", "insurance_fund": 100.0},
    ],
)
def test_money_is_conserved_every_step(margin):
    data = small_config(
        steps=40, margin=margin, traders={"count": 800, "leverage": 30.0, "assets_per_trader": 2}
    )
    data["assets"][0]["tiers"] = BTC_TIERS
    data["shocks"] = [
        {"step": 5, "asset": "BTC", "return": -0.12},
        {"step": 20, "asset": "ETH", "return": 0.15},
    ]
    m = ContagionModel(build_config(data))
    initial = m.money()["total"]
    collateral = m.population.collateral.sum() + m.config.margin.insurance_fund
    assert initial == pytest.approx(collateral, rel=1e-12)
    for _ in range(data["steps"]):
        m.step()
        total = m.money()["total"]
        assert abs(total - initial) <= 1e-9 * initial
    assert m.engine.liquidation_count.sum() > 0  # the shocks did liquidate


def test_same_seed_same_output_files(tmp_path):
    cfg = build_config(small_config(steps=25))

    def digest(folder):  # summary.json up to its provenance block (start time, versions)
        return {
            p.name: hashlib.sha256(comparable_bytes(p)).hexdigest()
            for p in sorted(folder.iterdir())
        }

    a = ContagionModel(cfg).run().write_results(tmp_path / "a")
    b = ContagionModel(cfg).run().write_results(tmp_path / "b")
    assert digest(a) == digest(b)
    c = ContagionModel(cfg, rng=cfg.seed + 1).run().write_results(tmp_path / "c")
    assert digest(c)["market.parquet"] != digest(a)["market.parquet"]


def test_traders_are_views_onto_the_book(small_cfg):
    m = ContagionModel(small_cfg)
    traders = m.agents_by_type[Trader]
    assert len(traders) == small_cfg.traders.count
    t = traders.select(lambda a: a.row == 3).to_list()[0]
    assert t.wallet == m.book.wallet[3]
    assert t.equity == pytest.approx(m.book.equity(m.mark)[3])
    m.run()
    liquidated = traders.select(lambda a: a.liquidated)
    assert len(liquidated) == int((m.liquidation_count > 0).sum()) > 0


def test_steps_count_from_one_and_shock_lands_on_its_step():
    data = small_config(
        steps=3,
        market={"volatility": 0.0},
        traders={"count": 10, "leverage": 1.5},
        shocks=[{"step": 1, "asset": "ETH", "return": -0.25}],
    )
    m = ContagionModel(build_config(data))
    m.step()
    assert m.steps == 1
    assert m.market.fundamental[1] == pytest.approx(3000 * 0.75)
    assert m.market.fundamental[0] == pytest.approx(60000)


def test_datacollector_series_match_the_fills(small_cfg):
    m = ContagionModel(small_cfg).run()
    steps = m.tables()["steps"]
    fills = m.tables()["liquidations"]
    per_step = fills.groupby("step").size().reindex(steps["step"], fill_value=0).to_numpy()
    np.testing.assert_array_equal(steps["liquidations"].to_numpy(), per_step)
    np.testing.assert_allclose(steps["liquidated_notional"].sum(), fills["notional"].sum())
