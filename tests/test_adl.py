"""Auto-deleveraging: ranking, the bankruptcy price, queue walking, socialised loss, records."""

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.adl import adl_scores, allocate_in_order, socialize
from model.config import build_config
from model.population import Population


def one_asset(*, fund=0.0, adl=True, shock=-0.10, steps=1):
    """One asset at 100, volatility 0, a book so deep that fills happen at the fundamental."""
    return build_config(
        {
            "seed": 3,
            "steps": steps,
            "market": {"volatility": 0.0, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": 100.0, "depth": 1.0e15, "max_leverage": 100}],
            "traders": {"count": 0},
            "margin": {"liquidation": "full", "fee": 0.0, "insurance_fund": fund, "adl": adl},
            "shocks": [{"step": 1, "asset": "X", "return": shock}],
        }
    )


def population(wallet, qty, entry, isolated=None, margin=None):
    n = len(wallet)
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=np.asarray(wallet, float),
        qty=np.asarray(qty, float)[:, None],
        entry=np.asarray(entry, float)[:, None],
        isolated=np.zeros((n, 1), bool) if isolated is None else np.asarray(isolated)[:, None],
        margin=np.zeros((n, 1)) if margin is None else np.asarray(margin, float)[:, None],
        strategy=np.array(["hold"] * n, dtype=object),
    )


# The bankrupt long: 50 units bought at 100 on 100 of collateral (50x). After a -10% shock it
# is closed at 90 with equity 100 - 50 x 10 = -400: its bankruptcy price is 100 - 100/50 = 98,
# 8 above the fill, and ADL closes 50 units of shorts at 98.
BANKRUPT = (100.0, 50.0, 100.0)
# Short B: 100 collateral, 20 units at 100: profit 200 at 90, equity 300,
#   score = (200 / 2000) x (1800 / 300) = 0.6.
# Short A: 1000 collateral, 40 units at 100: profit 400, equity 1400,
#   score = (400 / 4000) x (3600 / 1400) = 0.257.
SHORT_B = (100.0, -20.0, 100.0)
SHORT_A = (1000.0, -40.0, 100.0)


def test_scores_are_profit_percent_times_effective_leverage():
    q = np.array([-20.0, -40.0, 10.0])
    e = np.array([100.0, 100.0, 80.0])
    eq = np.array([300.0, 1400.0, 500.0])
    expected = [
        (200 / 2000) * (1800 / 300),
        (400 / 4000) * (3600 / 1400),
        (100 / 800) * (900 / 500),
    ]
    np.testing.assert_allclose(adl_scores(q, e, 90.0, eq), expected, rtol=1e-12)


def test_queue_takes_in_order_and_the_last_in_part():
    np.testing.assert_allclose(allocate_in_order([160.0, 320.0, 50.0], 240.0), [160, 80, 0])
    np.testing.assert_allclose(allocate_in_order([1.0, 2.0], 10.0), [1, 2])
    np.testing.assert_allclose(allocate_in_order([1.0, 2.0], 0.0), [0, 0])


def test_socialize_is_pro_rata_and_capped():
    np.testing.assert_allclose(socialize([100.0, 300.0, -5.0], 40.0), [10, 30, 0])
    np.testing.assert_allclose(socialize([100.0, 300.0], 1000.0), [100, 300])


def test_adl_closes_the_bankrupt_quantity_at_the_bankruptcy_price_by_rank():
    pop = population(*zip(BANKRUPT, SHORT_A, SHORT_B, strict=True))
    m = ContagionModel(one_asset(), population=pop)
    m.run()
    fills = m.tables()["liquidations"]
    adl = fills[fills["kind"] == "adl"]
    # B (score 0.6) first and whole: gives back 20 x 8 = 160; A then 240 / 8 = 30 of its 40.
    assert list(adl["trader_id"]) == [2, 1]
    np.testing.assert_allclose(adl["quantity"], [-20.0, -30.0], rtol=1e-9)
    np.testing.assert_allclose(adl["price"], [98.0, 98.0], rtol=1e-9)
    assert (adl["fee"] == 0).all() and (adl["bad_debt"] == 0).all()
    np.testing.assert_allclose(m.book.qty[:, 0], [0.0, -10.0, 0.0], atol=1e-9)
    # realised at 98: B 100 + 20 x 2, A 1000 + 30 x 2
    np.testing.assert_allclose(m.book.wallet, [0.0, 1060.0, 140.0], rtol=1e-9)
    assert m.engine.unfunded_bad_debt == pytest.approx(0.0, abs=1e-6)
    assert m.engine.socialized_loss == 0.0
    steps = m.tables()["steps"]
    assert steps["adl_notional"].sum() == pytest.approx(50 * 98.0, rel=1e-9)
    summary = m.summary()
    assert summary["adl_notional"] == pytest.approx(50 * 98.0, rel=1e-9)
    # ADL fills are not liquidations: one forced fill, the bankrupt long's 50 units
    assert summary["liquidations"] == 1 and summary["accounts_liquidated"] == 1
    assert summary["liquidated_notional"] == pytest.approx(50 * m.market.price[0], rel=1e-12)
    # ADL has no impact: the price is the one the bankrupt long's sale of 50 units left
    depth_qty = 1.0e15 / 100.0
    assert m.market.price[0] == pytest.approx(90.0 * np.exp(-0.01 * (50 / depth_qty) ** 0.5))
    assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)


