"""Liquidity: the book's depth in market.parquet, the [liquidity] section, market makers.

Values are computed independently of the engine: from the config and from other columns of
the run's own tables, by hand or in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from model import ContagionModel
from model.config import ConfigError, build_config
from tests.helpers import small_config

MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0


def test_static_depth_column_is_the_configured_depth_without_stress():
    m = ContagionModel(build_config(small_config(steps=15)), create_agents=False).run()
    market = m.tables()["market"]
    for a in m.config.assets:
        depth = market.loc[market["asset"] == a.symbol, "depth"].to_numpy()
        assert depth.size == 15
        np.testing.assert_array_equal(depth, a.depth)


def test_static_depth_column_follows_the_stress_recursion():
    """depth = D / (1 + k x load), load rebuilt from the fundamental and forced-flow columns."""
    stress, recovery = 0.1, 0.25
    cfg = build_config(
        small_config(steps=15, market={"depth_stress": stress, "depth_recovery": recovery})
    )
    m = ContagionModel(cfg, create_agents=False).run()
    market = m.tables()["market"]
    dt = cfg.market.step_minutes / MINUTES_PER_YEAR
    for a in cfg.assets:
        g = market[market["asset"] == a.symbol].sort_values("step")
        d = a.depth / a.price
        dlog = np.diff(np.log(np.concatenate([[a.price], g["fundamental"].to_numpy()])))
        vol = cfg.market.volatility if a.volatility is None else a.volatility
        move = np.maximum(np.abs(dlog) - 2 * vol * np.sqrt(dt), 0.0) / 0.01
        forced = (np.abs(g["forced_flow"].to_numpy()) / d) ** cfg.market.impact_exponent
        carried, expected = 0.0, []
        for t in range(len(g)):
            expected.append(a.depth / (1 + stress * (carried + move[t] + forced[t])))
            carried = (1 - recovery) * (carried + move[t] + forced[t])
        np.testing.assert_allclose(g["depth"].to_numpy(), expected, rtol=1e-12)
        assert (g["depth"] < a.depth).any()  # the shock thinned the book


def test_liquidity_section_defaults_to_static():
    cfg = build_config(small_config())
    assert cfg.liquidity.model == "static"
    assert cfg.liquidity.value_orders == "before_rounds"


@pytest.mark.parametrize(
    ("liquidity", "words"),
    [
        ({"model": "lob"}, "liquidity.model"),
        ({"capital": -1.0}, "liquidity.capital: must be > 0"),
        ({"inventory_limit": 0.0}, "liquidity.inventory_limit: must be > 0"),
        ({"backstop": 1.5}, "liquidity.backstop: must be <= 1"),
        ({"margin_pull": [0.5]}, "liquidity.margin_pull"),
    ],
)
def test_bad_liquidity_keys_name_the_key(liquidity, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        build_config(small_config(liquidity=liquidity))


# ---- the book's kernels ---------------------------------------------------------------------


def test_book_walk_by_hand():
    from agents.book import displacement, equivalent_flow, side_split

    # square-root law: selling 4 units into 1 unit per 1% moves the log price by -2%
    np.testing.assert_allclose(displacement([4.0], [1.0], [9.0], 0.5), [-0.02])
    np.testing.assert_allclose(displacement([-9.0], [1.0], [1.0], 0.5), [0.03])
    np.testing.assert_allclose(
        equivalent_flow([-0.03, 0.02], [2.0, 1.0], [1.0, 5.0], 0.5), [18.0, -20.0]
    )
    # a walk from 3 net sells to 2 net buys: the bids sold back 3, the asks sold 2
    bid, ask = side_split(np.array([3.0]), np.array([-2.0]))
    assert bid[0] == -3.0 and ask[0] == -2.0


@pytest.mark.parametrize("tau0", [0.01, 0.25, 4.0])
def test_power_kernel_follows_its_target(tau0):
    from agents.book import fit_power_kernel

    w, a = fit_power_kernel(tau0, 10, 10_000)
    t = np.arange(0, 10_001)
    g = (w[None, :] * a[None, :] ** t[:, None]).sum(axis=1)
    target = (1 + t / tau0) ** -0.5
    assert abs(w.sum() - 1.0) < 1e-12 and (w >= 0).all()
    assert np.max(np.abs(g / target - 1)) < 0.015


# ---- market makers --------------------------------------------------------------------------


def one_asset(liquidity, *, steps=1, shocks=(), volatility=0.0, traders=0, **extra):
    data = {
        "name": "mm",
        "seed": 1,
        "steps": steps,
        "market": {"volatility": volatility, "impact_exponent": 0.5, "resilience": 0.1},
        "assets": [{"symbol": "X", "price": 100.0, "depth": 1.0e6, "max_leverage": 20}],
        "traders": {"count": traders},
        "margin": {"maintenance": 0.02, "liquidation": "full", "fee": 0.0, "adl": False},
        "shocks": list(shocks),
        "liquidity": liquidity,
    }
    data.update(extra)
    return build_config(data)


def test_degenerate_market_makers_reproduce_static():
    """One source quoting assets.depth (the backstop, no makers), exponential refill: the
    static model's prices and tables."""
    data = small_config(steps=40, traders={"count": 800, "leverage": 15.0, "assets_per_trader": 2})
    mm = {"model": "market_makers", "kernel": "exponential", "makers": 0, "backstop": 1.0}
    a = ContagionModel(build_config(data), create_agents=False).run()
    b = ContagionModel(build_config({**data, "liquidity": mm}), create_agents=False).run()
    ta, tb = a.tables(), b.tables()
    np.testing.assert_allclose(tb["market"]["price"], ta["market"]["price"], rtol=1e-12)
    for name in ("liquidations", "accounts"):
        cols = [c for c in ta[name].columns if c in tb[name].columns]
        import pandas as pd

        pd.testing.assert_frame_equal(ta[name][cols], tb[name][cols], rtol=1e-9)
    assert a.summary()["accounts_liquidated"] > 50


