"""Collateral assets: haircut arithmetic by hand, the collateral spiral worked out to the cent,
the sale's fixed point, generated mixes, population rows, presets and bad input.

Every expected number below is computed in the test from the formulas of model/collateral.py's
docstring (closed forms, a bisection of our own), never from what the engine printed.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.cli import main
from model import ContagionModel, schema
from model.accounts import AccountBook, TierTable
from model.collateral import (
    COVER_MARGIN,
    CollateralAssets,
    auto_exchange,
    exchange_needs,
    sale_price,
)
from model.config import ConfigError, build_config
from model.population import Population, generate_population, read_population
from tests.helpers import small_config

# --------------------------------------------------------------------------------------------
# Haircut arithmetic
# --------------------------------------------------------------------------------------------


def one_book(wallet, qty, entry, holdings, haircut=(0.05, 0.10), rate=0.01):
    """Accounts over BTC (perpetual) and two collateral assets, flat maintenance ``rate``."""
    coll = CollateralAssets(np.array([1, 2]), np.array(haircut), ("USDe", "wBETH"))
    n = len(wallet)
    q = np.zeros((n, 3))
    e = np.zeros((n, 3))
    q[:, 0], e[:, 0] = qty, entry
    return AccountBook(
        np.arange(n),
        wallet,
        q,
        e,
        TierTable.flat([rate, 0.0, 0.0]),
        collateral=coll,
        holdings=np.asarray(holdings, dtype=float),
    )


def test_haircut_value_counts_toward_margin_and_full_value_toward_money():
    # 100 cash, 1,000 USDe at 0.98 (5% haircut), 0.5 wBETH at 4,000 (10% haircut), long 1 BTC
    # from 60,000 marked at 59,000
    book = one_book([100.0], [1.0], [60000.0], [[1000.0, 0.5]])
    mark = np.array([59000.0, 0.98, 4000.0])
    margin_value = 1000 * 0.98 * 0.95 + 0.5 * 4000 * 0.90  # 931 + 1,800
    market_value = 1000 * 0.98 + 0.5 * 4000  # 980 + 2,000
    upnl = 1.0 * (59000 - 60000)
    assert book.cross_equity(mark)[0] == pytest.approx(100 + margin_value + upnl, abs=1e-9)
    assert book.equity(mark)[0] == pytest.approx(100 + market_value + upnl, abs=1e-9)
    assert book.total_equity(mark) == pytest.approx(100 + market_value + upnl, abs=1e-9)
    assert book.aggregate_equity(mark) == pytest.approx(100 + market_value + upnl, abs=1e-9)
    # maintenance 1% of 59,000 = 590 against 1,831 of margin equity
    assert book.margin_ratio(mark)[0] == pytest.approx(590.0 / 1831.0, rel=1e-12)
    assert not book.cross_liquidatable(mark)[0]
    # the same account with USDe at 0.5: 475 + 1,800 + 100 - 1,000 = 1,375 > 590, still safe;
    # with wBETH at 0 as well: 475 + 100 - 1,000 < 0 < 590: under
    assert not book.cross_liquidatable(np.array([59000.0, 0.5, 4000.0]))[0]
    assert book.cross_liquidatable(np.array([59000.0, 0.5, 1e-9]))[0]


def test_liquidation_and_bankruptcy_prices_hold_the_collateral_at_the_mark():
    # Long 1 BTC from 60,000, 100 cash, 10,000 USDe at 1 with a 5% haircut, rate 1%:
    # 100 + 9,500 + (P - 60,000) = 0.01 P  =>  P = 50,400 / 0.99; bankrupt at 50,400.
    book = one_book([100.0], [1.0], [60000.0], [[10000.0, 0.0]])
    mark = np.array([60000.0, 1.0, 4000.0])
    lp = book.liquidation_price(mark)[0, 0]
    assert lp == pytest.approx(50400.0 / 0.99, rel=1e-12)
    assert book.bankruptcy_price(mark)[0, 0] == pytest.approx(50400.0, rel=1e-12)
    # at that price the account is exactly at its boundary
    at = np.array([lp, 1.0, 4000.0])
    assert book.cross_equity(at)[0] == pytest.approx(book.cross_maintenance(at)[0], rel=1e-12)
    # collateral worth less moves the liquidation price up: USDe at 0.9 gives 8,550
    lower = book.liquidation_price(np.array([60000.0, 0.9, 4000.0]))[0, 0]
    assert lower == pytest.approx((60000.0 - 100.0 - 8550.0) / 0.99, rel=1e-12)


def test_isolated_positions_take_none_of_the_holdings():
    book = one_book([0.0], [1.0], [60000.0], [[1e6, 0.0]])
    iso = np.zeros((1, 3), bool)
    iso[0, 0] = True
    book.set_isolated(np.array([0]), iso)
    book.move_to_margin(np.array([0]), np.array([[0.0, 0.0, 0.0]]))
    mark = np.array([59000.0, 1.0, 4000.0])
    # the isolated long has no margin: under at once, whatever the holdings
    assert book.isolated_liquidatable(mark)[0, 0]
    assert not book.cross_liquidatable(mark)[0]  # no cross position


def test_a_sale_moves_holdings_to_cash_at_the_price_and_keeps_the_aggregates():
    book = one_book([-50.0, 10.0], [0.0, 0.0], [0.0, 0.0], [[100.0, 1.0], [0.0, 2.0]])
    mark = np.array([60000.0, 0.9, 3000.0])
    total = book.aggregate_equity(mark)  # computed, then kept by the sale
    book.sell_collateral(np.array([0]), np.array([[60.0, 0.5]]), np.array([0.9, 3000.0]))
    assert book.holdings[0].tolist() == [40.0, 0.5]
    assert book.wallet[0] == pytest.approx(-50.0 + 54.0 + 1500.0, abs=1e-12)
    # a sale at the mark changes nobody's money
    assert book.aggregate_equity(mark) == pytest.approx(total, abs=1e-9)
    assert book.total_equity(mark) == pytest.approx(total, abs=1e-9)


# --------------------------------------------------------------------------------------------
# The sale's price: pro rata needs, the fixed point
# --------------------------------------------------------------------------------------------


def test_needs_are_split_in_proportion_to_market_value():
    need = exchange_needs(
        np.array([300.0, 50.0, 10.0]),
        np.array([[100.0, 1.0], [0.0, 3.0], [0.0, 0.0]]),
        np.array([1.0, 200.0]),
    )
    # account 0 holds 100 + 200 of value: a third and two thirds of 300
    np.testing.assert_allclose(need, [[100.0, 200.0], [0.0, 50.0], [0.0, 0.0]], rtol=1e-15)


def bisect(f, lo, hi, iterations=200):
    """The root of ``f`` between ``lo`` (f > 0) and ``hi`` (f < 0), by bisection."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def test_sale_price_is_the_fixed_point_of_the_book_walk():
    # one asset at 1.0, 1% per 1,000 units (linear in log price); two sellers raising 300 and
    # 500 from holdings of 1,000 and 400: the second one's holding binds
    d = 1000.0

    def quote(flow):
        return np.exp(-0.01 * np.asarray(flow) / d)

    holdings = np.array([[1000.0], [400.0]])
    need = np.array([[300.0], [500.0]])
    sold, p, ok = sale_price(quote, 1, np.array([0]), holdings, need, np.array([1.0]))
    assert ok.all()

    # p = exp(-0.01 (min(1000, 300 / p) + min(400, 500 / p)) / d); at p near 0.99 the second
    # seller sells all 400
    def gap(x):
        return math.exp(-0.01 * (min(1000, 300 / x) + min(400, 500 / x)) / d) - x

    expected = bisect(gap, 0.5, 1.0)
    assert p[0] == pytest.approx(expected, rel=1e-12)
    assert sold[1, 0] == 400.0
    assert sold[0, 0] == pytest.approx(300.0 / expected, rel=1e-12)


