"""Venue mechanics: liquidity that thins under stress, the lagged mark, funding, re-entry;
money conserved with all of them on."""

import numpy as np
import pytest

from agents.market import Market
from model import ContagionModel
from model.config import AssetConfig, MarketConfig, build_config
from model.funding import INTEREST_BAND, funding_payments, funding_rate
from model.population import Population
from model.results import money_scale
from tests.helpers import small_config


def one_asset(*, shock=-0.10, steps=1, depth=1.0e15, market=None, traders=None, margin=None):
    return build_config(
        {
            "seed": 5,
            "steps": steps,
            "market": {"volatility": 0.0, "resilience": 0.0, **(market or {})},
            "assets": [{"symbol": "X", "price": 100.0, "depth": depth, "max_leverage": 100}],
            "traders": {"count": 0, **(traders or {})},
            "margin": {"liquidation": "full", "fee": 0.0, **(margin or {})},
            "shocks": [{"step": 1, "asset": "X", "return": shock}] if shock else [],
        }
    )


def population(wallet, qty, entry=100.0, strategy="hold"):
    n = len(wallet)
    qty = np.asarray(qty, float).reshape(n, 1)
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=np.asarray(wallet, float),
        qty=qty,
        entry=np.where(qty != 0, entry, 0.0),
        isolated=np.zeros((n, 1), bool),
        margin=np.zeros((n, 1)),
        strategy=np.array([strategy] * n, dtype=object),
    )


# ---- liquidity stress ------------------------------------------------------------------------


def bare_market(model, **kw):
    """One asset X at 100 with 1e6 of depth; ``kw``: keys of the [market] section."""
    asset = AssetConfig(symbol="X", price=100.0, depth=1.0e6, volatility=0.5)
    return Market(model, MarketConfig(impact_exponent=0.5, **kw), [asset])


def test_stressed_depth_by_hand(small_cfg):
    model = ContagionModel(small_cfg, create_agents=False)
    mk = bare_market(model, depth_stress=0.1, depth_recovery=0.25)
    d = 1.0e6 / 100.0
    assert mk.effective_depth_qty()[0] == d  # no stress yet
    # A step with forced selling of 4 d: its move on the unstressed book is (4)^0.5 = 2%.
    mk.move_fundamentals(1)
    mk.execute([4.0 * d], forced=True)
    thinned = d / (1.0 + 0.1 * 2.0)
    assert mk.effective_depth_qty()[0] == pytest.approx(thinned, rel=1e-12)
    # the walk uses the thinned depth for the whole step's flow
    assert mk.impact[0] == pytest.approx(-0.01 * (4.0 * d / thinned) ** 0.5, rel=1e-12)
    # Next step: the carried stress is (1 - 0.25) x 2 = 1.5 (a normal move adds nothing).
    mk.move_fundamentals(2)
    assert mk.stress[0] == pytest.approx(1.5, rel=1e-12)
    assert mk.move_stress[0] == 0.0
    assert mk.effective_depth_qty()[0] == pytest.approx(d / 1.15, rel=1e-12)
    # An outsized move: a -10% shock (plus the step's noise) against a normal 2 sigma.
    mk.log_shocks[3] = np.log([0.9])
    before = mk.log_fundamental.copy()
    mk.move_fundamentals(3)
    dlog = abs(mk.log_fundamental[0] - before[0])
    assert dlog == pytest.approx(abs(np.log(0.9)), abs=0.01)
    normal = 2 * 0.5 * np.sqrt(mk.dt)
    assert mk.move_stress[0] == pytest.approx((dlog - normal) / 0.01, rel=1e-9)
    assert mk.stress[0] == pytest.approx(0.75 * 1.5, rel=1e-12)


def test_default_market_never_thins_and_marks_at_the_price(small_cfg):
    m = ContagionModel(small_cfg, create_agents=False).run(12)
    assert m.market.depth_stress == 0 and m.market.mark_lag == 0
    np.testing.assert_array_equal(m.market.effective_depth_qty(), m.market.depth_qty)
    np.testing.assert_array_equal(m.mark, m.market.price)
    assert np.all(m.market.stress == 0)