def test_makers_fill_their_share_of_a_forced_sale_pro_rata():
    """A long of 2,000 units at 10x is wiped out by a -20% shock: its sale walks the calm
    book, the makers buy (1 - backstop) x Zipf share of it, the market agent the rest, all
    at the price of the square-root law."""
    from agents.market_maker import maker_shares
    from model.population import Population

    cfg = one_asset(
        {"model": "market_makers", "makers": 3, "backstop": 0.2, "basis_share": 0.0},
        shocks=[{"step": 1, "asset": "X", "return": -0.2}],
    )
    pop = Population(
        np.array([7]), np.array([20_000.0]), np.array([[2000.0]]), np.array([[100.0]]),
        np.zeros((1, 1), bool), np.zeros((1, 1)), np.array(["hold"], dtype=object),
    )  # fmt: skip
    m = ContagionModel(cfg, population=pop)
    assert m.n_traders == 1 and m.book.n_traders == 4
    m.step()
    d = 1.0e6 / 100.0
    price = 80.0 * np.exp(-0.01 * np.sqrt(2000.0 / d))
    np.testing.assert_allclose(m.market.price, [price], rtol=1e-12)
    makers = m.book.qty[1:, 0]
    np.testing.assert_allclose(makers, 2000.0 * 0.8 * maker_shares(3), rtol=1e-12)
    np.testing.assert_allclose(m.book.entry[1:, 0], price, rtol=1e-12)
    # the market agent was short the trader's 2,000 at the start; its backstop bought 20%
    np.testing.assert_allclose(m.market.inventory, [-2000.0 + 0.2 * 2000.0], rtol=1e-12)
    assert m.book.qty[0, 0] == 0.0
    assert m.summary()["traders"] == 1 and m.summary()["makers_liquidated"] == 0
    # next step each maker hedges half the gap to -0.9 of its position, at the fundamental
    m.step()
    np.testing.assert_allclose(m.desk.hedge[:, 0], 0.5 * -0.9 * makers, rtol=1e-12)