def test_a_spiral_beyond_the_book_sells_everything():
    # a thin book: raising 900 from 1,000 units moves the price far below 0.9, so no price
    # covers it; the walk ends with every unit sold
    def quote(flow):
        return np.exp(-0.01 * np.asarray(flow) / 10.0)

    sold, p, _ = sale_price(
        quote, 1, np.array([0]), np.array([[1000.0]]), np.array([[900.0]]), np.array([1.0])
    )
    assert sold[0, 0] == 1000.0
    assert p[0] == pytest.approx(math.exp(-1.0), rel=1e-12)


# --------------------------------------------------------------------------------------------
# The collateral spiral, worked out by hand
# --------------------------------------------------------------------------------------------


def spiral_config(**margin):
    return build_config(
        {
            "name": "spiral",
            "seed": 1,
            "steps": 1,
            "market": {
                "volatility": 0.0,
                "correlation": 0.0,
                "impact_exponent": 1.0,
                "resilience": 0.0,
            },
            "assets": [
                {"symbol": "BTC", "price": 100.0, "depth": 1e6},
                {"symbol": "ETH", "price": 100.0, "depth": 1e6},
                {
                    "symbol": "USDe",
                    "price": 1.0,
                    "depth": 5000.0,
                    "kind": "collateral",
                    "haircut": 0.05,
                },
            ],
            "traders": {"count": 2},
            "margin": {
                "mode": "cross",
                "liquidation": "full",
                "fee": 0.0,
                "maintenance": 0.05,
                "insurance_fund": 1e6,
                "adl": False,
                **margin,
            },
            "shocks": [{"step": 1, "asset": "BTC", "return": -0.15}],
        }
    )


