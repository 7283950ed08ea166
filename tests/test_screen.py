"""The margin screen: its bound is safe, and screened runs equal runs that check everyone.

The bound is checked against brute force (random accounts, random price moves inside the
headroom: no unit may be below maintenance), and whole runs with the screen on and off are
compared table by table on random populations with cross and isolated margin, tiers and shocks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.accounts import AccountBook, TierTable
from model.config import build_config, to_dict
from model.population import Population
from model.screen import (
    LANE_BOTH,
    LANE_FALL,
    LANE_RISE,
    MAX_HEADROOM,
    MarginScreen,
    headroom,
    log_distance,
    reaches,
)
from tests.helpers import small_config

TIERS = TierTable.from_lists(
    [
        [(5e4, 0.004), (2.5e5, 0.005), (1e6, 0.01), (1e7, 0.025), (np.inf, 0.05)],
        [(np.inf, 0.02)],
    ]
)


def random_book(rng, n, tiers=TIERS, iso_share=0.4):
    """Accounts with random positions, entries away from the mark, mixed cross/isolated."""
    a = tiers.n_assets
    price = np.array([60000.0, 3000.0])[:a]
    held = rng.random((n, a)) < 0.7
    side = np.where(rng.random((n, a)) < 0.6, 1.0, -1.0)
    notional = np.exp(rng.normal(np.log(2e4), 2.0, (n, a)))
    qty = np.where(held, side * notional / price, 0.0)
    entry = np.where(held, price * np.exp(rng.normal(0, 0.05, (n, a))), 0.0)
    iso = held & (rng.random((n, a)) < iso_share)
    lev = np.exp(rng.uniform(np.log(1.5), np.log(60), (n, a)))
    margin = np.where(iso, notional / lev, 0.0)
    wallet = (np.where(held & ~iso, notional / lev, 0.0)).sum(axis=1) * rng.uniform(0, 1.2, n)
    return AccountBook(np.arange(n), wallet, qty, entry, tiers, isolated=iso, margin=margin)


def units_below(book, mark):
    """Brute force: any unit of any account below maintenance at ``mark``."""
    return book.cross_liquidatable(mark) | book.isolated_liquidatable(mark).any(axis=1)


def test_log_distance_by_hand():
    assert log_distance(np.array([100.0, 50.0]), np.array([100.0, 100.0])) == pytest.approx(
        np.log(2.0)
    )
    assert log_distance(np.array([1.0]), np.array([1.0])) == 0.0


def one_account(wallet, qty, entry, rate):
    """Headroom and lane of one cross account in one asset with a flat maintenance rate."""
    h, lane = headroom(
        np.array([wallet]),
        np.array([[qty]]),
        np.array([[entry]]),
        np.zeros((1, 1)),
        np.zeros((1, 1), bool),
        np.array([entry]),
        TierTable.flat([rate]),
    )
    return h[0], lane[0]


def test_headroom_of_one_long_by_hand():
    # 1 unit long at 100, wallet 10, flat 1% maintenance: S(P) = 10 + (P - 100) - 0.01 P.
    h, lane = one_account(10.0, 1.0, 100.0, 0.01)
    # only a fall can hurt it; S(100) = 9 against (1 - 0.01) x notional 100 (a fall lowers
    # the maintenance too): h = -log(1 - 9 / 99) = log(1.1)
    # (less a rounding allowance of about 1e-9 of the account's size, never more)
    assert lane == LANE_FALL
    assert h == pytest.approx(-np.log(1 - 9.0 / 99.0), rel=1e-6)
    assert h < -np.log(1 - 9.0 / 99.0)
    # and the true liquidation price, 90 / 0.99, is indeed beyond that fall: with one asset
    # and a flat rate the bound is the liquidation price itself, less the allowance
    assert np.log(100.0 / (90.0 / 0.99)) > h
    # the allowance by hand: 1e-9 of |W| + |q| (M + e) + mm = 10 + 200 + 1 off the slack,
    # then 1e-12 relative and absolute off h
    slack = 9.0 - 1e-9 * 211.0
    assert h == pytest.approx(-np.log(1 - slack / 99.0) * (1 - 1e-12) - 1e-12, rel=1e-12)


def test_headroom_of_one_short_by_hand():
    # 1 unit short at 100, wallet 10, flat 1%: S(P) = 10 - (P - 100) - 0.01 P.
    h, lane = one_account(10.0, -1.0, 100.0, 0.01)
    # S(100) = 9, c = 100 (1 + 0.01) = 101: h = log(1 + 9 / 101), against rises
    assert lane == LANE_RISE
    assert h == pytest.approx(np.log1p(9.0 / 101.0), rel=1e-6)
    # the true liquidation price, 110 / 1.01, is beyond that rise
    assert np.log((110.0 / 1.01) / 100.0) > h


def test_a_long_that_survives_a_fall_to_zero_has_infinite_headroom():
    h, lane = one_account(1000.0, 1.0, 100.0, 0.01)  # more collateral than notional
    assert lane == LANE_FALL and h == np.inf


def test_reaches_by_hand():
    r = reaches(np.array([110.0, 45.0]), np.array([100.0, 50.0]))
    assert r == pytest.approx([np.log(50 / 45), np.log(50 / 45), np.log(1.1)])
    assert reaches(np.array([90.0]), np.array([100.0]))[2] == 0.0


def test_headroom_never_claims_an_account_safe_that_is_not():
    rng = np.random.default_rng(3)
    book = random_book(rng, 4000)
    mark = np.array([60000.0, 3000.0])
    h, lane = headroom(book.wallet, book.qty, book.entry, book.margin, book.isolated, mark, TIERS)
    flat = (book.qty == 0).all(axis=1)
    assert (h[flat] == np.inf).all()
    assert (h[lane == LANE_RISE] <= MAX_HEADROOM).all()
    assert (lane == LANE_FALL).sum() > 500 and (lane == LANE_RISE).sum() > 500
    assert (lane == LANE_BOTH).sum() > 500
    # accounts already below maintenance have no headroom
    assert (h[units_below(book, mark)] == -np.inf).all()
    inside = np.isfinite(h) & (h > 0)
    assert inside.sum() > 1000
    n = book.n_traders
    hmax = np.where(inside, h, 0.0)[:, None]
    for _ in range(300):
        # each account's own mark, right at the edge of what its lane allows, mostly: a move
        # of up to its headroom in the direction(s) its lane measures, anything (up to 10x)
        # in the direction it ignores
        edge = np.where(rng.random((n, 1)) < 0.7, 1.0, rng.random((n, 2))) * (1 - 1e-12)
        free = rng.uniform(0.0, np.log(10.0), (n, 2))
        sign = rng.choice([-1.0, 1.0], size=(n, 2))
        move = np.where(
            (lane == LANE_BOTH)[:, None],
            sign * edge * hmax,
            np.where(
                (lane == LANE_FALL)[:, None],
                np.where(sign < 0, -edge * hmax, free),  # falls bounded, rises free
                np.where(sign > 0, edge * hmax, -free),  # rises bounded, falls free
            ),
        )
        marks = mark * np.exp(move)
        assert not units_below(book, marks)[inside].any()


def test_headroom_is_tight_enough_to_be_useful():
    # A 10x long with a 0.5% maintenance rate is liquidated about 9.5% below entry;
    # its headroom must be most of that, not a tiny fraction.
    h, _ = one_account(100.0, 10.0, 100.0, 0.005)
    assert 0.09 < h < np.log(100.0 / (900.0 / 9.95))


def test_without_rates_below_one_every_account_is_measured_both_ways():
    h, lane = one_account(10.0, 1.0, 100.0, 1.0)  # maintenance of 100%: a rise hurts a long
    assert lane == LANE_BOTH


def test_screen_candidates_contain_every_liquidatable_account():
    rng = np.random.default_rng(11)
    book = random_book(rng, 3000)
    screen = MarginScreen(book)
    mark = np.array([60000.0, 3000.0])
    for _ in range(300):
        mark = mark * np.exp(rng.normal(0, 0.01, 2))
        cand = screen.candidates(mark)
        assert (np.diff(cand) > 0).all()
        below = np.flatnonzero(units_below(book, mark))
        assert np.isin(below, cand).all()
        # change a few accounts behind the screen's back, reported as the contract says
        rows = rng.choice(book.n_traders, 20, replace=False)
        book.fill(rows, rng.normal(0, 0.05, (20, 2)) * (book.qty[rows] != 0), mark)
        book.charge(rows[:5], wallet=0.5 * book.wallet[rows[:5]])
    # the screen skipped most of the book
    assert screen.rebuilds < 300


def population_of(book):
    return Population(
        book.ids,
        book.wallet,
        book.qty,
        book.entry,
        book.isolated,
        book.margin,
        np.full(book.n_traders, "hold", dtype=object),
    )


def run_both(cfg, population=None):
    runs = []
    for screen in (True, False):
        m = ContagionModel(cfg, create_agents=False, screen=screen, population=population)
        m.run()
        runs.append(m)
    return runs


def assert_identical(a, b):
    ta, tb = a.tables(), b.tables()
    for name in ("market", "steps", "liquidations", "accounts"):
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)
    ea, eb = a.recorder.edges(), b.recorder.edges()
    for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k])


@pytest.mark.parametrize(
    ("mode", "liquidation", "tiers", "seed"),
    [
        ("cross", "partial", True, 1),
        ("isolated", "partial", True, 2),
        ("cross", "full", False, 3),
        ("isolated", "full", False, 4),
    ],
)
def test_screened_run_equals_checking_everyone(mode, liquidation, tiers, seed):
    tier_list = [
        {"cap": 5e4, "rate": 0.004},
        {"cap": 2.5e5, "rate": 0.005},
        {"cap": 1e6, "rate": 0.01},
        {"cap": 1e7, "rate": 0.025},
        {"cap": 2e7, "rate": 0.05},
    ]
    data = small_config(
        seed=seed,
        steps=60,
        traders={"count": 1500, "leverage": 12.0, "leverage_dispersion": 0.8},
        margin={
            "mode": mode,
            "liquidation": liquidation,
            "insurance_fund": 2e4,
            **({"tiers": tier_list} if tiers else {"maintenance": 0.01}),
        },
        shocks=[
            {"step": 15, "asset": "BTC", "return": -0.07},
            {"step": 35, "asset": "ETH", "return": 0.09},
            {"step": 50, "asset": "BTC", "return": -0.12},
        ],
    )
    a, b = run_both(build_config(data))
    assert a.summary()["liquidations"] > 50  # the comparison covers real cascades
    assert a.engine.screen.checked < 60 * a.book.n_traders  # and the screen skipped work
    assert_identical(a, b)


def test_screened_run_equals_checking_everyone_on_mixed_population():
    # one population with cross and isolated positions side by side, some already underwater
    rng = np.random.default_rng(5)
    book = random_book(rng, 1200)
    data = small_config(
        steps=40,
        traders={"count": 1200},
        margin={
            "insurance_fund": 1e4,
            "tiers": [{"cap": 5e4, "rate": 0.004}, {"cap": 1e7, "rate": 0.02}],
        },
        shocks=[{"step": 20, "asset": "ETH", "return": -0.15}],
    )
    a, b = run_both(build_config(data), population_of(book))
    assert a.summary()["liquidations"] > 50
    assert_identical(a, b)


def busy_config(seed=9, market=None, liquidity=None, strategies=None, **margin):
    """Every feature that writes the book: noise and momentum traders, funding, re-entry,
    a thin insurance fund (ADL and socialised losses), shocks both ways."""
    return build_config(
        small_config(
            seed=seed,
            steps=80,
            market={"funding_interval": 8, **(market or {})},
            liquidity=liquidity or {},
            traders={
                "count": 1500,
                "leverage": 14.0,
                "leverage_dispersion": 0.8,
                "strategies": strategies or {"hold": 0.6, "noise": 0.3, "momentum": 0.1},
                "reentry_steps": 5,
            },
            margin={"insurance_fund": 0.0, **margin},
            shocks=[
                {"step": 20, "asset": "BTC", "return": -0.10},
                {"step": 45, "asset": "ETH", "return": 0.12},
                {"step": 60, "asset": "BTC", "return": -0.15},
            ],
        )
    )


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_screened_run_equals_checking_everyone_with_every_feature(mode):
    a, b = run_both(busy_config(mode=mode))
    assert a.summary()["liquidations"] > 50
    assert_identical(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("venue", ["binance", "bybit", "okx", "hyperliquid", "dydx"])
def test_screened_run_equals_checking_everyone_under_every_venue_preset(venue):
    # tiers per symbol, takeovers, chunks and their cooldown, per-round limits, the vault,
    # hourly funding and each ADL ranking (the random one drawing from the model's stream)
    a, b = run_both(busy_config(venue=venue))
    assert a.summary()["liquidations"] > 50
    if venue == "hyperliquid":
        assert a.engine.vault.taken_notional > 0
    assert_identical(a, b)


def test_aggregate_equity_tracks_the_full_sum_every_step():
    m = ContagionModel(busy_config(), create_agents=False)
    for _ in range(m.config.steps):
        m.step()
        full = m.book.total_equity(m.mark)
        scale = m.book.wallet.sum() + np.abs(m.book.qty * m.mark).sum()
        assert abs(m.book.aggregate_equity(m.mark) - full) <= 1e-9 * scale
        # the running count of accounts ever liquidated, against a count of the book
        assert m.engine.accounts_ever == (m.liquidation_count > 0).sum()
    assert m.summary()["liquidations"] > 50


def test_screened_run_equals_checking_everyone_with_a_lagged_mark_and_stressed_depth():
    # the mark the engine checks against trails the price; the book thins as selling goes on
    cfg = busy_config(seed=4, market={"mark_lag": 0.5, "depth_stress": 2.0}, mode="cross")
    a, b = run_both(cfg)
    assert a.summary()["liquidations"] > 50
    assert_identical(a, b)


@pytest.mark.parametrize("first", [0.08, -0.08])
def test_changed_accounts_keep_a_safe_key_after_the_price_turns(monkeypatch, first):
    # Accounts changed after prices moved one way must stay covered when prices turn back
    # and overshoot: their keys are measured from the anchor, not from where they changed.
    import model.screen as screen_module

    monkeypatch.setattr(screen_module, "NEAR_SHARE", 1.0)  # no horizon rebuilds
    rng = np.random.default_rng(21)
    book = random_book(rng, 3000, iso_share=0.3)
    screen = MarginScreen(book, rebuild_work=1e9)  # no work rebuilds either
    anchor = np.array([60000.0, 3000.0])
    screen.candidates(anchor)
    moved = anchor * np.exp(first)
    rows = np.flatnonzero((book.qty != 0).any(axis=1))
    rows = np.sort(rng.choice(rows, book.n_traders // 5, replace=False))  # (a fifth: no rebuild)
    book.fill(rows, 0.3 * book.qty[rows], moved)  # they add to their positions there
    screen.candidates(moved)
    missed = 0
    for x in np.linspace(first, -2.5 * first, 60):
        mark = anchor * np.exp(x)
        cand = screen.candidates(mark)
        below = np.flatnonzero(units_below(book, mark))
        missed += np.setdiff1d(below, cand).size
    assert screen.rebuilds == 1
    assert missed == 0


def well_funded_book(rng, n):
    """random_book's positions, all cross, at 5x (cash a fifth of the notional): no account
    is near maintenance at the entry marks these tests use, so no candidate is handed out,
    and every account with a position has a finite headroom (is listed when it changes)."""
    base = random_book(rng, n, iso_share=0.0)
    cash = 0.2 * np.abs(base.qty * base.entry).sum(axis=1)
    return AccountBook(np.arange(n), cash, base.qty, base.entry, TIERS)


def trade(book, rows, mark):
    """The rows add a tenth to their positions at ``mark`` (reported to the screen)."""
    book.fill(rows, 0.1 * book.qty[rows], mark)


def test_traders_who_trade_before_every_query_stay_listed_without_rebuilds():
    # Two fifths of the accounts trade before every query (more than the quarter that used
    # to rebuild the screen at each query): their keys are recomputed and replaced; the
    # screen never rebuilds, and still hands out every account below maintenance. (Many
    # accounts of this book are below maintenance and handed out in vain at every query:
    # that rebuild is turned off.)
    rng = np.random.default_rng(5)
    book = random_book(rng, 3000)
    held = np.flatnonzero((book.qty != 0).any(axis=1))
    active = np.sort(rng.choice(held, 1200, replace=False))
    screen = MarginScreen(book, rebuild_work=1e9)
    mark = np.array([60000.0, 3000.0])
    screen.candidates(mark)
    for _ in range(60):
        mark = mark * np.exp(rng.normal(0, 0.002, 2))
        trade(book, active, mark)
        cand = screen.candidates(mark)
        below = np.flatnonzero(units_below(book, mark))
        assert np.isin(below, cand).all()
    assert screen.rebuilds == 1
    assert screen.scanned == 0  # every listed row had just changed at each query


def test_rows_that_stop_changing_are_dropped_once_their_reads_cost_a_third_of_a_rebuild():
    # Accounts that changed once stay listed; every query reads their keys, and when those
    # reads add up to rebuild_work * n * SCANS_PER_CHECK (0.3 x 3,000 x 16 = 14,400 keys) the
    # next query rebuilds, which takes them off the list.
    from model.screen import SCANS_PER_CHECK

    rng = np.random.default_rng(6)
    book = well_funded_book(rng, 3000)
    held = np.flatnonzero((book.qty != 0).any(axis=1))
    once = np.sort(rng.choice(held, 1000, replace=False))
    screen = MarginScreen(book)
    mark = np.array([60000.0, 3000.0])
    assert screen.candidates(mark).size == 0
    trade(book, once, mark)
    screen.candidates(mark)  # lists them: the reads of this query count for nothing
    assert screen.changed_count == 1000
    assert screen.scanned == 0
    budget = 0.3 * 3000 * SCANS_PER_CHECK
    assert budget == 14_400
    # after query j (counting the one above as 0) the list's keys were read j times in vain;
    # the query after the first j with 1,000 j > 14,400 (j = 15) rebuilds: query 16
    for j in range(1, 16):
        screen.candidates(mark)
        assert screen.scanned == 1000 * j
        assert screen.rebuilds == 1
    screen.candidates(mark)
    assert screen.rebuilds == 2
    assert screen.changed_count == 0


@pytest.mark.parametrize(("share", "rebuilds"), [(0.7, 1), (0.8, 2)])
def test_changes_of_most_of_the_book_rebuild(share, rebuilds):
    # Up to MAX_CHANGED_SHARE (three quarters) of the book the changed rows are listed; a
    # change of more is a rebuild. Rows listed already do not count twice: 0.7 of the book
    # changing twice is listed once.
    rng = np.random.default_rng(7)
    book = well_funded_book(rng, 3000)
    held = np.flatnonzero((book.qty != 0).any(axis=1))
    assert held.size > 0.8 * 3000
    rows = np.sort(rng.choice(held, int(share * 3000), replace=False))
    screen = MarginScreen(book)
    mark = np.array([60000.0, 3000.0])
    screen.candidates(mark)
    trade(book, rows, mark)
    screen.candidates(mark)
    assert screen.rebuilds == rebuilds
    assert screen.changed_count == (rows.size if rebuilds == 1 else 0)
    trade(book, rows, mark)  # the same rows again: listed (share 0.7) or rebuilt again (0.8)
    screen.candidates(mark)
    assert screen.rebuilds == 2 * rebuilds - 1


# --------------------------------------------------------------------------------------------
# Collateral holdings: long exposures at their haircut value (model/collateral.py)
# --------------------------------------------------------------------------------------------

TIERS_WITH_COLLATERAL = TierTable.from_lists(
    [
        [(5e4, 0.004), (2.5e5, 0.005), (1e6, 0.01), (1e7, 0.025), (np.inf, 0.05)],
        [(np.inf, 0.02)],
        [(np.inf, 0.0)],
    ]
)


def random_book_with_collateral(rng, n, iso_share=0.3, haircut=0.1):
    """random_book's accounts over two perpetuals, and holdings of a collateral asset (the
    third column, at 1.0) worth up to twice their cross margin, for two thirds of them."""
    base = random_book(rng, n, iso_share=iso_share)
    from model.collateral import CollateralAssets

    pad = np.zeros((n, 1))
    holdings = np.where(rng.random(n) < 2 / 3, rng.uniform(0, 2, n) * (base.wallet + 1e3), 0.0)[
        :, None
    ]
    return AccountBook(
        np.arange(n),
        base.wallet * rng.uniform(0, 1, n),  # part of the cash became collateral
        np.hstack([base.qty, pad]),
        np.hstack([base.entry, pad]),
        TIERS_WITH_COLLATERAL,
        isolated=np.hstack([base.isolated, pad.astype(bool)]),
        margin=np.hstack([base.margin, pad]),
        collateral=CollateralAssets(np.array([2]), np.array([haircut]), ("USDe",)),
        holdings=holdings,
    )


def test_headroom_with_collateral_never_claims_an_account_safe_that_is_not():
    rng = np.random.default_rng(8)
    book = random_book_with_collateral(rng, 4000)
    mark = np.array([60000.0, 3000.0, 1.0])
    h, lane = headroom(
        book.wallet,
        book.qty,
        book.entry,
        book.margin,
        book.isolated,
        mark,
        book.tiers,
        collateral=book.collateral_margin_value(mark),
    )
    held = book.holdings[:, 0] > 0
    short_only = (book.qty <= 0).all(axis=1) & (book.qty < 0).any(axis=1)
    # a holding is a long exposure: no account holding some is measured against rises only
    assert not (lane[held] == LANE_RISE).any()
    assert (lane[held & short_only] == LANE_BOTH).all() and (held & short_only).sum() > 100
    assert (h[units_below(book, mark)] == -np.inf).all()
    inside = np.isfinite(h) & (h > 0)
    assert inside.sum() > 1000 and (inside & held).sum() > 500
    n = book.n_traders
    hmax = np.where(inside, h, 0.0)[:, None]
    for _ in range(300):
        edge = np.where(rng.random((n, 1)) < 0.7, 1.0, rng.random((n, 3))) * (1 - 1e-12)
        free = rng.uniform(0.0, np.log(10.0), (n, 3))
        sign = rng.choice([-1.0, 1.0], size=(n, 3))
        move = np.where(
            (lane == LANE_BOTH)[:, None],
            sign * edge * hmax,
            np.where(
                (lane == LANE_FALL)[:, None],
                np.where(sign < 0, -edge * hmax, free),
                np.where(sign > 0, edge * hmax, -free),
            ),
        )
        marks = mark * np.exp(move)
        # each account at its own mark: the three prices of its row
        cross_eq = (
            book.wallet
            + np.where(book.isolated, 0.0, book.qty * (marks - book.entry)).sum(axis=1)
            + book.holdings[:, 0] * marks[:, 2] * 0.9
        )
        notional = np.abs(book.qty) * marks
        mm = np.zeros(notional.shape)
        for a in range(3):
            mm[:, a] = maintenance_of(notional[:, a], a)
        has_cross = ((book.qty != 0) & ~book.isolated).any(axis=1)
        cross_below = has_cross & (cross_eq < np.where(book.isolated, 0.0, mm).sum(axis=1))
        iso_eq = book.margin + book.qty * (marks - book.entry)
        iso_below = (book.isolated & (book.qty != 0) & (iso_eq < mm)).any(axis=1)
        assert not (cross_below | iso_below)[inside].any()


def maintenance_of(notional, a):
    """Maintenance of column ``a``'s notionals under TIERS_WITH_COLLATERAL."""
    from model.accounts import maintenance_margin

    full = np.zeros((notional.size, 3))
    full[:, a] = notional
    return maintenance_margin(full, TIERS_WITH_COLLATERAL)[:, a]