def test_calm_makers_quote_assets_depth_times_their_volatility_factor():
    """Nobody trades: the makers hold no inventory, keep their capital and margin, and quote
    assets.depth x V, V = min(1, 1.25 sqrt(long / short))^2 of EWMAs of the venue's returns
    (half-lives 48 and 720 steps, running means at first), recomputed from the price column."""
    cfg = one_asset(
        {"model": "market_makers", "basis_share": 0.0},
        steps=300,
        volatility=0.8,
        shocks=[{"step": 150, "asset": "X", "return": -0.15}],  # short-run volatility jumps
    )
    m = ContagionModel(cfg).run()
    market = m.tables()["market"]
    price = np.concatenate([[100.0], market["price"].to_numpy()])
    r2 = np.diff(np.log(price)) ** 2
    var0 = 0.8**2 * 60.0 / (365.0 * 24.0 * 60.0)
    short = long = var0
    expected = []
    for n, x in enumerate(r2, 1):
        expected.append(1.0e6 * (0.05 + 0.95 * min(1.0, 1.25 * np.sqrt(long / short)) ** 2))
        ws, wl = max(1 / n, 1 - 0.5 ** (1 / 48)), max(1 / n, 1 - 0.5 ** (1 / 720))
        short, long = (1 - ws) * short + ws * x, (1 - wl) * long + wl * x
    np.testing.assert_allclose(market["depth"].to_numpy(), expected, rtol=1e-10)
    depth = market["depth"].to_numpy()
    assert (depth < 0.9e6).any() and np.isclose(depth, 1.0e6, rtol=1e-12).sum() > 200


# ---- resting orders inside the rounds -------------------------------------------------------


def ladder_market(value_orders, model="static"):
    """A 16.7x long of 10,000 X that a -5% shock liquidates, and a value trader with $1M."""
    from model.population import Population

    cfg = one_asset(
        {"model": model, "value_orders": value_orders, "basis_share": 0.0},
        shocks=[{"step": 1, "asset": "X", "return": -0.05}],
        traders=0,
    )
    pop = Population(
        np.array([1, 2]),
        np.array([60_000.0, 1.0e6]),
        np.array([[10_000.0], [1.0]]),
        np.array([[100.0], [100.0]]),
        np.zeros((2, 1), bool),
        np.zeros((2, 1)),
        np.array(["hold", "value"], dtype=object),
    )
    return ContagionModel(cfg, population=pop)


@pytest.mark.parametrize("model", ["static", "market_makers"])
def test_a_forced_sale_meets_the_value_ladder_inside_the_round(model):
    """The sale of 10,000 walks the book and the ladder together: the round's price solves
    d (-y / 1%)^2 + E (g(p) - g(p0)) = 10,000, g(p) = -2 tanh(ln(p / F) / 0.05) / p0, solved
    here with brentq; the value trader buys E (g(p) - g(p0)) at that price."""
    from scipy.optimize import brentq

    m = ladder_market("in_rounds", model)
    m.step()
    assert m.last.liquidations == 1 and m.book.qty[0, 0] == 0.0
    p0 = f = 95.0
    equity = 1.0e6 - 5.0  # its one unit lost $5 in the shock
    d = 1.0e4

    def g(p):
        return -2.0 * np.tanh(np.log(p / f) / 0.05) / p0

    def excess(y):
        return d * (-y / 0.01) ** 2 + equity * (g(p0 * np.exp(y)) - g(p0)) - 10_000.0

    y = brentq(excess, -0.05, 0.0, xtol=1e-15)
    price = p0 * np.exp(y)
    np.testing.assert_allclose(m.market.price, [price], rtol=1e-10)
    bought = equity * (g(price) - g(p0))
    assert 1000 < bought < 9000  # the ladder took a real share of the sale
    np.testing.assert_allclose(m.book.qty[1, 0], 1.0 + bought, rtol=1e-10)
    np.testing.assert_allclose(m.strategies["value"].overlay[0, 0], bought, rtol=1e-10)
    if model == "market_makers":
        np.testing.assert_allclose(m.book.qty[2:, 0].sum(), 0.95 * (10_000 - bought), rtol=1e-9)
    assert abs(m.money()["total"] - m.initial_money) < 1e-9 * 1e8


def test_before_rounds_the_sale_meets_the_book_alone():
    m = ladder_market("before_rounds")
    m.step()
    price = 95.0 * np.exp(-0.01 * np.sqrt(10_000 / 1.0e4))
    np.testing.assert_allclose(m.market.price, [price], rtol=1e-12)
    assert m.book.qty[1, 0] == 1.0