def test_thinner_depth_under_stress_deepens_a_cascade():
    runs = []
    for stress in (0.0, 0.2, 0.5):
        cfg = build_config(
            small_config(steps=15, market={"depth_stress": stress, "depth_recovery": 0.2})
        )
        runs.append(ContagionModel(cfg, create_agents=False).run().summary())
    drawdown = [r["max_drawdown"]["BTC"] for r in runs]
    accounts = [r["accounts_liquidated"] for r in runs]
    notional = [r["liquidated_notional"] for r in runs]
    assert drawdown[0] < drawdown[1] < drawdown[2]
    assert drawdown[2] > drawdown[0] + 0.01
    assert accounts[0] < accounts[1] < accounts[2]
    assert notional[0] < notional[1] < notional[2]


# ---- the lagged mark ---------------------------------------------------------------------------


def test_mark_follows_the_price_geometrically():
    cfg = one_asset(steps=3, market={"mark_lag": 0.5})
    m = ContagionModel(cfg, population=population([1e6], [1.0]))
    m.step()  # the -10% shock: one liquidation round observes the mark once
    assert m.market.price[0] == pytest.approx(90.0, rel=1e-9)
    assert m.mark[0] == pytest.approx(np.sqrt(100.0 * 90.0), rel=1e-9)
    m.step()
    assert m.mark[0] == pytest.approx(100.0 * 0.9**0.75, rel=1e-9)


def test_a_lagged_mark_delays_a_liquidation():
    # 20x long: liquidated at P < (q e - W) / (q (1 - r)) with r = 1 / (2 x 100)
    wallet, q = 750.0, 100.0
    lp = (q * 100.0 - wallet) / (q * (1 - 0.005))
    assert 90.0 < lp < np.sqrt(100 * 90)  # under at the price, not yet at the lagged mark
    lagged = ContagionModel(
        one_asset(steps=3, market={"mark_lag": 0.5}, margin={"insurance_fund": 1e6}),
        population=population([wallet], [q]),
    )
    lagged.step()
    assert lagged.engine.liquidation_count[0] == 0
    lagged.step()  # the mark reaches 100 x 0.9^0.75 = 92.4 < lp
    assert lagged.engine.liquidation_count[0] == 1
    prompt = ContagionModel(
        one_asset(steps=1, margin={"insurance_fund": 1e6}), population=population([wallet], [q])
    ).run()
    assert prompt.engine.liquidation_count[0] == 1


# ---- funding -----------------------------------------------------------------------------------


def test_funding_rate_formula():
    # premium inside the interest band: the rate is the interest; outside: premium + band
    np.testing.assert_allclose(funding_rate([0.0002], 1e-4, 0.0075), [1e-4])
    np.testing.assert_allclose(funding_rate([0.003], 1e-4, 0.0075), [0.003 - INTEREST_BAND])
    np.testing.assert_allclose(funding_rate([-0.003], 1e-4, 0.0075), [-0.003 + INTEREST_BAND])
    np.testing.assert_allclose(funding_rate([0.05, -0.05], 1e-4, 0.0075), [0.0075, -0.0075])


def test_funding_payments_move_money_from_longs_to_shorts():
    cfg = one_asset(
        shock=None,
        steps=2,
        market={"funding_interval": 2, "funding_cap": 0.05, "funding_interest": 1e-4},
        margin={"insurance_fund": 0.0},
    )
    m = ContagionModel(cfg, population=population([1000.0, 1000.0], [3.0, -1.0]))
    # the market trades 2% over the fundamental for the whole interval
    m.market.impact[:] = np.log(1.02)
    m.market.impact_start[:] = np.log(1.02)
    m.run()
    rate = 0.02 - INTEREST_BAND  # premium 2%, above the band: clamp(1e-4 - 0.02) = -0.0005
    assert m.funding.last_rate[0] == pytest.approx(rate, rel=1e-9)
    mark = m.mark[0]
    np.testing.assert_allclose(m.book.wallet, [1000 - 3 * mark * rate, 1000 + mark * rate])
    # the market agent sold the traders' net 2 units at 100 and holds -2: it receives
    # 2 x mark x rate
    assert m.market.cash[0] == pytest.approx(2.0 * 100.0 + 2 * mark * rate, rel=1e-12)
    assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)
    assert m.funding.settlements == 1
    # the long (3 units) paid 3 x mark x rate to the short and the market agent
    assert m.funding.paid_by_longs == pytest.approx(3 * mark * rate, rel=1e-12)