def test_fund_pays_first_and_adl_only_the_rest():
    pop = population(*zip(BANKRUPT, SHORT_A, SHORT_B, strict=True))
    m = ContagionModel(one_asset(fund=200.0), population=pop)
    m.run()
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    # shortfall 400 - 200 = 200 at 8 a unit (the bankruptcy price stays 98): 25 units,
    # B's 20 whole and 5 of A's
    assert list(adl["trader_id"]) == [2, 1]
    fill = 90.0 * np.exp(-0.01 * (50 / 1.0e13) ** 0.5)  # the bankrupt long's (tiny) impact
    units = (50 * (98.0 - fill) - 200.0) / (98.0 - fill)
    assert units == pytest.approx(25.0, rel=1e-5)
    np.testing.assert_allclose(adl["quantity"], [-20.0, 20.0 - units], rtol=1e-9)
    np.testing.assert_allclose(adl["price"], [98.0, 98.0], rtol=1e-9)
    assert m.engine.insurance_fund == pytest.approx(0.0, abs=1e-6)
    assert m.engine.unfunded_bad_debt == pytest.approx(0.0, abs=1e-6)


def test_adl_leaves_no_unfunded_debt_while_counterparties_exist_and_off_leaves_it():
    pop = population(*zip(BANKRUPT, SHORT_A, SHORT_B, strict=True))
    on = ContagionModel(one_asset(adl=True), population=pop).run()
    off = ContagionModel(one_asset(adl=False), population=pop).run()
    assert on.engine.unfunded_bad_debt == pytest.approx(0.0, abs=1e-6)
    assert off.engine.unfunded_bad_debt == pytest.approx(400.0, rel=1e-6)
    assert (off.tables()["liquidations"]["kind"] != "adl").all()
    for m in (on, off):
        assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)


def test_a_profitable_position_never_gives_back_more_than_its_profit():
    # one short whose profit (10 x 10 = 100) is less than the shortfall (400)
    small = (1000.0, -10.0, 100.0)
    pop = population(*zip(BANKRUPT, small, strict=True))
    m = ContagionModel(one_asset(), population=pop).run()
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    np.testing.assert_allclose(adl["quantity"], [-10.0], rtol=1e-9)
    # it closes at its entry (100): capacity = min(10 x 8, 100) = 80 -> price 90 + 80/10 = 98
    np.testing.assert_allclose(adl["price"], [98.0], rtol=1e-9)
    assert m.book.wallet[1] == pytest.approx(1000.0 + 10 * 2.0, rel=1e-9)
    # nobody else has profit: the remaining 320 is unfunded
    assert m.engine.unfunded_bad_debt == pytest.approx(320.0, rel=1e-6)


def test_what_adl_cannot_cover_is_a_haircut_on_cross_paper_profits():
    # no shorts; a long bought at 50 has a paper profit of 10 x 40 = 400 at 90
    winner = (1000.0, 10.0, 50.0)
    other = (1000.0, 10.0, 60.0)  # profit 300
    pop = population(*zip(BANKRUPT, winner, other, strict=True))
    m = ContagionModel(one_asset(), population=pop).run()
    assert (m.tables()["liquidations"]["kind"] != "adl").all()  # nobody on the other side
    # 400 taken pro rata to profits 400 : 300
    np.testing.assert_allclose(m.book.wallet[1:], [1000 - 400 * 4 / 7, 1000 - 400 * 3 / 7])
    assert m.engine.socialized_loss == pytest.approx(400.0, rel=1e-6)
    assert m.tables()["steps"]["socialized_loss"].iloc[-1] == pytest.approx(400.0, rel=1e-6)
    assert m.engine.unfunded_bad_debt == pytest.approx(0.0, abs=1e-6)
    assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)