def test_a_liquidated_value_trader_s_ladder_is_cancelled_before_the_walk():
    """A second value trader, leveraged 20x long, is liquidated in the same round: its ladder
    is cancelled first, so only the healthy one's weight meets the sale."""
    from scipy.optimize import brentq

    from model.population import Population

    cfg = one_asset(
        {"value_orders": "in_rounds"}, shocks=[{"step": 1, "asset": "X", "return": -0.05}]
    )
    pop = Population(
        np.array([1, 2, 3]),
        np.array([60_000.0, 1.0e6, 10_000.0]),
        np.array([[10_000.0], [1.0], [2_000.0]]),
        np.full((3, 1), 100.0),
        np.zeros((3, 1), bool),
        np.zeros((3, 1)),
        np.array(["hold", "value", "value"], dtype=object),
    )
    m = ContagionModel(cfg, population=pop)
    m.step()
    assert m.book.qty[2, 0] == 0.0  # liquidated
    p0 = 95.0
    equity = 1.0e6 - 5.0

    def excess(y):
        p = p0 * np.exp(y)
        ladder = equity * 2.0 * np.tanh(-np.log(p / p0) / 0.05) / p0
        return 1.0e4 * (-y / 0.01) ** 2 + ladder - 12_000.0

    price = p0 * np.exp(brentq(excess, -0.05, 0.0, xtol=1e-15))
    np.testing.assert_allclose(m.market.price, [price], rtol=1e-10)


def _money_venue(**overrides) -> dict:
    """The money tests' venue: 600 traders at 15x on two assets, trading rules of every kind,
    re-entry after 5 steps, a lagged mark, funding every 4 steps, no insurance fund, 60
    steps; ``liquidity`` and ``shocks`` given by each test."""
    return small_config(
        steps=60,
        market={"mark_lag": 0.5, "funding_interval": 4},
        traders={
            "count": 600,
            "leverage": 15.0,
            "assets_per_trader": 2,
            "strategies": {"hold": 0.4, "value": 0.3, "noise": 0.2, "momentum": 0.1},
            "reentry_steps": 5,
        },
        margin={"insurance_fund": 0.0},
        **overrides,
    )


@pytest.mark.parametrize("value_orders", ["before_rounds", "in_rounds"])
def test_money_is_conserved_every_step_with_makers_hedges_and_a_lagged_mark(value_orders):
    """Traders, makers (venue and off-venue), the insurance fund, the market agent (venue and
    outside book) and unfunded bad debt add up to the initial money plus deposits, every step,
    while the mark trails the price and the fundamental moves away from both."""
    from model.results import money_scale

    data = _money_venue(
        liquidity={"model": "market_makers", "value_orders": value_orders, "capital": 0.5},
        shocks=[
            {"step": 10, "asset": "BTC", "return": -0.12},
            {"step": 30, "asset": "ETH", "return": 0.1},
        ],
    )
    m = ContagionModel(build_config(data), create_agents=False)
    for _ in range(60):
        m.step()
        parts = m.money()
        expected = m.initial_money + m.deposits
        assert abs(parts["total"] - expected) <= 1e-12 * money_scale(m), m.steps
        assert parts["makers"] > 0
    assert m.summary()["accounts_liquidated"] > 50
    assert (m.desk.hedge != 0).any() and m.desk.outside_cash != 0