def test_funding_off_by_default(small_cfg):
    assert ContagionModel(small_cfg, create_agents=False).funding is None


# ---- re-entry ----------------------------------------------------------------------------------


def test_liquidated_trader_reenters_after_the_cooldown_with_a_deposit():
    # a 50x long wiped out by the -10% shock at step 1 (bad debt, paid by the fund)
    cfg = one_asset(steps=5, traders={"reentry_steps": 3}, margin={"insurance_fund": 1e6})
    m = ContagionModel(cfg, population=population([200.0, 1e6], [100.0, -1.0]))
    for t in range(1, 4):
        m.step()
        assert m.book.qty[0, 0] == 0.0, t
    assert m.deposits == 0.0
    m.step()  # step 4 = liquidation step 1 + cooldown 3
    assert m.deposits == pytest.approx(200.0, rel=1e-12)  # its equity was 0
    # reopened at its initial leverage, 50x of the fresh collateral at the current price
    assert m.book.qty[0, 0] == pytest.approx(50 * 200.0 / 90.0, rel=1e-6)
    total = m.money()["total"]
    assert total == pytest.approx(m.initial_money + m.deposits, rel=1e-12)
    assert m.summary()["money_error"] < 1e-12
    steps = m.tables()["steps"]
    np.testing.assert_allclose(steps["deposits"], [0.0, 0.0, 0.0, 200.0])  # cumulative


def test_reentrants_each_step_are_those_the_whole_book_rule_names():
    """Re-entry looks only at the accounts waiting to come back (model.reentry); every step it
    must name the accounts the rule names over the whole book: liquidated in an earlier
    step than the cooldown ago, not since re-entered, able to come back, flat. A one-step
    cooldown at 40x re-enters hundreds of accounts, some liquidated again in the step they
    came back (their liquidation is then not after their re-entry: they wait for another)."""
    cfg = build_config(
        small_config(
            steps=80,
            traders={"count": 400, "leverage": 40.0, "reentry_steps": 1},
            shocks=[
                {"step": s, "asset": "BTC", "return": -0.06} for s in (5, 6, 7, 20, 21, 40, 41)
            ],
        )
    )
    m = ContagionModel(cfg, create_agents=False)
    r = m.reentry
    n = m.book.n_traders
    seen, last_liq, last_re = np.zeros(n, np.int64), np.full(n, -1), np.full(n, -1)
    real = r.orders
    counts = {"reentered": 0, "liquidated_on_return": 0}

    def checked(step):
        count = r.liquidation_count
        new = count != seen
        last_liq[new] = step - 1
        counts["liquidated_on_return"] += int(np.count_nonzero(new & (last_liq == last_re)))
        seen[:] = count
        due = (last_liq >= 0) & (last_liq > last_re) & (step - last_liq >= 1) & (r.leverage > 0)
        expected = np.flatnonzero(due & ~(m.book.qty != 0).any(axis=1))
        rows, dq, lev = real(step)
        np.testing.assert_array_equal(rows, expected, err_msg=f"step {step}")
        last_re[rows] = step
        counts["reentered"] += rows.size
        return rows, dq, lev

    r.orders = checked
    m.run()
    assert counts["reentered"] == r.reentries > 100
    assert counts["liquidated_on_return"] > 0