def collateral_busy_config(seed=9, **margin):
    """busy_config with a collateral asset on a thin book, held by most generated accounts."""
    cfg = busy_config(seed=seed, **margin)
    data = to_dict(cfg)
    data["assets"].append(
        {
            "symbol": "USDe",
            "price": 1.0,
            "depth": 5e4,
            "kind": "collateral",
            "haircut": 0.05,
            "volatility": 0.05,
        }
    )
    data["traders"]["collateral_assets"] = {"USDe": 0.5}
    data["shocks"].append({"step": 30, "asset": "USDe", "return": -0.05})
    return build_config(data)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [9, 10])
def test_screened_run_equals_checking_everyone_with_collateral(seed):
    a, b = run_both(collateral_busy_config(seed=seed))
    s = a.summary()
    assert s["liquidations"] > 50 and s["collateral_sales"] > 50
    assert_identical(a, b)


def test_screened_run_equals_checking_everyone_on_a_mixed_population_with_holdings():
    rng = np.random.default_rng(6)
    book = random_book_with_collateral(rng, 1200)
    data = small_config(
        steps=40,
        traders={"count": 1200},
        margin={
            "insurance_fund": 1e4,
            "tiers": [{"cap": 5e4, "rate": 0.004}, {"cap": 1e7, "rate": 0.02}],
        },
        shocks=[
            {"step": 20, "asset": "ETH", "return": -0.15},
            {"step": 25, "asset": "USDe", "return": -0.1},
        ],
    )
    data["assets"].append(
        {"symbol": "USDe", "price": 1.0, "depth": 2e5, "kind": "collateral", "haircut": 0.1}
    )
    pop = population_of(book)
    pop.holdings = book.holdings
    a, b = run_both(build_config(data), pop)
    s = a.summary()
    assert s["liquidations"] > 50 and s["collateral_sales"] > 20
    assert_identical(a, b)