def test_a_maker_below_maintenance_cancels_its_quotes_and_is_liquidated():
    """Step 1: a forced sale of 10,000 leaves the one maker long 5,000 (half the book; the
    backstop the other half). Step 2: a -10% shock puts it below maintenance with equity left;
    its quotes are cancelled before the round's walk, so its own sale of 5,000 walks the
    backstop alone (5,000 per 1%): the price falls exactly 1% in the round."""
    from model.population import Population

    cfg = one_asset(
        {
            "model": "market_makers",
            "makers": 1,
            "backstop": 0.5,
            "basis_share": 0.0,
            "capital": 0.1,  # $50,000 of collateral
            "hedge_speed": 0.0,
            "margin_pull": [5.0, 10.0],  # no pulling before liquidation: only the cancel
        },
        steps=2,
        shocks=[
            {"step": 1, "asset": "X", "return": -0.05},
            {"step": 2, "asset": "X", "return": -0.1},
        ],
    )
    pop = Population(
        np.array([1]), np.array([60_000.0]), np.array([[10_000.0]]), np.array([[100.0]]),
        np.zeros((1, 1), bool), np.zeros((1, 1)), np.array(["hold"], dtype=object),
    )  # fmt: skip
    m = ContagionModel(cfg, population=pop)
    m.step()
    np.testing.assert_allclose(m.book.qty[1, 0], 5_000.0, rtol=1e-12)
    m.step()
    open_ = m.market.step_open[0]
    equity = 50_000.0 - 5_000.0 * (95.0 * np.exp(-0.01) - open_)
    assert 0 < equity < 0.02 * 5_000.0 * open_  # below maintenance, not bankrupt
    np.testing.assert_allclose(m.market.price, [open_ * np.exp(-0.01)], rtol=1e-12)
    assert m.book.qty[1, 0] == 0.0
    s = m.summary()
    assert s["makers_liquidated"] == 1 and s["accounts_liquidated"] == 1
    assert m.tables()["steps"]["makers_liquidated"].tolist() == [0, 1]


def test_deleveraging_a_maker_s_venue_leg_leaves_its_hedge_naked_and_thins_its_bids():
    """The one maker holds the other side of a 10,000 long as a hedged basis (short on the
    venue, long off it). A -20% shock bankrupts the long; with no insurance fund, ADL closes
    what is left of the maker's profitable short. Next step the desk sees it: its net
    inventory is the naked hedge, u = 10,000 / (20 x 5,000) = 0.1, and the ADL memory (the
    deleveraged notional over its equity) thins both sides by 1 / (1 + 5 memory)."""
    from model.population import Population

    cfg = one_asset(
        {
            "model": "market_makers",
            "makers": 1,
            "backstop": 0.5,
            "basis_share": 1.0,
            "hedge_ratio": 1.0,
            "hedge_speed": 0.0,
            "capital": 1.0,
        },
        steps=2,
        shocks=[{"step": 1, "asset": "X", "return": -0.2}],
        margin={"maintenance": 0.02, "liquidation": "full", "fee": 0.0, "insurance_fund": 0.0},
    )
    pop = Population(
        np.array([1]), np.array([60_000.0]), np.array([[10_000.0]]), np.array([[100.0]]),
        np.zeros((1, 1), bool), np.zeros((1, 1)), np.array(["hold"], dtype=object),
    )  # fmt: skip
    m = ContagionModel(cfg, population=pop)
    np.testing.assert_allclose(m.desk.hedge, [[10_000.0]])
    m.step()
    fills = m.tables()["liquidations"]
    adl = fills[fills["kind"] == "adl"]
    assert adl["trader_id"].tolist() == [2]  # the maker's account
    np.testing.assert_allclose(adl["quantity"], [-5_000.0], rtol=1e-12)
    assert m.book.qty[1, 0] == 0.0
    m.step()
    np.testing.assert_allclose(m.desk.factors["inventory"], [[0.1]], rtol=1e-12)
    assert m.desk.adl_memory[0] > 0
    h = 1.0 / (1.0 + 5.0 * m.desk.adl_memory[0])
    f = m.desk.factors
    calm = m.desk.d0[0, 0] * f["capital"][0] * f["volatility"][0] * f["margin"][0]
    np.testing.assert_allclose(m.desk.dbid[0, 0], calm * h * 0.9, rtol=1e-12)
    np.testing.assert_allclose(m.desk.dask[0, 0], calm * h * 1.1, rtol=1e-12)
    assert h < 0.9


