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
from model.config import build_config
from model.population import Population
from model.screen import MAX_HEADROOM, MarginScreen, headroom, log_distance
from tests.conftest import small_config

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


def test_headroom_of_one_long_by_hand():
    # 1 unit long at 100, wallet 10, flat 1% maintenance: S(P) = 10 + (P - 100) - 0.01 P.
    tiers = TierTable.flat([0.01])
    h = headroom(
        np.array([10.0]),
        np.array([[1.0]]),
        np.array([[100.0]]),
        np.zeros((1, 1)),
        np.zeros((1, 1), bool),
        np.array([100.0]),
        tiers,
    )
    # S(100) = 9, c = 100 (1 + 0.01) = 101: h = log(1 + 9 / 101)
    # (less a rounding allowance of about 1e-9 of the account's size, never more)
    assert h[0] == pytest.approx(np.log1p(9.0 / 101.0), rel=1e-6)
    assert h[0] < np.log1p(9.0 / 101.0)
    # and the true liquidation price, 90 / 0.99, is indeed beyond that move
    assert np.log(100.0 / (90.0 / 0.99)) > h[0]


def test_headroom_never_claims_an_account_safe_that_is_not():
    rng = np.random.default_rng(3)
    book = random_book(rng, 4000)
    mark = np.array([60000.0, 3000.0])
    h = headroom(book.wallet, book.qty, book.entry, book.margin, book.isolated, mark, TIERS)
    flat = (book.qty == 0).all(axis=1)
    assert (h[flat] == np.inf).all()
    assert (h[~flat] <= MAX_HEADROOM).all()
    # accounts already below maintenance have no headroom
    assert (h[units_below(book, mark)] == -np.inf).all()
    inside = np.isfinite(h) & (h > 0)
    assert inside.sum() > 1000
    for _ in range(300):
        # each account's own mark: every asset moved up or down by up to its headroom,
        # mostly right at the edge, where a loose bound would show
        edge = np.where(rng.random((book.n_traders, 1)) < 0.7, 1.0, rng.random((book.n_traders, 2)))
        move = rng.choice([-1.0, 1.0], size=(book.n_traders, 2)) * edge * (1 - 1e-12)
        marks = mark * np.exp(move * np.where(inside, h, 0.0)[:, None])
        assert not units_below(book, marks)[inside].any()


def test_headroom_is_tight_enough_to_be_useful():
    # A 10x long with a 0.5% maintenance rate is liquidated about 9.5% below entry;
    # its headroom must be a good part of that, not a tiny fraction.
    tiers = TierTable.flat([0.005])
    h = headroom(
        np.array([100.0]),
        np.array([[10.0]]),
        np.array([[100.0]]),
        np.zeros((1, 1)),
        np.zeros((1, 1), bool),
        np.array([100.0]),
        tiers,
    )
    assert 0.08 < h[0] < -np.log(1 - 0.095)


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
        book.wallet[rows[:5]] *= 0.5
        book.mark_changed(rows[:5])
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
        m = ContagionModel(cfg, agents=False, screen=screen, population=population)
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


def busy_config(seed=9, market=None, **margin):
    """Every feature that writes the book: noise and momentum traders, funding, re-entry,
    a thin insurance fund (ADL and socialised losses), shocks both ways."""
    return build_config(
        small_config(
            seed=seed,
            steps=80,
            market={"funding_interval": 8, **(market or {})},
            traders={
                "count": 1500,
                "leverage": 14.0,
                "leverage_dispersion": 0.8,
                "strategies": {"hold": 0.6, "noise": 0.3, "momentum": 0.1},
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


def test_aggregate_equity_tracks_the_full_sum_every_step():
    m = ContagionModel(busy_config(), agents=False)
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