def spiral_population():
    """A: no cash, 2,000 USDe, long 100 BTC from 100. B: no cash, 10,000 USDe, long 1,898 ETH
    from 100 (maintenance 9,490 against 9,500 of USDe at 1: just safe)."""
    return Population(
        np.array([1, 2]),
        np.zeros(2),
        np.array([[100.0, 0.0, 0.0], [0.0, 1898.0, 0.0]]),
        np.array([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]]),
        np.zeros((2, 3), bool),
        np.zeros((2, 3)),
        np.array(["hold", "hold"], dtype=object),
        holdings=np.array([[2000.0], [10000.0]]),
    )


def hand_spiral():
    """The spiral by hand: BTC falls 15%; A (equity 1,900 - 1,500 = 400 < 425) is liquidated
    in round 1, its BTC sale walks BTC's book, its wallet goes negative and it sells USDe at
    the price after its own sale; USDe's fall takes B under in round 2; B's ETH sale leaves
    its wallet negative and it sells USDe further down the same book."""
    d_perp, d_usde, eps = 1e6 / 100.0, 5000.0, COVER_MARGIN  # units per 1% move
    btc = 85.0 * math.exp(-0.01 * 100.0 / d_perp)
    deficit_a = -(100.0 * (btc - 100.0))

    def walk(x0, deficit):
        return bisect(
            lambda p: math.exp(-0.01 * (x0 + deficit * (1 + eps) / p) / d_usde) - p, 0.5, 1.0
        )

    p1 = walk(0.0, deficit_a)
    sold_a = deficit_a * (1 + eps) / p1
    eth = 100.0 * math.exp(-0.01 * 1898.0 / d_perp)
    deficit_b = -(1898.0 * (eth - 100.0))
    p2 = walk(sold_a, deficit_b)
    sold_b = deficit_b * (1 + eps) / p2
    return {
        "btc": btc,
        "eth": eth,
        "p1": p1,
        "p2": p2,
        "deficit_a": deficit_a,
        "deficit_b": deficit_b,
        "sold_a": sold_a,
        "sold_b": sold_b,
    }