def test_noise_persistence_repeats_a_share_of_the_last_order():
    """order_t = phi order_{t-1} - decay overlay_{t-1} + size E z_t / P, by hand, with the
    normal draws fed in."""
    from model.population import Population

    cfg = build_config(
        small_config(
            steps=1,
            assets=[{"symbol": "BTC", "price": 100.0, "depth": 1e9}],
            traders={
                "count": 0,
                "assets_per_trader": 1,
                "rules": {"noise": {"size": 0.1, "decay": 0.4, "persistence": 0.5}},
            },
            shocks=[],
        )
    )
    pop = Population(
        np.array([0, 1]), np.array([1000.0, 2000.0]), np.array([[10.0], [-5.0]]),
        np.full((2, 1), 100.0), np.zeros((2, 1), bool), np.zeros((2, 1)),
        np.array(["noise", "noise"], dtype=object),
    )  # fmt: skip
    m = ContagionModel(cfg, population=pop, create_agents=False)
    draws = [np.array([[1.0], [-2.0]]), np.array([[0.5], [0.0]]), np.array([[-1.0], [1.5]])]

    class Feed:
        def standard_normal(self, shape):
            return draws.pop(0).reshape(shape)

    m.rng = Feed()
    rule, rows = m.strategies["noise"], m.strategy_rows["noise"]
    equity = m.book.equity(m.market.price, rows)[:, None]
    overlay, last = np.zeros((2, 1)), np.zeros((2, 1))
    for z in [d.copy() for d in draws]:
        order = 0.5 * last - 0.4 * overlay + 0.1 * equity * z / 100.0
        got = rule.orders(rows)
        np.testing.assert_allclose(got, order, rtol=1e-12)
        rule.filled(rows, got)
        overlay, last = overlay + order, order


# ---- makers re-entering with fresh capital --------------------------------------------------


def wiped_out_maker(delay, steps):
    """One maker ($50,000 of capital, half the calm book) buys half of a 10,000 forced sale at
    step 1; a -20% shock at step 2 takes its equity to nothing."""
    from model.population import Population

    cfg = one_asset(
        {
            "model": "market_makers",
            "makers": 1,
            "backstop": 0.5,
            "basis_share": 0.0,
            "capital": 0.1,  # 0.1 x its calm 1% quote notional (5,000 units x $100)
            "hedge_speed": 0.0,
            "maker_reentry_steps": delay,
        },
        steps=steps,
        shocks=[
            {"step": 1, "asset": "X", "return": -0.05},
            {"step": 2, "asset": "X", "return": -0.2},
        ],
    )
    pop = Population(
        np.array([1]), np.array([60_000.0]), np.array([[10_000.0]]), np.array([[100.0]]),
        np.zeros((1, 1), bool), np.zeros((1, 1)), np.array(["hold"], dtype=object),
    )  # fmt: skip
    return ContagionModel(cfg, population=pop)


@pytest.mark.parametrize("delay", [1, 3])
def test_a_wiped_out_maker_quotes_again_with_its_capital_after_the_delay(delay):
    """Wiped out at step s = 2, the maker quotes nothing (capital factor 0) until step
    s + delay, when $50,000 of fresh capital (0.1 x 5,000 x $100, a deposit) tops it up: from
    then on it quotes its calm 5,000 units per 1% on each side again."""
    m = wiped_out_maker(delay, steps=8)
    quotes = []
    for _ in range(8):
        m.step()
        quotes.append(float(m.desk.dbid[0, 0]))
        assert abs(m.money()["total"] - m.initial_money - m.deposits) < 1e-9 * 1e7
    assert m.tables()["steps"]["makers_liquidated"].tolist()[1] == 1
    back = 2 + delay  # the first step it quotes in again
    assert quotes[0] == pytest.approx(5_000.0)
    assert all(q == 0.0 for q in quotes[1 : back - 1])
    np.testing.assert_allclose(quotes[back - 1 :], 5_000.0, rtol=1e-12)
    assert m.liquidity.makers_reentered == 1
    # flat and bankrupt (wallet written off to 0): the deposit is its whole initial equity
    np.testing.assert_allclose(m.liquidity.deposits, 50_000.0, rtol=1e-12)
    np.testing.assert_allclose(m.deposits, 50_000.0, rtol=1e-12)
    np.testing.assert_allclose(m.tables()["steps"]["deposits"].iloc[-1], 50_000.0, rtol=1e-12)


def test_without_maker_reentry_a_wiped_out_maker_never_quotes_again():
    m = wiped_out_maker(0, steps=8)
    m.run()
    assert m.desk.dbid[0, 0] == 0.0 and m.liquidity.deposits == 0.0 and m.deposits == 0.0


