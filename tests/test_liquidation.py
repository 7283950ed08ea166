"""Liquidation rounds: the fixed point of the price map, partial fractions, isolation, bad debt."""

import math

import numpy as np
import pytest

from model import ContagionModel
from model.accounts import TierTable, maintenance_margin
from model.config import build_config
from model.partial import partial_fraction
from model.population import Population


def one_asset_config(
    beta,
    *,
    liquidation="full",
    fee=0.0,
    shock=-0.05,
    fund=0.0,
    depth=1.0e6,
    rate=0.01,
    mode="cross",
):
    return build_config(
        {
            "seed": 1,
            "steps": 1,
            "market": {"volatility": 0.0, "impact_exponent": beta, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": 100.0, "depth": depth, "max_leverage": 100}],
            "traders": {"count": 0},
            "margin": {
                "mode": mode,
                "maintenance": rate,
                "liquidation": liquidation,
                "fee": fee,
                "insurance_fund": fund,
                "buffer": 0.0,
            },
            "shocks": [{"step": 1, "asset": "X", "return": shock}],
        }
    )


def long_population(rng, n, leverage_range=(5, 40), entry=100.0):
    """Long-only accounts with entry at ``entry`` and varied leverage."""
    lev = rng.uniform(*leverage_range, n)
    collateral = rng.lognormal(7, 1, n)
    qty = (lev * collateral / entry)[:, None]
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=collateral,
        qty=qty,
        entry=np.full((n, 1), entry),
        isolated=np.zeros((n, 1), bool),
        margin=np.zeros((n, 1)),
        strategy=np.array(["hold"] * n, dtype=object),
    )


def fixed_point(pop, f1, depth_qty, beta, rate):
    """Iterate the price map by hand: liquidate everyone whose liquidation price is above P.

    A cross long with wallet W, quantity q, entry e is under maintenance at mark P when
    W + q (P - e) < r q P, i.e. when P < (q e - W) / (q (1 - r)).
    """
    q = pop.qty[:, 0]
    lp = (q * pop.entry[:, 0] - pop.wallet) / (q * (1 - rate))
    liquidated = np.zeros(q.size, bool)
    price = f1
    rounds = 0
    while True:
        newly = ~liquidated & (price < lp)
        if not newly.any():
            return price, liquidated, rounds
        rounds += 1
        liquidated |= newly
        sold = q[liquidated].sum()
        price = f1 * math.exp(-0.01 * (sold / depth_qty) ** beta)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_full_liquidation_cascade_ends_at_the_fixed_point(beta):
    rng = np.random.default_rng(5)
    pop = long_population(rng, 400)
    cfg = one_asset_config(beta)
    m = ContagionModel(cfg, population=pop)
    m.run()
    price, liquidated, rounds = fixed_point(pop, 100.0 * 0.95, 1.0e6 / 100.0, beta, 0.01)
    assert rounds >= 3  # a real cascade, not a one-round event
    assert m.mark[0] == pytest.approx(price, rel=1e-12)
    engine_set = np.flatnonzero(m.liquidation_count > 0)
    np.testing.assert_array_equal(engine_set, np.flatnonzero(liquidated))
    assert m.last.rounds == rounds
    fills = m.tables()["liquidations"]
    # every fill of the last round happened at the final price; all were full closes
    assert (fills["kind"] == "full").all()
    assert fills.loc[fills["round"] == rounds, "price"].to_numpy() == pytest.approx(
        price, rel=1e-12
    )


def test_partial_fraction_flat_rate_closed_form():
    """E - c f N = (1 + b) r (1 - f) N  =>  f = ((1 + b) r N - E) / (N ((1 + b) r - c))."""
    tiers = TierTable.flat([0.02])
    n_ = np.array([[10_000.0], [10_000.0], [10_000.0]])
    eq = np.array([150.0, 190.0, 30.0])
    c, b = 0.005, 0.1
    f = partial_fraction(eq, n_, tiers, c, b)
    expected = ((1 + b) * 0.02 * 10_000 - eq) / (10_000 * ((1 + b) * 0.02 - c))
    expected = np.where(eq - c * 10_000 < 0, 1.0, expected)  # cannot restore even when closed
    np.testing.assert_allclose(f, expected, rtol=1e-12)
    assert f[2] == 1.0