def test_the_collateral_spiral_to_the_cent():
    h = hand_spiral()
    # B was safe at USDe = 1 and is under at the price after A's sale (the spiral's link)
    assert 10000 * 1.0 * 0.95 > 0.05 * 1898 * 100
    assert 10000 * h["p1"] * 0.95 < 0.05 * 1898 * 100
    m = ContagionModel(spiral_config(), population=spiral_population())
    money = m.initial_money
    m.step()
    fills = m.tables()["liquidations"]
    got = [(r.round, r.trader_id, r.asset, r.kind) for r in fills.itertuples()]
    assert got == [
        (1, 1, "BTC", "full"),
        (1, 1, "USDe", "collateral"),
        (2, 2, "ETH", "full"),
        (2, 2, "USDe", "collateral"),
    ]
    q = fills["quantity"].to_numpy()
    price = fills["price"].to_numpy()
    assert price[0] == pytest.approx(h["btc"], abs=1e-9)
    assert price[1] == pytest.approx(h["p1"], abs=1e-12)
    assert price[2] == pytest.approx(h["eth"], abs=1e-9)
    assert price[3] == pytest.approx(h["p2"], abs=1e-12)
    # proceeds cover each deficit to the cent, with the cover margin's billionth on top
    assert q[1] * price[1] == pytest.approx(h["deficit_a"], abs=0.005)
    assert q[3] * price[3] == pytest.approx(h["deficit_b"], abs=0.005)
    assert q[1] == pytest.approx(h["sold_a"], abs=1e-6)
    assert q[3] == pytest.approx(h["sold_b"], abs=1e-6)
    book = m.book
    np.testing.assert_allclose(book.wallet, [0.0, 0.0], atol=0.005)
    assert (book.wallet >= 0).all()  # nothing left to write off
    np.testing.assert_allclose(
        book.holdings[:, 0], [2000.0 - h["sold_a"], 10000.0 - h["sold_b"]], atol=1e-6
    )
    assert m.summary()["bad_debt"] == 0.0
    # USDe's market: the walk of both sales, the market agent on the other side
    market = m.tables()["market"].set_index("asset")
    assert market.loc["USDe", "price"] == pytest.approx(h["p2"], abs=1e-12)
    assert market.loc["USDe", "forced_flow"] == pytest.approx(h["sold_a"] + h["sold_b"], 1e-9)
    # money: traders + fund + market agent, unchanged to rounding
    assert m.money()["total"] == pytest.approx(money, abs=1e-6)
    # the contagion graph: B hangs from A, whose USDe sale took it under
    edges = m.recorder.edges_table()
    b = edges[edges["target"] == 2]
    assert b["source"].tolist() == [1] and b["weight"].tolist() == [1.0]
    assert b["round"].tolist() == [2]


def test_a_trader_agent_shows_its_holdings():
    m = ContagionModel(spiral_config(), population=spiral_population())
    assert m.trader(1).holdings == {"USDe": 2000.0}
    assert m.trader(2).equity == pytest.approx(10000.0)  # holdings at full value, flat ETH
    m.step()
    assert m.trader(1).holdings["USDe"] == pytest.approx(2000.0 - hand_spiral()["sold_a"], 1e-9)


def test_what_the_collateral_cannot_cover_is_bad_debt():
    # A holds only 1,000 USDe against a deficit of about 1,500: it sells everything, the
    # rest is bad debt paid by the fund
    pop = spiral_population()
    pop.holdings = np.array([[1000.0], [10000.0]])
    pop.qty[1, 1] = 0.0  # B out of the way
    m = ContagionModel(spiral_config(), population=pop)
    m.step()
    h = hand_spiral()
    p = math.exp(-0.01 * 1000.0 / 5000.0)  # the whole holding walks the book
    fills = m.tables()["liquidations"]
    sale = fills[fills["kind"] == "collateral"]
    assert sale["quantity"].tolist() == [1000.0]
    assert sale["price"].iloc[0] == pytest.approx(p, rel=1e-12)
    assert m.book.holdings[0, 0] == 0.0
    bad = h["deficit_a"] - 1000.0 * p
    assert m.summary()["bad_debt"] == pytest.approx(bad, abs=0.005)
    assert m.engine.fund_paid == pytest.approx(bad, abs=0.005)
    assert m.book.wallet[0] == 0.0


