"""Auto-deleveraging: ranking, the bankruptcy price, queue walking, socialised loss, records."""

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.adl import (
    Candidates,
    allocate_in_order,
    givebacks,
    pro_rata,
    queue_order,
    score_binance,
    score_bitmex,
    score_hyperliquid,
    socialize,
)
from model.config import build_config
from model.population import Population


def one_asset(*, fund=0.0, adl=True, shock=-0.10, steps=1, **margin):
    """One asset at 100, volatility 0, a book so deep that fills happen at the fundamental;
    ``margin`` adds keys to the ``[margin]`` section (``adl_ranking``, ``adl_profit_cap``)."""
    return build_config(
        {
            "seed": 3,
            "steps": steps,
            "market": {"volatility": 0.0, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": 100.0, "depth": 1.0e15, "max_leverage": 100}],
            "traders": {"count": 0},
            "margin": {
                "liquidation": "full",
                "fee": 0.0,
                "insurance_fund": fund,
                "adl": adl,
                **margin,
            },
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
    np.testing.assert_allclose(score_bitmex(q, e, 90.0, eq), expected, rtol=1e-12)


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


def test_a_counterparty_gives_back_the_full_bankruptcy_price_when_its_profit_is_smaller():
    # one short from 97: its paper profit at 90 (10 x 7 = 70) is less than what closing at the
    # bankruptcy price 98 instead of 90 costs it (10 x 8 = 80)
    short = (1000.0, -10.0, 97.0)
    pop = population(*zip(BANKRUPT, short, strict=True))
    m = ContagionModel(one_asset(), population=pop).run()
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    # the default fills at the bankruptcy price: 10 units at 98, a realised loss of 1 a unit
    np.testing.assert_allclose(adl["quantity"], [-10.0], rtol=1e-9)
    np.testing.assert_allclose(adl["price"], [98.0], rtol=1e-12)
    assert m.book.wallet[1] == pytest.approx(1000.0 - 10 * 1.0, rel=1e-12)
    # 80 of the 400 covered, the rest unfunded (nobody else has a paper profit)
    assert m.engine.unfunded_bad_debt == pytest.approx(320.0, rel=1e-6)


def test_with_the_profit_cap_a_position_never_gives_back_more_than_its_profit():
    short = (1000.0, -10.0, 97.0)
    pop = population(*zip(BANKRUPT, short, strict=True))
    m = ContagionModel(one_asset(adl_profit_cap=True), population=pop).run()
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    np.testing.assert_allclose(adl["quantity"], [-10.0], rtol=1e-9)
    # capacity min(10 x 8, profit 70) = 70: closed whole at its entry, 97
    np.testing.assert_allclose(adl["price"], [97.0], rtol=1e-9)
    assert m.book.wallet[1] == pytest.approx(1000.0, rel=1e-12)
    assert m.engine.unfunded_bad_debt == pytest.approx(330.0, rel=1e-6)


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


# --------------------------------------------------------------------------------------------
# The bankruptcy-price fill, worked by hand
# --------------------------------------------------------------------------------------------

# Against the bankrupt long (bankruptcy price 98, shortfall 50 x (98 - P) = 400 at P = 90):
# E: short 30 from 92 on 10 of wallet: profit 60, equity 70, score (2/92) x (2700/70) = 0.8385
# C: short 20 from 95 on 1000: profit 100, equity 1100, score (5/95) x (1800/1100) = 0.0861
# F: short 40 from 100 on 20000: profit 400, equity 20400, score 0.1 x (3600/20400) = 0.0176
SHORT_E = (10.0, -30.0, 92.0)
SHORT_C = (1000.0, -20.0, 95.0)
SHORT_F = (20000.0, -40.0, 100.0)


def adl_run(*accounts, **margin):
    """Run the bankrupt long against ``accounts``; the model and the ADL fills of round 1."""
    pop = population(*zip(BANKRUPT, *accounts, strict=True))
    m = ContagionModel(one_asset(**margin), population=pop)
    m.run()
    fills = m.tables()["liquidations"]
    return m, fills.query("kind == 'adl' and round == 1").reset_index(drop=True)


def test_hand_worked_book_fills_at_the_bankruptcy_price_capped_at_unit_equity():
    m, adl = adl_run(SHORT_E, SHORT_C, SHORT_F)
    price = m.market.price[0]  # about 90: the long's sale of 50 units moved it a hair
    assert list(adl["trader_id"]) == [1, 2, 3]  # E, C, F by score
    # every fill at the bankruptcy price 98, 8 a unit above the round's price
    np.testing.assert_allclose(adl["price"], [98.0, 98.0, 98.0], atol=0.005)
    # E would give back 30 x 8 = 240 but has 70: it closes 70 / 8 = 8.75 units, ending at zero
    # equity; C gives back 20 x 8 = 160 (it loses 3 a unit on its entry: 100 of profit and 60
    # of margin); F the remaining 400 - 70 - 160 = 170: 21.25 units. 50 units in all.
    np.testing.assert_allclose(adl["quantity"], [-8.75, -20.0, -21.25], atol=1e-4)
    giveback = np.abs(adl["quantity"]) * (adl["price"] - price)
    np.testing.assert_allclose(giveback, [70.0, 160.0, 170.0], atol=0.005)
    # E's 21.25 units left at zero equity are liquidated in round 2, at about 90: its wallet
    # 10 + 8.75 x (92 - 98) + 21.25 x (92 - 90) = 0; C 1000 - 20 x 3; F 20000 + 21.25 x 2
    np.testing.assert_allclose(m.book.wallet[1:], [0.0, 940.0, 20042.5], atol=0.005)
    np.testing.assert_allclose(m.book.qty[:, 0], [0.0, 0.0, 0.0, -18.75], atol=1e-4)
    fills = m.tables()["liquidations"]
    again = fills[(fills["round"] == 2) & (fills["kind"] == "full")]
    assert list(again["trader_id"]) == [1]
    np.testing.assert_allclose(again["quantity"], [-21.25], atol=1e-4)
    # buying back those 21.25 units moved the price against E by its own (tiny) impact: the
    # bad debt that left, nobody on the other side to deleverage, is a haircut on F's profit
    assert 0 < again["bad_debt"].sum() < 1e-3
    assert m.engine.socialized_loss == pytest.approx(again["bad_debt"].sum(), rel=1e-6)
    assert m.engine.unfunded_bad_debt == pytest.approx(0.0, abs=1e-6)


def test_adl_money_identity_holds_exactly():
    """The givebacks cover the debt the write-off created, and the market agent, which took the
    other side at the round's price, neither gains nor loses by them."""
    pop = population(*zip(BANKRUPT, SHORT_C, SHORT_F, strict=True))
    m = ContagionModel(one_asset(), population=pop)
    rounds = listen(m)
    market_cash, market_inventory = m.market.cash.copy(), m.market.inventory.copy()
    m.run()
    (rec,) = rounds
    price = m.market.price[0]
    adl = m.tables()["liquidations"].query("kind == 'adl'")
    # every ADL fill's giveback against the round's price sums to the bad debt it covered
    giveback = float((np.abs(adl["quantity"]) * (adl["price"] - price)).sum())
    assert giveback == pytest.approx(rec.bad_debt - m.engine.unfunded_bad_debt, rel=1e-12)
    # 50 units closed by ADL, as many as the bankrupt long sold: the market agent bought 50
    # and sold 50 back, all at ``price``, and is where it was
    assert float(np.abs(adl["quantity"]).sum()) == pytest.approx(50.0, rel=1e-9)
    assert m.market.inventory[0] == pytest.approx(market_inventory[0], abs=1e-9)
    assert m.market.cash[0] == pytest.approx(market_cash[0], abs=1e-6)
    # traders + fund + market agent - unfunded: unchanged (no vault here)
    money = m.money()
    assert money["vault"] == 0.0
    assert abs(money["total"] - m.initial_money) <= 1e-9 * abs(m.initial_money)


def test_without_the_profit_cap_adl_covers_what_the_margin_of_counterparties_can():
    # E and C alone cannot cover 400: by default they give 70 + 160 = 230 at 98 (170
    # unfunded); with the profit cap only their profits 60 + 100 = 160, each closed whole at
    # its entry (240 unfunded)
    m, adl = adl_run(SHORT_E, SHORT_C)
    np.testing.assert_allclose(adl["quantity"], [-8.75, -20.0], atol=1e-4)
    np.testing.assert_allclose(adl["price"], [98.0, 98.0], atol=0.005)
    assert m.engine.unfunded_bad_debt == pytest.approx(170.0, abs=0.01)
    capped, adl = adl_run(SHORT_E, SHORT_C, adl_profit_cap=True)
    np.testing.assert_allclose(adl["quantity"], [-30.0, -20.0], atol=1e-9)
    np.testing.assert_allclose(adl["price"], [92.0, 95.0], atol=1e-9)
    np.testing.assert_allclose(capped.book.wallet[1:], [10.0, 1000.0], atol=1e-9)
    assert capped.engine.unfunded_bad_debt == pytest.approx(240.0, abs=0.01)


def test_a_losing_counterparty_is_deleveraged_after_the_profitable_ones():
    # a short from 85 loses 5 a unit at 90 but still has equity: it ranks last (PnL% / L < 0)
    # and gives back 8 a unit from its margin; the profit cap leaves it out
    loser = (500.0, -30.0, 85.0)
    small = (1000.0, -10.0, 100.0)  # profit 100, gives back 80 at 98
    m, adl = adl_run(loser, small)
    assert list(adl["trader_id"]) == [2, 1]
    np.testing.assert_allclose(adl["quantity"], [-10.0, -30.0], atol=1e-6)
    np.testing.assert_allclose(adl["price"], [98.0, 98.0], atol=1e-9)
    assert m.book.wallet[1] == pytest.approx(500.0 - 30 * 13.0, abs=0.005)  # 85 -> 98
    _, capped = adl_run(loser, small, adl_profit_cap=True)
    assert list(capped["trader_id"]) == [2]


# --------------------------------------------------------------------------------------------
# Rankings, by hand
# --------------------------------------------------------------------------------------------


def test_bitmex_score_divides_by_leverage_when_losing():
    # a short from 100 at 110: PnL% = -0.1, leverage 1100 / 500 = 2.2
    assert score_bitmex([-10.0], [100.0], 110.0, [500.0])[0] == pytest.approx(-0.1 / 2.2)
    # a long from 100 at 110 on the same equity: 0.1 x 2.2
    assert score_bitmex([10.0], [100.0], 110.0, [500.0])[0] == pytest.approx(0.22)


def test_binance_score_by_hand():
    # max(0, uPnL) / max(1, W) x MM / (W + uPnL); 0 when losing or when W + uPnL <= 0
    got = score_binance([1000.0, 0.5, 1000.0, 10.0], [200.0, 50.0, -100.0, -20.0], [30.0] * 4)
    expected = [200 / 1000 * 30 / 1200, 50 / 1 * 30 / 50.5, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_hyperliquid_score_inverts_the_price_ratio_for_shorts():
    # long 2 from 80 at 100 on 500: (100 / 80) x (200 / 500); short 2 from 120: (120 / 100) x ..
    got = score_hyperliquid([2.0, -2.0], [80.0, 120.0], 100.0, [500.0, 500.0])
    np.testing.assert_allclose(got, [1.25 * 0.4, 1.2 * 0.4], rtol=1e-12)
    # for shorts, more profit (a higher entry) ranks higher
    assert np.all(
        np.diff(score_hyperliquid([-1.0] * 3, [101.0, 110.0, 150.0], 100.0, [1.0] * 3)) > 0
    )


# Four shorts at 90 (wallet, qty, entry): the worked book of docs/market-realism.md.
WORKED = [(100.0, -20.0, 100.0), (1000.0, -40.0, 100.0), (50.0, -10.0, 91.0), (500.0, -30.0, 85.0)]


def worked_candidates():
    w, q, e = (np.array(c) for c in zip(*WORKED, strict=True))
    upnl = q * (90.0 - e)
    mm = np.abs(q) * 90.0 * 0.005
    return Candidates(np.arange(4), q, e, w + upnl, w, upnl, mm)


def test_queue_orders_by_hand():
    cand = worked_candidates()
    # bitmex: 0.1 x 1800/300 = 0.6; 0.1 x 3600/1400 = 0.257; (1/91) x 900/60 = 0.165;
    #   (-5/85) / (2700/350) = -0.0076
    assert list(queue_order("bitmex", cand, 90.0)) == [0, 1, 2, 3]
    # binance: 200/100 x 9/300 = 0.06; 400/1000 x 18/1400 = 0.0051; 10/50 x 4.5/60 = 0.015; 0
    assert list(queue_order("binance", cand, 90.0)) == [0, 2, 1, 3]
    # hyperliquid: (100/90) 6 = 6.67; (100/90) 2.57 = 2.86; (91/90) 15 = 15.2; (85/90) 7.71 = 7.29
    assert list(queue_order("hyperliquid", cand, 90.0)) == [2, 3, 0, 1]
    assert list(queue_order("pro_rata", cand, 90.0)) == [0, 1, 2, 3]
    # random: book order from a start drawn from the stream given
    start = int(np.random.default_rng(11).integers(4))
    expected = [(start + i) % 4 for i in range(4)]
    assert list(queue_order("random", cand, 90.0, np.random.default_rng(11))) == expected


@pytest.mark.parametrize("ranking", ["bitmex", "binance", "hyperliquid"])
def test_a_ranked_queue_gives_as_the_whole_queue_sorted_would(ranking):
    """givebacks() sorts only the head of a long queue that covers the need: the positions
    that give, their order and what each gives are those of walking the whole queue in
    queue_order(), with ties in the score (rounded entries), small and large needs."""
    rng = np.random.default_rng(5)
    for trial in range(60):
        k = int(rng.integers(1, 6000))
        rows = np.sort(rng.choice(200_000, k, replace=False))
        q = rng.choice([-1.0, 1.0], k) * rng.uniform(0.1, 3.0, k)
        e = rng.uniform(50.0, 150.0, k)
        w = rng.uniform(1.0, 100.0, k)
        if trial % 2:  # positions drawn from a few: many equal scores, ordered by row
            pick = rng.integers(0, 7, k)
            q, e, w = q[pick], e[pick], w[pick]
        upnl = q * (100.0 - e)
        mm = np.abs(q) * 100.0 * 0.005
        cand = Candidates(rows, q, e, w + np.maximum(upnl, 0.0) + 1.0, w, upnl, mm)
        capacity = rng.uniform(0.0, 10.0, k)
        need = float(rng.choice([0.5, 40.0, 0.1 * capacity.sum(), 2.0 * capacity.sum()]))
        whole = queue_order(ranking, cand, 100.0)
        take_whole = allocate_in_order(capacity[whole], need)
        order, take = givebacks(ranking, cand, 100.0, capacity, need)
        gives = take > 0
        assert np.array_equal(order[gives], whole[take_whole > 0])
        assert np.array_equal(take[gives], take_whole[take_whole > 0])


def test_pro_rata_fills_water_by_hand():
    # sizes 10, 10, 20; the first can give only 10 (capacity / size = 1 < the level)
    # level 3: 10 + 3 x 10 + 3 x 20 = 100
    np.testing.assert_allclose(pro_rata([10.0, 100.0, 100.0], [10, 10, 20], 100.0), [10, 30, 60])
    # level 0.375: nobody capped, 15 in proportion 1 : 1 : 2
    np.testing.assert_allclose(
        pro_rata([10.0, 100.0, 100.0], [10, 10, 20], 15.0), [3.75, 3.75, 7.5]
    )
    np.testing.assert_allclose(pro_rata([10.0, 100.0], [1, 1], 1e9), [10, 100])
    np.testing.assert_allclose(pro_rata([10.0, 100.0], [1, 1], 0.0), [0, 0])