def test_partial_fraction_tiered_against_a_scan():
    tiers = TierTable.from_lists(
        [[(5e4, 0.004), (2.5e5, 0.005), (1e6, 0.01), (1e7, 0.025)], [(np.inf, 0.02)]]
    )
    rng = np.random.default_rng(2)
    notional = rng.uniform(1e4, 5e6, (200, 2))
    mm = maintenance_margin(notional, tiers).sum(axis=1)
    eq = mm * rng.uniform(0.3, 0.99, 200)
    f = partial_fraction(eq, notional, tiers, 0.001, 0.1)
    grid = np.linspace(0, 1, 20001)
    for i in range(0, 200, 7):
        slack = (
            eq[i]
            - 0.001 * grid * notional[i].sum()
            - 1.1
            * maintenance_margin((1 - grid)[:, None] * notional[i][None, :], tiers).sum(axis=1)
        )
        ok = np.flatnonzero(slack >= 0)
        smallest = grid[ok[0]] if ok.size else 1.0
        assert f[i] == pytest.approx(smallest, abs=1e-4)


def test_partial_liquidation_restores_the_buffer_at_the_mark():
    cfg = one_asset_config(0.5, liquidation="partial", fee=0.005, depth=1e12, shock=-0.03)
    cfg.margin.buffer = 0.1
    pop = Population(
        np.arange(1),
        np.array([1100.0]),
        np.array([[300.0]]),
        np.array([[100.0]]),
        np.zeros((1, 1), bool),
        np.zeros((1, 1)),
        np.array(["hold"], dtype=object),
    )
    m = ContagionModel(cfg, population=pop).run()
    # at 97: equity 1100 - 900 = 200 < mm 291; closing f at the mark leaves
    # 200 - 0.005 f 29100 = 1.1 x 0.01 x (1 - f) 29100  =>  f = (320.1 - 200) / (29100 x 0.006)
    f = (1.1 * 0.01 * 29100 - 200) / (29100 * (1.1 * 0.01 - 0.005))
    assert 0.5 < f < 0.9
    assert m.book.qty[0, 0] == pytest.approx(
        300 * (1 - f), rel=1e-6
    )  # depth so deep the fill is at 97
    assert m.last.rounds == 1


def isolated_pair_population(mode):
    """One trader: a 50x BTC long and a 2x ETH long, each with its own 1000 of margin."""
    iso = mode == "isolated"
    qty = np.array([[50 * 1000 / 100.0, 2 * 1000 / 10.0]])
    entry = np.array([[100.0, 10.0]])
    margin = np.array([[1000.0, 1000.0]]) if iso else np.zeros((1, 2))
    wallet = np.array([0.0 if iso else 2000.0])
    return Population(
        np.arange(1),
        wallet,
        qty,
        entry,
        np.full((1, 2), iso),
        margin,
        np.array(["hold"], dtype=object),
    )


def two_asset_config(mode, fund=1e6):
    return build_config(
        {
            "seed": 1,
            "steps": 1,
            "market": {"volatility": 0.0, "resilience": 0.0},
            "assets": [
                {"symbol": "BTC", "price": 100.0, "depth": 1e4, "max_leverage": 100},
                {"symbol": "ETH", "price": 10.0, "depth": 1e9, "max_leverage": 100},
            ],
            "traders": {"count": 0},
            "margin": {
                "mode": mode,
                "maintenance": 0.005,
                "liquidation": "full",
                "fee": 0.005,
                "insurance_fund": fund,
            },
            "shocks": [{"step": 1, "asset": "BTC", "return": -0.10}],
        }
    )


def test_isolated_loss_never_touches_the_other_position():
    m = ContagionModel(
        two_asset_config("isolated"), population=isolated_pair_population("isolated")
    )
    m.run()
    # BTC: -10% at 50x wipes its margin; the thin book adds more: bad debt, paid by the fund
    assert m.book.qty[0, 0] == 0
    assert m.engine.fund_paid > 0
    assert m.book.qty[0, 1] == pytest.approx(200.0)  # ETH untouched
    assert m.book.margin[0, 1] == 1000.0
    assert m.book.wallet[0] == 0.0  # nothing came back from the bankrupt BTC position
    # the same account under cross margin loses its ETH position too
    c = ContagionModel(two_asset_config("cross"), population=isolated_pair_population("cross"))
    c.run()
    assert c.book.qty[0, 1] == 0