def test_sales_are_pro_rata_over_several_collateral_assets():
    # long 20 BTC from 100 with no cash, 175 USDe at 1 and 0.175 wBETH at 3,000 (haircuts
    # 10%): BTC at 70 leaves 630 - 600 = 30 < 70 of maintenance. The 600 deficit is raised a
    # quarter from USDe and three quarters from wBETH (their shares of the 700 of value), each
    # at its own book's price after the sale
    data = {
        "name": "two",
        "steps": 1,
        "market": {"volatility": 0.0, "impact_exponent": 1.0},
        "assets": [
            {"symbol": "BTC", "price": 100.0, "depth": 1e12},
            {"symbol": "USDe", "price": 1.0, "depth": 1e3, "kind": "collateral", "haircut": 0.1},
            {
                "symbol": "wBETH",
                "price": 3000.0,
                "depth": 3e4,
                "kind": "collateral",
                "haircut": 0.1,
            },
        ],
        "traders": {"count": 1, "assets_per_trader": 1},
        "margin": {"liquidation": "full", "fee": 0.0, "maintenance": 0.05, "adl": False},
        "shocks": [{"step": 1, "asset": "BTC", "return": -0.3}],
    }
    pop = Population(
        np.array([7]),
        np.zeros(1),
        np.array([[20.0, 0.0, 0.0]]),
        np.array([[100.0, 0.0, 0.0]]),
        np.zeros((1, 3), bool),
        np.zeros((1, 3)),
        np.array(["hold"], dtype=object),
        holdings=np.array([[175.0, 0.175]]),
    )
    m = ContagionModel(build_config(data), population=pop)
    m.step()
    btc = 70.0 * math.exp(-0.01 * 20.0 / 1e10)  # BTC's book: 1e10 units per 1%
    deficit = -(20.0 * (btc - 100.0)) * (1 + COVER_MARGIN)
    fills = m.tables()["liquidations"].set_index("asset")
    for sym, share, p0, units in (("USDe", 0.25, 1.0, 1e3), ("wBETH", 0.75, 3000.0, 10.0)):
        need = deficit * share
        p = bisect(
            lambda x, p0=p0, need=need, units=units: p0 * math.exp(-0.01 * need / x / units) - x,
            0.5 * p0,
            p0,
        )
        assert fills.loc[sym, "price"] == pytest.approx(p, rel=1e-10)
        assert fills.loc[sym, "notional"] == pytest.approx(need, rel=1e-10)
        assert fills.loc[sym, "kind"] == "collateral"
    assert 0 < m.book.wallet[0] <= 600.0 * 2e-9


def test_an_account_short_of_one_asset_sells_the_rest_from_the_others():
    # 1,000 to raise from 100 USDe at 1 and 1 wBETH at 1,000: USDe's share, 1,000 / 11 = 90.9,
    # needs more than its 100 units once its thin book (1% per 10 units) has moved 10%: it is
    # sold out in the first pass, and the rest comes from wBETH in a second
    book = one_book([-1000.0], [0.0], [0.0], [[100.0, 1.0]], haircut=(0.0, 0.0))

    class Market:
        """Three assets, linear in log price; USDe's book moves 1% per 10 units."""

        n_assets = 3
        start = np.array([100.0, 1.0, 1000.0])
        units = np.array([1e6, 10.0, 1e6])
        flow = np.zeros(3)

        @property
        def price(self):
            return self.start * np.exp(-0.01 * self.flow / self.units)

        def quote(self, f, forced=False):
            return self.start * np.exp(-0.01 * (self.flow + f) / self.units)

        def execute(self, f, forced=False):
            self.flow = self.flow + f
            return self.price

        def take_other_side(self, dq, p):
            pass

    passes = auto_exchange(book, Market(), np.array([0]))
    assert len(passes) == 2
    assert passes[0].sold[0, 0] == 100.0  # USDe sold out first
    assert passes[0].price[0] == pytest.approx(math.exp(-0.1), rel=1e-12)
    assert passes[1].sold[0, 0] == 0.0 and passes[1].sold[0, 1] > 0
    raised = 100.0 * math.exp(-0.1) + sum(p.sold[0, 1] * p.price[1] for p in passes)
    assert raised == pytest.approx(1000.0, rel=1e-8)
    assert book.holdings[0, 0] == 0.0
    assert 0 <= book.wallet[0] <= 1000.0 * 2e-9