def test_money_is_conserved_every_step_with_makers_re_entering():
    """Makers holding the market agent's whole basis unhedged (capital 0.05) lose their
    capital to the shocks and come back 3 steps later: money stays initial money plus the
    deposits of traders and makers, every step."""
    from model.results import money_scale

    data = _money_venue(
        liquidity={
            "model": "market_makers",
            "value_orders": "resting",
            "capital": 0.05,
            "maker_reentry_steps": 3,
            "basis_share": 1.0,
            "hedge_ratio": 0.0,
        },
        shocks=[
            {"step": 10, "asset": "BTC", "return": -0.4},
            {"step": 30, "asset": "ETH", "return": 0.4},
        ],
    )
    m = ContagionModel(build_config(data), create_agents=False)
    for _ in range(60):
        m.step()
        expected = m.initial_money + m.deposits
        assert abs(m.money()["total"] - expected) <= 1e-12 * money_scale(m), m.steps
    assert m.liquidity.makers_reentered > 0 and m.liquidity.deposits > 0
    assert m.reentry.deposits > 0
    np.testing.assert_allclose(m.deposits, m.reentry.deposits + m.liquidity.deposits, rtol=1e-12)


def test_negative_maker_reentry_delay_exits_2_with_one_line(tmp_path, capsys):
    from experiments.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\nsteps = 2\n[[assets]]\nsymbol = "X"\nprice = 100.0\ndepth = 1e6\n'
        '[liquidity]\nmodel = "market_makers"\nmaker_reentry_steps = -1\n'
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "liquidity.maker_reentry_steps" in err[0] and ">= 0" in err[0], err[0]
    assert not out.exists()


# ---- value orders resting all step ----------------------------------------------------------


def test_resting_value_orders_meet_the_forced_sale_as_the_in_rounds_ladder_does():
    """At the open the value trader's target equals its holding (price = fundamental): it
    sends nothing, and the forced sale meets the same ladder as under in_rounds (the hand
    solution of test_a_forced_sale_meets_the_value_ladder_inside_the_round)."""
    a, b = ladder_market("in_rounds"), ladder_market("resting")
    a.step()
    b.step()
    np.testing.assert_allclose(b.market.price, a.market.price, rtol=1e-12)
    np.testing.assert_allclose(b.book.qty[1, 0], a.book.qty[1, 0], rtol=1e-10)


def test_resting_value_orders_open_the_next_step_at_the_auction_price():
    """Step 2: the static book refills 10% of the impact, so the price at the open is above
    the one the value trader bought at and its target there is below its holding h. It sends
    no market order; its offers, anchored at h, clear against the bids of the book at the
    price p solving  d (-y / 1%)^2 = h - E g(p),  p = p_open e^y,
    g(p) = -2 tanh(ln(p / F) / 0.05) / p_open  (E its equity at the open, F = 95)."""
    from scipy.optimize import brentq

    m = ladder_market("resting")
    m.step()
    p1 = float(m.market.price[0])
    h = float(m.strategies["value"].overlay[0, 0])
    assert h > 1000  # it bought in the cascade
    f, d = 95.0, 1.0e4
    p_open = f * np.exp(0.9 * np.log(p1 / f))
    # $1M, its unit bought at 100, a loss of $5 to the shock, then h bought at p1
    equity = 1.0e6 + (p_open - 100.0) + h * (p_open - p1)

    def g(p):
        return -2.0 * np.tanh(np.log(p / f) / 0.05) / p_open

    def excess(y):
        return d * (-y / 0.01) ** 2 - (h - equity * g(p_open * np.exp(y)))

    assert h - equity * g(p_open) > 0  # it wants to sell at the open
    y = brentq(excess, -0.05, 0.0, xtol=1e-15)
    price = p_open * np.exp(y)
    assert not m.strategies["value"].orders(m.strategy_rows["value"]).any()  # no market order
    m.step()
    assert m.last.liquidations == 0
    np.testing.assert_allclose(m.market.price, [price], rtol=1e-10)
    sold = h - equity * g(price)
    np.testing.assert_allclose(m.book.qty[1, 0], 1.0 + h - sold, rtol=1e-10)
    np.testing.assert_allclose(m.strategies["value"].overlay[0, 0], h - sold, rtol=1e-10)
    assert abs(m.money()["total"] - m.initial_money) < 1e-9 * 1e8