def test_bad_debt_beyond_the_fund_is_unfunded_without_adl():
    cfg = two_asset_config("isolated", fund=10.0)
    cfg.margin.adl = False
    m = ContagionModel(cfg, population=isolated_pair_population("isolated")).run()
    fills = m.tables()["liquidations"]
    debt = fills["bad_debt"].sum()
    assert debt > 10.0
    assert m.engine.insurance_fund == pytest.approx(fills["fee"].sum())  # 10 paid out, fees came in
    assert fills["fee"].sum() == 0.0  # a bankrupt position has no equity left to pay a fee
    assert m.engine.unfunded_bad_debt == pytest.approx(debt - 10.0, rel=1e-9)


def test_fee_goes_to_the_fund_and_is_capped_by_remaining_equity():
    cfg = one_asset_config(1.0, fee=0.005, fund=0.0, depth=1e12, shock=-0.02)
    pop = Population(
        np.arange(2),
        np.array([1000.0, 1000.0]),
        np.array([[480.0], [400.0]]),
        np.array([[100.0], [100.0]]),
        np.zeros((2, 1), bool),
        np.zeros((2, 1)),
        np.array(["hold"] * 2, dtype=object),
    )
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"].set_index("trader_id")
    price = 98.0 * math.exp(-0.01 * (880 / (1e12 / 100)))
    # trader 0: equity left 1000 + 480 (P - 100) = ~40 < fee 0.005 x 480 P = ~235: fee capped
    assert fills.loc[0, "fee"] == pytest.approx(1000 + 480 * (price - 100), rel=1e-9)
    assert m.book.wallet[0] == pytest.approx(0.0, abs=1e-9)
    # trader 1: equity 1000 - 400 x 2 = ~200 > fee ~196: paid in full as well
    assert fills.loc[1, "fee"] == pytest.approx(0.005 * 400 * price, rel=1e-9)
    assert m.engine.insurance_fund == pytest.approx(fills["fee"].sum())


def test_round_record_carries_the_rounds_fees_and_which_units_closed():
    # trader 0 is cut back (partial), trader 1 closed out: equity 1000 - 400 x 3 < 0 at 97
    cfg = one_asset_config(1.0, liquidation="partial", fee=0.005, fund=500.0, depth=1e12)
    cfg.margin.buffer = 0.1
    cfg.shocks[0].return_ = -0.03
    pop = Population(
        np.arange(2),
        np.array([1100.0, 1000.0]),
        np.array([[300.0], [400.0]]),
        np.array([[100.0], [100.0]]),
        np.zeros((2, 1), bool),
        np.zeros((2, 1)),
        np.array(["hold"] * 2, dtype=object),
    )
    m = ContagionModel(cfg, population=pop)
    rounds = []
    m.engine.on_round = rounds.append
    m.run()
    (rec,) = rounds
    fills = m.tables()["liquidations"].set_index("trader_id")
    price = rec.price_after[0]
    f = (1.1 * 0.01 * 29100 - 200) / (29100 * (1.1 * 0.01 - 0.005))  # as in the test above
    assert fills.loc[0, "quantity"] == pytest.approx(300 * f, rel=1e-6)
    np.testing.assert_array_equal(rec.full, [False, True])
    # trader 0 pays its fee in full; trader 1 has nothing left: no fee, bad debt 1000 - 400 x 3
    assert rec.fees == pytest.approx(0.005 * 300 * f * price, rel=1e-6)
    assert rec.bad_debt == pytest.approx(400 * (100 - price) - 1000, rel=1e-9)
    assert rec.fund == pytest.approx(500.0 + rec.fees - rec.bad_debt, rel=1e-9)
    assert rec.fund == m.engine.insurance_fund and rec.unfunded == 0.0
    assert rec.fees == pytest.approx(fills["fee"].sum(), rel=1e-12)
    assert rec.bad_debt == pytest.approx(fills["bad_debt"].sum(), rel=1e-12)