# --------------------------------------------------------------------------------------------
# Money, outputs, the screen
# --------------------------------------------------------------------------------------------


def collateral_config(**traders):
    data = small_config(
        steps=40,
        traders={
            "count": 1500,
            "leverage": 10.0,
            "collateral_assets": {"USDe": 0.4},
            "collateral_concentration": 0.5,
            **traders,
        },
        shocks=[
            {"step": 10, "asset": "BTC", "return": -0.08},
            {"step": 20, "asset": "ETH", "return": -0.10},
        ],
    )
    data["assets"].append(
        {
            "symbol": "USDe",
            "price": 1.0,
            "depth": 3e4,
            "kind": "collateral",
            "haircut": 0.05,
            "volatility": 0.02,
        }
    )
    data["market"]["correlation"] = 0.0
    return build_config(data)


def test_money_is_conserved_every_step_and_the_outputs_show_the_collateral(tmp_path):
    cfg = collateral_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, create_agents=False)
        money = m.initial_money
        # initial money: the cash plus the holdings at the initial price (plus the fund)
        held = m.population.holdings[:, 0].sum() * 1.0
        assert money == pytest.approx(m.population.collateral.sum() + held + 1e5, rel=1e-12)
        for _ in range(cfg.steps):
            m.step()
            assert abs(m.money()["total"] - money) <= 1e-9 * money
        m.write_results(tmp_path)
    fills = pd.read_parquet(tmp_path / "liquidations.parquet")
    sales = fills[fills["kind"] == "collateral"]
    assert len(sales) > 50 and (sales["asset"] == "USDe").all()
    assert (sales["quantity"] > 0).all() and (sales["fee"] == 0).all()
    accounts = pd.read_parquet(tmp_path / "accounts.parquet")
    assert {"initial_holding_USDe", "holding_USDe"} <= set(accounts.columns)
    assert "quantity_USDe" not in accounts.columns  # no position in a collateral asset
    sold = sales.groupby("trader_id")["quantity"].sum()
    change = accounts.set_index("trader_id")
    change = change["initial_holding_USDe"] - change["holding_USDe"]
    np.testing.assert_allclose(change.reindex(sold.index), sold, rtol=1e-9, atol=1e-9)
    steps = pd.read_parquet(tmp_path / "steps.parquet")
    assert steps["collateral_sold_notional"].sum() == pytest.approx(sales["notional"].sum())
    summary = m.summary()
    assert summary["collateral_sold_notional"] == pytest.approx(sales["notional"].sum())
    # liquidation counts leave the sales out
    assert summary["liquidations"] == int((~fills["kind"].isin(["adl", "collateral"])).sum())
    market = pd.read_parquet(tmp_path / "market.parquet")
    low = market[market["asset"] == "USDe"]["price"].min()
    assert summary["collateral_low"]["USDe"] == pytest.approx(min(low, 1.0))
    # every file's columns are those docs/outputs.md declares (model/schema.py)
    symbols = list(m.symbols)
    for table in (schema.STEPS, schema.LIQUIDATIONS, schema.ACCOUNTS, schema.MARKET):
        name = table.file.removesuffix(".parquet")
        frame = pd.read_parquet(tmp_path / table.file)
        assert schema.check_table(table, frame, symbols) == [], name
    assert schema.check_json(schema.SUMMARY, json.loads(json.dumps(summary)), symbols) == []


def test_generated_mixes_have_the_configured_shares():
    cfg = collateral_config(count=40000)
    pop = generate_population(cfg, np.random.default_rng(3))
    value = pop.holdings[:, 0] * 1.0  # at the initial price
    total = pop.wallet + value
    # every account's collateral is its cash plus its holdings, its mix a Beta(0.2, 0.3) draw
    share = value / total
    assert share.min() >= 0 and share.max() <= 1
    assert share.mean() == pytest.approx(0.4, abs=0.01)
    assert share.var() == pytest.approx(0.4 * 0.6 / 1.5, abs=0.01)  # Beta variance
    # the positions are those of the same config without collateral assets
    plain = build_config(small_config(traders={"count": 40000, "leverage": 10.0}))
    ref = generate_population(plain, np.random.default_rng(3))
    np.testing.assert_array_equal(pop.qty[:, :2], ref.qty)
    np.testing.assert_allclose(total, ref.wallet, rtol=1e-12)
    assert (pop.qty[:, 2] == 0).all()