def test_aggregate_equity_tracks_the_full_sum_with_collateral():
    m = ContagionModel(collateral_busy_config(), create_agents=False)
    for _ in range(m.config.steps):
        m.step()
        full = m.book.total_equity(m.mark)
        scale = np.abs(m.book.wallet).sum() + np.abs(m.book.qty * m.mark).sum()
        scale += m.book.collateral.market_value(m.book.holdings, m.mark).sum()
        assert abs(m.book.aggregate_equity(m.mark) - full) <= 1e-9 * scale
    assert m.summary()["collateral_sales"] > 50


@pytest.mark.parametrize(
    ("model", "value_orders"),
    [
        ("market_makers", "before_rounds"),
        ("market_makers", "in_rounds"),
        ("static", "in_rounds"),
        ("market_makers", "resting"),
    ],
)
def test_screened_run_equals_checking_everyone_with_makers_and_resting_orders(model, value_orders):
    # market makers' rows absorb every walk and can be liquidated and deleveraged; value
    # traders' ladders fill inside the rounds; the screen must see every one of those writes
    cfg = busy_config(
        seed=12,
        market={"mark_lag": 0.3},
        liquidity={"model": model, "value_orders": value_orders, "capital": 0.3},
        strategies={"hold": 0.5, "noise": 0.2, "momentum": 0.1, "value": 0.2},
        mode="cross",
    )
    a, b = run_both(cfg)
    assert a.summary()["liquidations"] > 50
    assert_identical(a, b)