def test_no_reentry_by_default():
    cfg = one_asset(steps=5, margin={"insurance_fund": 1e6})
    m = ContagionModel(cfg, population=population([200.0, 1e6], [100.0, -1.0])).run()
    assert m.reentry is None and m.deposits == 0.0 and m.book.qty[0, 0] == 0.0


# ---- everything on -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_money_conserved_every_step_with_everything_on(mode):
    cfg = build_config(
        small_config(
            steps=60,
            market={
                "depth_stress": 0.05,
                "depth_recovery": 0.2,
                "mark_lag": 0.3,
                "funding_interval": 4,
            },
            traders={
                "count": 600,
                "strategies": {
                    "hold": 0.2,
                    "target_leverage": 0.2,
                    "momentum": 0.2,
                    "value": 0.2,
                    "noise": 0.2,
                },
                "reentry_steps": 4,
            },
            margin={"mode": mode, "insurance_fund": 0.0, "adl": True},
            shocks=[
                {"step": 10, "asset": "BTC", "return": -0.2},
                {"step": 30, "asset": "ETH", "return": 0.2},
            ],
        )
    )
    m = ContagionModel(cfg, create_agents=False)
    for _ in range(cfg.steps):
        m.step()
        expected = m.initial_money + m.deposits
        total = m.money()["total"]
        assert abs(total - expected) <= 1e-9 * abs(expected)
        assert abs(total - expected) <= 1e-12 * money_scale(m)
        for arr in (m.book.wallet, m.book.qty, m.book.margin, m.mark):
            assert np.isfinite(arr).all()
    fills = m.tables()["liquidations"]
    assert (fills["kind"] == "adl").any()
    assert m.deposits > 0 and m.funding.settlements == 15
    assert m.summary()["money_error"] < 1e-9


@pytest.mark.parametrize("assets", [1, 2, 3, 7, 8, 9])
def test_funding_payments_are_the_broadcast_product_to_the_bit(assets):
    rng = np.random.default_rng(assets)
    qty = rng.normal(size=(1000, assets)) * np.where(rng.random((1000, assets)) < 0.2, 0.0, 1.0)
    mark = rng.uniform(1.0, 6e4, assets)
    rate = rng.normal(0.0, 1e-4, assets)
    expected = qty * mark * rate  # (q x mark) x rate, as numpy broadcasts it
    got = funding_payments(qty, mark, rate)
    assert got.shape == expected.shape
    assert np.array_equal(got.view(np.int64), expected.view(np.int64))
    # a 1-D inventory (the market agent's, the vault's) as before
    assert np.array_equal(funding_payments(qty[0], mark, rate), qty[0] * mark * rate)


def test_funding_charges_isolated_margins_and_cross_wallets_apart():
    """A cross long and an isolated long (one account each) pay the same q x mark x rate,
    the first out of its wallet, the second out of its position margin."""
    cfg = one_asset(
        shock=None,
        steps=2,
        market={"funding_interval": 2, "funding_cap": 0.05, "funding_interest": 1e-4},
        margin={"insurance_fund": 0.0},
    )
    pop = population([1000.0, 600.0, 2000.0], [3.0, 3.0, -6.0])
    pop.isolated[1, 0] = True
    pop.margin[1, 0] = 400.0
    m = ContagionModel(cfg, population=pop)
    m.market.impact[:] = np.log(1.02)
    m.market.impact_start[:] = np.log(1.02)
    m.run()
    rate = 0.02 - INTEREST_BAND
    paid = 3 * m.mark[0] * rate
    assert m.book.wallet[0] == pytest.approx(1000 - paid, rel=1e-12)
    assert m.book.margin[1, 0] == pytest.approx(400 - paid, rel=1e-12)
    assert m.book.wallet[1] == 600.0  # the isolated position's wallet is untouched
    assert m.book.wallet[2] == pytest.approx(2000 + 2 * paid, rel=1e-12)
    assert m.funding.paid_by_longs == pytest.approx(2 * paid, rel=1e-12)
    assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)