def test_a_large_concentration_gives_everyone_the_mean_mix_and_a_full_share_no_cash():
    pop = generate_population(
        collateral_config(collateral_concentration=1e6), np.random.default_rng(1)
    )
    share = pop.holdings[:, 0] / (pop.wallet + pop.holdings[:, 0])
    np.testing.assert_allclose(share, 0.4, atol=0.01)
    pop = generate_population(
        collateral_config(collateral_assets={"USDe": 1.0}), np.random.default_rng(1)
    )
    assert (pop.wallet == 0).all() and (pop.holdings[:, 0] > 0).all()


# --------------------------------------------------------------------------------------------
# Population files
# --------------------------------------------------------------------------------------------

HEADER = "trader_id,collateral,asset,quantity,entry_price"


def file_config(tmp_path, text):
    (tmp_path / "accounts.csv").write_text(text)
    data = small_config(traders={"population": "accounts.csv"})
    data["assets"].append(
        {"symbol": "USDe", "price": 1.0, "depth": 1e5, "kind": "collateral", "haircut": 0.05}
    )
    return build_config(data, base_dir=tmp_path)


def test_a_population_row_naming_a_collateral_asset_holds_units(tmp_path):
    cfg = file_config(
        tmp_path,
        f"{HEADER}\n1,500,BTC,0.1,60000\n1,500,USDe,2000,\n2,0,USDe,300,0.99\n3,100,ETH,-0.1,3000\n",
    )
    pop = read_population(tmp_path / "accounts.csv", cfg)
    assert pop.holdings.tolist() == [[2000.0], [300.0], [0.0]]
    assert pop.qty[:, 2].tolist() == [0.0, 0.0, 0.0]
    assert pop.wallet.tolist() == [500.0, 0.0, 100.0]
    m = ContagionModel(cfg, population=pop)
    # cash 600 plus holdings 2,300 at 1 plus the fund
    assert m.initial_money == pytest.approx(600.0 + 2300.0 + 1e5)
    assert m.market.inventory[2] == -2300.0 and m.market.cash[2] == 2300.0


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ("1,100,USDe,-5,", "row 2: quantity of the collateral asset 'USDe'"),
        ("1,100,BTC,1,", "row 2: entry_price is not a number"),
        ("1,100,USDe,5,", None),
    ],
)
def test_collateral_rows_are_checked(tmp_path, rows, words):
    cfg = file_config(tmp_path, f"{HEADER}\n{rows}\n")
    if words is None:
        assert read_population(tmp_path / "accounts.csv", cfg).holdings[0, 0] == 5.0
        return
    with pytest.raises(ConfigError, match=words):
        read_population(tmp_path / "accounts.csv", cfg)


def test_a_collateral_row_cannot_be_isolated_or_carry_a_margin(tmp_path):
    cfg = file_config(tmp_path, f"{HEADER},margin_mode\n1,100,USDe,5,,isolated\n")
    with pytest.raises(ConfigError, match="row 2: margin_mode isolated on the collateral"):
        read_population(tmp_path / "accounts.csv", cfg)
    cfg = file_config(tmp_path, f"{HEADER},margin\n1,100,USDe,5,,3\n")
    with pytest.raises(ConfigError, match="row 2: margin on the collateral asset 'USDe'"):
        read_population(tmp_path / "accounts.csv", cfg)


# --------------------------------------------------------------------------------------------
# Venue presets
# --------------------------------------------------------------------------------------------


def with_assets(*extra, **margin):
    data = small_config(margin=margin)
    data["assets"] += list(extra)
    return data