def test_isolated_counterparty_gives_back_from_its_margin():
    # isolated short: margin 100 of a 1000 collateral, 20 units at 100: unit equity 300
    pop = population(
        [100.0, 900.0],
        [50.0, -20.0],
        [100.0, 100.0],
        isolated=[False, True],
        margin=[0.0, 100.0],
    )
    m = ContagionModel(one_asset(), population=pop).run()
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    np.testing.assert_allclose(adl["quantity"], [-20.0], rtol=1e-9)
    # closed whole at 98: margin 100 + 20 x 2 released to the wallet
    assert m.book.margin[1, 0] == 0.0
    assert m.book.wallet[1] == pytest.approx(900.0 + 140.0, rel=1e-9)
    assert m.money()["total"] == pytest.approx(m.initial_money, rel=1e-12)


def test_adl_fills_are_written_to_the_run_folder(tmp_path):
    pop = population(*zip(BANKRUPT, SHORT_A, SHORT_B, strict=True))
    m = ContagionModel(one_asset(), population=pop).run()
    out = m.write_results(tmp_path / "run")
    fills = pd.read_parquet(out / "liquidations.parquet")
    assert set(fills["kind"].astype(str)) == {"full", "adl"}
    steps = pd.read_parquet(out / "steps.parquet")
    assert steps["adl_notional"].iloc[0] == pytest.approx(4900.0, rel=1e-9)


def listen(m):
    """The model's liquidation rounds, collected as the engine reports them."""
    rounds = []
    m.engine.on_round = rounds.append
    return rounds


def test_the_round_record_accounts_for_the_bad_debt_and_its_adl():
    pop = population(*zip(BANKRUPT, SHORT_A, SHORT_B, strict=True))
    m = ContagionModel(one_asset(), population=pop)
    rounds = listen(m)
    m.run()
    (rec,) = rounds
    fill = m.market.price[0]  # the bankrupt long's sale of 50 units left the price here
    debt = -(100.0 + 50.0 * (fill - 100.0))  # its equity once closed: about -400
    assert rec.bad_debt == pytest.approx(debt, rel=1e-12)
    assert rec.fees == 0.0 and rec.fund == 0.0  # no fee, nothing in the fund
    assert rec.adl_notional == pytest.approx(50 * 98.0, rel=1e-9)  # 20 + 30 units at 98
    assert rec.socialized == 0.0 and rec.unfunded == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(rec.full, [True])


def test_the_round_record_shows_the_haircut_and_what_stays_unfunded():
    winner = (1000.0, 10.0, 50.0)
    other = (1000.0, 10.0, 60.0)
    pop = population(*zip(BANKRUPT, winner, other, strict=True))
    m = ContagionModel(one_asset(), population=pop)
    rounds = listen(m)
    m.run()
    assert rounds[0].socialized == pytest.approx(400.0, rel=1e-6) and rounds[0].adl_notional == 0
    # one short with profit 100 against a shortfall of 400: 80 given back at 98, 320 unfunded
    small = (1000.0, -10.0, 100.0)
    m = ContagionModel(one_asset(), population=population(*zip(BANKRUPT, small, strict=True)))
    rounds = listen(m)
    m.run()
    assert rounds[0].adl_notional == pytest.approx(10 * 98.0, rel=1e-9)
    assert rounds[0].unfunded == pytest.approx(320.0, rel=1e-6)
    assert rounds[0].unfunded == pytest.approx(m.engine.unfunded_bad_debt, rel=1e-12)


def test_auto_deleverage_reports_its_fills_and_leaves_recording_to_the_caller():
    from model.adl import auto_deleverage

    pop = population(*zip(SHORT_A, SHORT_B, strict=True))
    m = ContagionModel(one_asset(), population=pop)
    # a shortfall of 240 left by 30 bankrupt long units at 90: bankruptcy price 90 + 8
    price = np.array([90.0])
    result = auto_deleverage(m.book, m.market, [240.0], price, bankrupt_qty=[30.0])
    # B (score 0.6) first: all 20 units; then A: 80 / 8 = 10 units
    np.testing.assert_array_equal(result.rows, [1, 0])
    np.testing.assert_array_equal(result.asset, [0, 0])
    np.testing.assert_allclose(result.quantity, [-20.0, -10.0], rtol=1e-12)
    np.testing.assert_allclose(result.price, [98.0, 98.0], rtol=1e-12)
    np.testing.assert_allclose(result.notional, [1960.0, 980.0], rtol=1e-12)
    assert result.adl_notional == pytest.approx(2940.0, rel=1e-12)
    assert result.socialized == 0.0
    np.testing.assert_allclose(result.unfunded, [0.0], atol=1e-9)
    np.testing.assert_allclose(m.book.qty[:, 0], [-30.0, 0.0], rtol=1e-12)  # applied to the book
    assert len(m.engine.fills) == 0 and m.engine.totals.adl_notional == 0.0  # not recorded