def test_the_binance_preset_gives_haircuts_of_the_collateral_it_publishes():
    cfg = build_config(
        with_assets(
            {"symbol": "wBETH", "price": 4000.0, "depth": 1e5, "kind": "collateral"},
            {"symbol": "BNSOL", "price": 200.0, "depth": 1e5, "kind": "collateral"},
            {"symbol": "USDC", "price": 1.0, "depth": 1e5, "kind": "collateral", "haircut": 0.2},
            venue="binance",
        )
    )
    haircut = {a.symbol: a.haircut for a in cfg.assets}
    # 95% for ETH's wrapper, 90% for SOL's (venues.md §4.1); the file's own value wins
    assert haircut == {"BTC": None, "ETH": None, "wBETH": 0.05, "BNSOL": 0.10, "USDC": 0.2}
    tiers = {a.symbol: a.tiers for a in cfg.assets}
    assert tiers["BTC"] is not None and tiers["wBETH"] is None  # no tiers for collateral


def test_a_collateral_asset_without_a_haircut_names_the_key():
    data = with_assets(
        {"symbol": "USDe", "price": 1.0, "depth": 1e5, "kind": "collateral"}, venue="binance"
    )
    with pytest.raises(ConfigError, match=r"^assets\[2\]\.haircut: required"):
        build_config(data)


# --------------------------------------------------------------------------------------------
# Bad input on the command line: exit 2, one line naming the key
# --------------------------------------------------------------------------------------------

USDE = {"symbol": "USDe", "price": 1.0, "depth": 1e5, "kind": "collateral", "haircut": 0.05}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"assets": [{**USDE, "haircut": 1.0}]}, ["assets[2].haircut: must be < 1, got 1"]),
        ({"assets": [{**USDE, "haircut": -0.1}]}, ["assets[2].haircut: must be >= 0"]),
        (
            {"assets": [{k: v for k, v in USDE.items() if k != "depth"}]},
            ["assets[2].depth: required key is missing"],
        ),
        ({"assets": [{**USDE, "kind": "colateral"}]}, ["assets[2].kind", "did you mean"]),
        (
            {"assets": [{**USDE, "kind": "perpetual"}]},
            ["assets[2].haircut: only a collateral asset takes a haircut"],
        ),
        (
            {"traders": {"collateral_assets": {"USDE": 0.3}}},
            ["traders.collateral_assets.USDE: unknown collateral asset", "did you mean 'USDe'"],
        ),
        (
            {"traders": {"collateral_assets": {"BTC": 0.3}}},
            ["traders.collateral_assets.BTC: 'BTC' is a perpetual"],
        ),
        (
            {"traders": {"collateral_assets": {"USDe": 1.5}}},
            ["traders.collateral_assets.USDe: must be between 0 and 1"],
        ),
        (
            {"traders": {"collateral_assets": {"USDe": 0.3}}, "margin": {"mode": "isolated"}},
            ["traders.collateral_assets: collateral backs the cross balance only"],
        ),
        ({"margin": {"venue": "binanse"}}, ["margin.venue", "did you mean 'binance'"]),
        ({"margin": {"adl_ranking": "bitmax"}}, ["margin.adl_ranking", "did you mean 'bitmex'"]),
    ],
)
def test_bad_collateral_input_is_one_line_with_exit_2(capsys, tmp_path, change, words):
    data = small_config(steps=2, shocks=[])
    for key, value in change.items():
        if key == "assets":
            data["assets"] = data["assets"] + value
        else:
            data[key] = {**data[key], **value}
    if "assets" not in change:
        data["assets"].append(USDE)
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip("\n").splitlines()
    assert code == 2 and len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]


def test_a_negative_holding_in_a_population_file_is_one_line_with_exit_2(capsys, tmp_path):
    (tmp_path / "accounts.csv").write_text(f"{HEADER}\n1,100,BTC,0.01,60000\n1,100,USDe,-3,\n")
    data = small_config(steps=2, shocks=[], traders={"population": "accounts.csv"})
    data["assets"].append(USDE)
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip("\n").splitlines()
    assert code == 2 and len(err) == 1, err
    assert "accounts.csv: row 3: quantity of the collateral asset 'USDe'" in err[0]
