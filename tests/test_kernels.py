"""The compiled kernels (model/kernels.py, numba) against the numpy functions they replace.

Fills, margin checks, the initial-margin cap and the screen's headroom must be equal to the
bit (compared as bytes, so a -0.0 against a 0.0 counts), the lanes the same; whole runs must
write the same tables.
"""

from __future__ import annotations

import mesa
import numpy as np
import pytest

from agents.market import Market
from model import ContagionModel, kernels
from model.accounts import AccountBook, TierTable, column_sum
from model.closing_rounds import ClosingRounds
from model.config import AssetConfig, MarginConfig, MarketConfig, build_config, load_config
from model.contagion import ContagionRecorder
from model.fills import COLUMNS, Kind
from model.liquidation import LiquidationEngine
from model.orders import _cap_batch, collect_orders, split_order
from model.screen import MarginScreen, headroom, to_headroom
from tests.helpers import small_config

pytest.importorskip("numba")
if not kernels.enabled():  # (compiles them; CONTAGION_NUMBA=0 switches them off)
    pytest.skip("compiled kernels switched off", allow_module_level=True)

TIERS = {
    "flat": TierTable.flat([0.005, 0.01]),
    "tiered": TierTable.from_lists(
        [
            [(5.0e4, 0.004), (2.5e5, 0.01), (1.0e6, 0.025), (np.inf, 0.05)],
            [(1.0e4, 0.01), (np.inf, 0.02)],
        ]
    ),
}


@pytest.fixture(autouse=True)
def every_batch(monkeypatch):
    """Kernels for batches of any size (the small books and runs of these tests)."""
    monkeypatch.setattr(kernels, "MIN_ROWS", 0)


def random_book(rng, n=3000, tiers="tiered", isolated=0.3, collateral=None) -> AccountBook:
    """Two assets; long, short and flat positions; some isolated with their own margins;
    some wallets negative, some positions nearly closed."""
    qty = rng.choice([-1.0, 0.0, 1.0], (n, 2), p=[0.35, 0.2, 0.45]) * rng.lognormal(0, 2, (n, 2))
    entry = np.where(qty != 0, np.array([60000.0, 3000.0]) * rng.lognormal(0, 0.05, (n, 2)), 0.0)
    iso = (rng.random((n, 2)) < isolated) & (qty != 0)
    margin = np.where(iso, np.abs(qty) * entry * rng.uniform(0.01, 0.2, (n, 2)), 0.0)
    wallet = rng.lognormal(8, 2, n) * rng.choice([1.0, -0.01], n, p=[0.95, 0.05])
    return AccountBook(
        np.arange(n), wallet, qty, entry, TIERS[tiers], isolated=iso, margin=margin,
        max_leverage=[50.0, 20.0],
    )  # fmt: skip


def copy_book(book: AccountBook) -> AccountBook:
    return AccountBook(
        book.ids, book.wallet, book.qty, book.entry, book.tiers, isolated=book.isolated,
        margin=book.margin, max_leverage=book.max_leverage,
    )  # fmt: skip


def recorded_calls(monkeypatch, name: str) -> list:
    """The results of every call of the kernel ``name`` from now on, in order."""
    calls = []
    real = getattr(kernels, name)
    monkeypatch.setattr(kernels, name, lambda *a: (calls.append(real(*a)), calls[-1])[1])
    return calls


def same_bytes(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("isolated", [0.0, 0.3])
@pytest.mark.parametrize("seed", range(4))
def test_fills_equal_numpy_to_the_bit(seed, isolated, monkeypatch):
    rng = np.random.default_rng(seed)
    book = random_book(rng, isolated=isolated)
    rows = np.sort(rng.choice(book.n_traders, 1200, replace=False))
    q = book.qty[rows]
    # closes, partial closes, flips, adds, zeros, and residues within rounding of a close
    dq = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0], q.shape) * q
    dq += np.where(rng.random(q.shape) < 0.2, rng.normal(0, 1, q.shape), 0.0)
    near = rng.random(q.shape) < 0.05
    dq[near] = -q[near] * (1 + 1e-14)
    price = np.array([59000.0, 3100.0])
    if seed % 2:  # a price per position (as auto-deleveraging fills)
        price = price * rng.lognormal(0, 0.01, q.shape)
    compiled = copy_book(book)
    mark = np.array([59000.0, 3100.0])
    assert book.aggregate_equity(mark) == compiled.aggregate_equity(mark)  # fills update it
    monkeypatch.setattr(kernels, "_enabled", False)
    r0, c0 = book.fill(rows, dq, price)
    monkeypatch.setattr(kernels, "_enabled", True)
    r1, c1 = compiled.fill(rows, dq, price)
    for name in ("wallet", "qty", "entry", "margin"):
        assert same_bytes(getattr(book, name), getattr(compiled, name)), name
    assert same_bytes(r0, r1) and same_bytes(c0, c1)
    (net0, cash0), (net1, cash1) = book._totals, compiled._totals  # updated by the fills' -dq P
    assert same_bytes(net0, net1) and same_bytes(cash0, cash1)
    assert book.aggregate_equity(mark) == compiled.aggregate_equity(mark)


@pytest.mark.parametrize("isolated", [0.0, 0.3])
@pytest.mark.parametrize("seed", range(3))
def test_equities_equal_numpy_to_the_bit(seed, isolated, monkeypatch):
    rng = np.random.default_rng(40 + seed)
    book = random_book(rng, isolated=isolated)
    rows = np.sort(rng.choice(book.n_traders, 1500, replace=False))
    mark = np.array([60000.0, 3000.0]) * rng.lognormal(0, 0.05, 2)
    results = []
    for on in (False, True):
        monkeypatch.setattr(kernels, "_enabled", on)
        results.append((book.equity(mark, rows), book.cross_equity(mark, rows)))
    (eq0, cross0), (eq1, cross1) = results
    assert same_bytes(eq0, eq1) and same_bytes(cross0, cross1)
    # by hand for one isolated row: the cross equity leaves its isolated position out
    j = int(np.flatnonzero(book.isolated[rows].any(axis=1))[0]) if isolated else 0
    r = rows[j]
    pnl = book.qty[r] * (mark - book.entry[r])
    assert np.isclose(cross1[j], book.wallet[r] + pnl[~book.isolated[r]].sum())
    assert np.isclose(eq1[j], book.wallet[r] + book.margin[r].sum() + pnl.sum())


@pytest.mark.parametrize("tiers", ["flat", "tiered"])
@pytest.mark.parametrize("seed", range(4))
def test_margin_checks_equal_numpy(seed, tiers, monkeypatch):
    rng = np.random.default_rng(10 + seed)
    book = random_book(rng, tiers=tiers)
    for move in (1.0, 0.9, 0.7, 1.2):
        mark = np.array([60000.0, 3000.0]) * move * rng.lognormal(0, 0.02, 2)
        rows = np.sort(rng.choice(book.n_traders, 1500, replace=False))
        monkeypatch.setattr(kernels, "_enabled", False)
        cross0, iso0 = book.liquidatable(mark, rows)
        monkeypatch.setattr(kernels, "_enabled", True)
        cross1, iso1 = book.liquidatable(mark, rows)
        assert np.array_equal(cross0, cross1) and np.array_equal(iso0, iso1)
        assert cross0.any() and iso0.any()  # both kinds of unit are liquidatable somewhere


@pytest.mark.parametrize("tiers", ["flat", "tiered"])
@pytest.mark.parametrize("seed", range(3))
def test_screen_headroom_equals_numpy_to_the_bit(seed, tiers):
    rng = np.random.default_rng(20 + seed)
    book = random_book(rng, tiers=tiers)
    screen = MarginScreen(book)
    mark = np.array([61000.0, 2900.0])
    rows = np.sort(rng.choice(book.n_traders, 2000, replace=False))
    held = rng.choice([0.0, 100.0], rows.size) if seed == 2 else None  # collateral values
    t = book.tiers
    h0, lane0 = headroom(
        book.wallet[rows], book.qty[rows], book.entry[rows], book.margin[rows],
        book.isolated[rows], mark, t, screen.rate_cummax, held,
    )  # fmt: skip
    h1, lane1 = np.empty(rows.size), np.empty(rows.size, dtype=np.int8)
    kernels.headroom(
        book.wallet[rows], book.qty[rows], book.entry[rows], book.margin[rows],
        book.isolated[rows], mark, t.caps, t.rates, t.cums, screen.rate_cummax,
        t.rates.min(axis=1), np.exp(np.log(2.0)), bool(t.rates.max() < 1.0),
        np.zeros(0) if held is None else held, h1, lane1, np.empty((2, rows.size)),
    )  # fmt: skip
    to_headroom(h1)  # (the kernel leaves the logarithm to numpy)
    assert np.array_equal(lane0, lane1)
    assert same_bytes(h0, h1)
    finite = np.isfinite(h0)
    assert (h0 == -np.inf).any() and (h0 == np.inf).any() and finite.any()
    assert set(lane0.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("seed", range(3))
def test_margin_cap_equals_numpy_to_the_bit(seed, monkeypatch):
    """The batch's initial-margin cap (split, two sizings, the final orders) on the orders of
    noise traders large enough that many are scaled down and some cut to nothing."""
    data = small_config(seed=seed, steps=12)
    data["traders"] = {
        **data["traders"], "count": 3000, "strategies": {"hold": 0.2, "noise": 0.8},
        "rules": {"noise": {"size": 3.0}},
    }  # fmt: skip
    m = ContagionModel(build_config(data), create_agents=False).run(2)
    (group,) = collect_orders(m.steps + 1, m.strategies, m.strategy_rows, m.reentry)
    rows, dq, lev = group.rows, group.dq, group.leverage
    q_before, held_iso = m.book.read(rows, "qty", "isolated")
    iso = held_iso | m.isolated_accounts[rows][:, None]
    out = []
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        out.append(_cap_batch(m.book, m.market, rows, dq, lev, iso, q_before, held_iso))
    assert same_bytes(out[0][0], out[1][0])
    capped = (out[0][0] != dq) & (dq != 0)
    assert capped.any() and (out[0][0] == dq).any() and ((out[0][0] == 0) & (dq != 0)).any()
    assert same_bytes(out[0][1], out[1][1])  # the net flow: column sums in the same order


def test_cap_orders_split_and_sums_equal_numpy_to_the_bit():
    """The fused sizing (model.kernels.cap_orders) against split_order, the cap factor and the
    column sums, on orders that add, reduce, close exactly, flip, and orders of zero (+0.0 and
    -0.0) on flat and open positions, with some positions isolated."""
    rng = np.random.default_rng(41)
    k = 4000
    qty = rng.choice([-1.0, 0.0, 1.0], (k, 2)) * rng.lognormal(0, 1, (k, 2))
    kind = rng.integers(0, 6, (k, 2))
    dq = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
        [qty * rng.uniform(0.1, 2, (k, 2)), -qty * rng.uniform(0.1, 0.9, (k, 2)), -qty,
         -qty * rng.uniform(1.1, 3, (k, 2)), np.where(rng.random((k, 2)) < 0.5, 0.0, -0.0)],
        rng.normal(0, 1, (k, 2)),
    )  # fmt: skip
    held_iso = rng.random((k, 2)) < 0.2
    iso = held_iso | (rng.random((k, 1)) < 0.1)
    price, sizing = np.array([600.0, 30.0]), np.array([606.0, 29.7])
    equity = rng.uniform(-50, 400, k)
    lev = np.broadcast_to(np.array([[10.0, 5.0]]), (k, 2))
    max_lev = np.array([50.0, 20.0])
    reduced, opened = split_order(qty, dq)
    factor0 = rng.choice([1.0, 0.5, 0.0], k)  # the factor of an earlier sizing
    opened0 = np.where(factor0[:, None] > 0, factor0[:, None] * opened, 0.0)
    from model.orders import _cap_factor

    f = _cap_factor(
        equity + (np.where(held_iso, 0.0, qty) * (sizing - price)).sum(axis=1),
        np.abs(reduced), np.abs(opened0), sizing, ~iso, max_lev, np.minimum(lev, max_lev),
    )  # fmt: skip
    for last in (False, True):
        want = reduced - qty + np.where(f[:, None] > 0, f[:, None] * opened0, 0.0)
        if last:
            want = np.where(np.abs(want) > 1e-12 * np.abs(qty), want, 0.0)
        factor, out, net = np.empty(k), np.empty((k, 2)), np.empty(2)
        kernels.cap_orders(
            qty, dq, held_iso, iso, equity, lev, max_lev, price, sizing, last, factor0, factor,
            out, net, np.empty((3, k)),
        )  # fmt: skip
        assert same_bytes(factor, f) and same_bytes(out, want)
        assert same_bytes(net, want.sum(axis=0))
    assert ((f > 0) & (f < 1)).any() and (f == 0).any() and (f == 1).any()
    assert (kind == 3).any() and (reduced == 0).any() and (out == 0).any()


@pytest.mark.parametrize("adl", [False, True])
@pytest.mark.parametrize("n_assets", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_a_round_closing_whole_cross_books_equals_the_general_round_to_the_bit(seed, n_assets, adl):
    """A round of every account of a random cross book (long, short and flat positions, some
    wallets negative, so fees capped by equity and bad debt), then a round of a few of them:
    kernels.close_cross_books_of and the general round write the same book, aggregates, fills,
    fund, step totals and report (one asset: the net quantity summed pairwise, as numpy sums
    one column), and the market agent the same (a stressed book's depth with seed 2)."""
    outcomes = []
    stress = {"depth_stress": 2.0, "depth_recovery": 0.3} if seed == 2 else {}
    for general in (False, True):
        book = random_book(np.random.default_rng(seed), isolated=0.0)
        assets = [AssetConfig("BTC", 60000.0, 2.0e7), AssetConfig("ETH", 3000.0, 1.0e7)]
        if n_assets == 1:
            book = AccountBook(
                book.ids, book.wallet, book.qty[:, :1], book.entry[:, :1], TierTable.flat([0.005]),
                max_leverage=[50.0],
            )  # fmt: skip
            assets = assets[:1]
        market = Market(mesa.Model(rng=3), MarketConfig(**stress), assets)
        margin = MarginConfig(liquidation="full", fee=0.01, insurance_fund=1.0e5, adl=adl)
        engine = LiquidationEngine(book, market, margin, screen=False)
        if general:
            engine._closes_cross_books_only = lambda: False
        assert engine._closes_cross_books_only() is not general
        reports = []
        first = np.arange(0, book.n_traders, 2 if adl else 1)  # (ADL: counterparties left)
        for rnd, rows in enumerate([first, np.arange(5, 400, 7)], 1):
            book.aggregate_equity(market.mark)  # (the aggregates, kept by every write)
            k = rows.size
            cross, iso = np.ones(k, dtype=bool), np.zeros((k, n_assets), dtype=bool)
            reports.append(engine._liquidate_round(1, rnd, rows, cross, iso, market.mark))
        state = [book.wallet, book.qty, book.entry, book.aggregate_equity(market.mark)]
        state += [engine.insurance_fund, engine.unfunded_bad_debt, *engine.fills.columns().values()]
        t = engine.totals
        state += [t.liquidations, t.liquidated_notional, t.bad_debt, t.fees, *book._totals]
        state += [t.accounts, t.per_round_accounts, engine.accounts_ever]
        state += [engine.liquidation_count, engine.liquidation_total]
        state += [market.flow, market.forced_flow, market.impact, market.limit_hit]
        state += [market.inventory, market.cash, market.price]
        for r in reports:
            state += [r.rows, r.closed, r.exposure, r.price_after, r.notional, r.full]
            state += [r.fees, r.bad_debt, r.fund, r.unfunded, r.price_before, r.depth]
            state += [r.adl_notional, r.socialized, r.taken, r.absorbed]
        outcomes.append(state)
    compiled, plain = outcomes
    assert all(same_bytes(a, b) for a, b in zip(compiled, plain, strict=True))
    assert (compiled[0] == 0).any()  # wallets written off at zero
    if adl:  # the fund ran out: ADL fills logged before the round's own
        kinds = compiled[6 + list(COLUMNS).index("kind")]
        assert kinds[0] == Kind.ADL and (kinds == Kind.FULL).any()
    else:
        assert compiled[5] > 0  # debt left unpaid


def run_tables(cfg):
    m = ContagionModel(cfg, create_agents=False).run()
    tables = m.tables()
    tables["edges"] = m.recorder.edges_table()
    return tables, m.summary()


def same_with_and_without_the_kernels(cfg, monkeypatch) -> dict:
    """Run ``cfg`` with the kernels, then without; assert every table, the edges and the
    summary equal; return the summary."""
    compiled, summary1 = run_tables(cfg)
    monkeypatch.setattr(kernels, "_enabled", False)
    plain, summary0 = run_tables(cfg)
    for name, table in plain.items():
        assert table.equals(compiled[name]), name
    summary0.pop("elapsed_seconds", None), summary1.pop("elapsed_seconds", None)
    assert summary0 == summary1
    return summary0


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # cross, partial, two assets
        {"margin": {"mode": "isolated", "liquidation": "full", "insurance_fund": 0.0}},
        {
            "traders": {"count": 800, "leverage": 12.0, "strategies": {"hold": 0.7, "noise": 0.3}},
            "margin": {"liquidation": "partial", "venue": "binance"},
        },
    ],
)
def test_runs_with_and_without_the_kernels_write_the_same_tables(overrides, monkeypatch):
    summary = same_with_and_without_the_kernels(
        build_config(small_config(steps=25, **overrides)), monkeypatch
    )
    assert summary["liquidations"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, overrides, mechanic",
    [
        # collateral sold into thin books, auto-exchange of negative wallets
        ("oct-2025-collateral.toml", {"traders.count": 1500, "steps": 40}, "collateral_sales"),
        # the fund runs dry and ADL closes profitable positions
        ("may-2021.toml", {"traders.count": 1500, "steps": 120}, "adl_notional"),
        # a liquidator vault takes units over at the mark
        (
            "oct-2025.toml",
            {"traders.count": 1500, "steps": 40, "margin.vault": True},
            "vault_taken_notional",
        ),
    ],
)
def test_shipped_venues_write_the_same_tables_with_and_without_the_kernels(
    config, overrides, mechanic, monkeypatch
):
    """The kernels take every batch of these books (MIN_ROWS 0, as a large book gives them
    its rounds' few rows): the fills of collateral sales, ADL and the vault's takeovers too."""
    cfg = load_config(f"experiments/configs/{config}", overrides)
    summary = same_with_and_without_the_kernels(cfg, monkeypatch)
    assert summary["liquidations"] > 0 and summary[mechanic] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, paid_by",
    [
        # two assets; the fund runs dry and ADL closes profitable positions
        ({"margin": {"liquidation": "full", "insurance_fund": 2.0e3, "adl": True}}, "adl_notional"),
        # one asset, noise traders trading besides; no fund, no ADL: the debt stays unfunded
        (
            {
                "assets": [{"symbol": "BTC", "price": 60000.0, "depth": 2.0e6, "max_leverage": 50}],
                "shocks": [{"step": 10, "asset": "BTC", "return": -0.08}],
                "traders": {
                    "count": 800,
                    "leverage": 20.0,
                    "assets_per_trader": 1,
                    "strategies": {"hold": 0.7, "noise": 0.3},
                },
                "margin": {"liquidation": "full", "insurance_fund": 0.0, "adl": False},
            },
            "unfunded_bad_debt",
        ),
        # two assets, a stressed book, two rounds a step at most; the fund pays the debt
        (
            {
                "market": {"depth_stress": 2.0, "depth_recovery": 0.2},
                "margin": {"liquidation": "full", "insurance_fund": 1.0e9, "max_rounds": 2},
            },
            "insurance_fund_used",
        ),
    ],
)
@pytest.mark.parametrize("room", ["ample", "scarce"])
def test_rounds_closing_whole_cross_books_in_compiled_calls_equal_the_general_round(
    overrides, paid_by, room, monkeypatch
):
    """Full liquidation of cross books goes to compiled calls of several rounds each
    (model.closing_rounds): the same fills, fees, bad debt, prices and edges as the general
    round written with numpy, in runs whose rounds leave bad debt (paid by the fund, by ADL,
    or by nobody) and stop at the round limit. With scarce room the calls stop for room
    every few rounds and start again."""
    calls = []
    real = ClosingRounds.run
    monkeypatch.setattr(
        ClosingRounds, "run", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1]
    )
    if room == "scarce":
        init = ClosingRounds.__init__
        monkeypatch.setattr(ClosingRounds, "__init__", lambda self, a: init(self, a, 4, 1))
    summary = same_with_and_without_the_kernels(
        build_config(small_config(steps=40, **overrides)), monkeypatch
    )
    assert summary["liquidations"] > 0 and summary["bad_debt"] > 0 and summary[paid_by] > 0
    assert kernels.ROUNDS_DONE in calls and len(calls) > 5
    if room == "scarce":
        assert kernels.ROUNDS_ROOM in calls
    if paid_by == "adl_notional":
        assert kernels.ROUNDS_COVER in calls
    if paid_by == "insurance_fund_used":
        assert kernels.ROUNDS_LIMIT in calls and summary["max_rounds"] == 2


def test_a_listener_chained_on_the_rounds_hears_every_round_as_the_general_round_tells_it(
    monkeypatch,
):
    """Rounds run by compiled calls (model.closing_rounds) are reported to ``on_round`` when
    the call returns: a listener chained after the contagion recorder (as the narrator
    chains itself) hears every round, in order, with the same record as from the general
    round written with numpy."""
    cfg = build_config(
        small_config(
            steps=30,
            traders={"count": 1500, "leverage": 25.0},
            margin={"liquidation": "full", "insurance_fund": 1.0e5, "max_rounds": 4},
        )
    )
    heard, calls = {}, []
    real = ClosingRounds.run
    monkeypatch.setattr(ClosingRounds, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(kernels, "_enabled", False)
        model = ContagionModel(cfg, create_agents=False)
        chained, rounds = model.engine.on_round, []

        def listen(rec, chained=chained, rounds=rounds):
            chained(rec)
            rounds.append(
                [rec.step, rec.round, rec.rows, rec.closed, rec.price_before, rec.price_after]
                + [rec.notional, rec.fees, rec.bad_debt, rec.fund, rec.unfunded, rec.depth]
            )

        model.engine.on_round = listen
        model.run()
        heard[compiled] = rounds
    assert len(heard[True]) == len(heard[False]) > 20
    for a, b in zip(heard[True], heard[False], strict=True):
        assert all(same_bytes(x, y) for x, y in zip(a, b, strict=True)), a[:2]
    assert {r[1] for r in heard[True]} >= {1, 2, 3} and len(calls) > 5


@pytest.mark.parametrize("depth_stress", [0.0, 3.0])
@pytest.mark.parametrize("n_assets", [1, 2])
def test_the_compiled_walk_equals_the_markets(n_assets, depth_stress):
    """kernels.static_walk of batches of forced flow (sells and buys, small and large, one
    absurd enough to hold the price at its floor) leaves the market as Market.execute and
    take_other_side leave it, to the bit, and gives the same price."""
    rng = np.random.default_rng(n_assets)
    assets = [AssetConfig("BTC", 60000.0, 2.0e7), AssetConfig("ETH", 3000.0, 1.0e7)][:n_assets]
    cfg = MarketConfig(depth_stress=depth_stress, depth_recovery=0.3)
    markets = [Market(mesa.Model(rng=5), cfg, assets) for _ in range(2)]
    stress = rng.uniform(0.0, 2.0, n_assets)
    for m in markets:
        m.move_fundamentals(0)
        m.stress = stress.copy()
    flows = [rng.normal(0.0, s, n_assets) for s in (10.0, 300.0, 1.0e4, 50.0)] + [
        np.full(n_assets, 1.0e30)
    ]
    compiled, plain = markets
    for flow in flows:
        price = np.empty(n_assets)
        kernels.static_walk(flow, *compiled.walk_state(), price)
        expected = plain.execute(flow, forced=True)
        plain.take_other_side(-flow, expected)
        assert same_bytes(price, expected) and same_bytes(compiled.price, expected)
        for name in ("flow", "forced_flow", "impact", "limit_hit", "inventory", "cash"):
            assert same_bytes(getattr(compiled, name), getattr(plain, name)), name
    assert (plain.limit_hit == -1).all()  # the absurd sale held every price at its floor


def test_column_sums_equal_numpy_to_the_bit():
    """numpy sums the columns of a (k, A) C array row by row (not pairwise): so does the loop."""
    rng = np.random.default_rng(40)
    for a in range(2, 8):
        for k in (1, 2, 7, 9, 100, 1000, 54321):
            x = rng.normal(size=(k, a)) * 10.0 ** rng.integers(-8, 8, (k, a))
            assert same_bytes(column_sum(x), x.sum(axis=0)), (a, k)
            pairwise = np.array([x[:, j].sum() for j in range(a)])
            if k > 1000:  # (the columns' own sums add in another order: not these bits)
                assert not same_bytes(pairwise, x.sum(axis=0))


def test_a_large_book_sends_every_batch_to_the_kernels_and_a_small_one_none(monkeypatch):
    """The book's size decides (model.kernels.use): in a book of MIN_ROWS accounts a fill and a
    margin check of one row go to the kernels; in a book one account smaller they stay with
    numpy, so a small run never loads numba."""
    monkeypatch.setattr(kernels, "MIN_ROWS", 500)
    calls = []
    for name in ("apply_fills", "liquidatable"):
        real = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, real=real, name=name: (calls.append(name), real(*a))[1]
        )
    for n, expected in ((500, ["liquidatable", "apply_fills"]), (499, [])):
        calls.clear()
        book = random_book(np.random.default_rng(3), n=n)
        row = np.array([7])
        book.liquidatable(np.array([59000.0, 3100.0]), row)
        book.fill(row, -book.qty[row], np.array([59000.0, 3100.0]))
        assert calls == expected, n


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top", [1, 3, 5, 8, 13, 40, 200])
def test_truncated_rounds_keep_the_same_edges_as_numpy(seed, top, monkeypatch):
    """A truncated round of victims that each use one column (kernels.top_edges_of_unit_rows
    against model.contagion._top_of_unit_rows and the recorder's aggregate edges): the same
    edges, in the same order, weights and left-over weights to the bit, on shares with many
    exact ties and zeros, and rounds with fewer liquidators than ``top``."""
    from model.contagion import ContagionRecorder

    rng = np.random.default_rng(seed)
    k_l, k_v, c = (1, 4, 30, 700, 2, 9)[seed], 400, 2 + seed % 2
    share = np.round(rng.random((k_l, c)), 2) * (rng.random((k_l, c)) < 0.6)
    share /= np.maximum(share.sum(axis=0), 1e-300)
    col = rng.integers(0, c, k_v)
    src_rows, dst_rows = rng.permutation(5000)[:k_l], rng.permutation(5000)[:k_v]
    edges = []
    for compiled in (True, False):
        rec = ContagionRecorder(np.arange(5000), np.ones(5000), max_edges=0, top_contributors=top)
        rec._special("step:1")
        assert rec._compiled  # (MIN_ROWS 0 here)
        rec._compiled = compiled
        rec._keep_top_contributors(src_rows, dst_rows, share, col, None, 3, 2)
        edges.append((rec.edges(), rec.roots))
    (got, got_roots), (want, want_roots) = edges
    assert got_roots == want_roots
    for name in ("src", "dst", "weight", "step", "round"):
        assert same_bytes(got[name], want[name]), name
    assert (want["src"] >= 0).any() and (want["src"] == -2).any() == (got["src"] == -2).any()


@pytest.mark.parametrize("liquidation", ["full", "partial"])
def test_runs_past_max_edges_record_the_same_edges_with_and_without_the_kernels(
    liquidation, monkeypatch
):
    """A one-asset run whose rounds pass ``contagion.max_edges`` early, its accounts closed
    whole or in part (then liquidated again in later rounds, so victims' exposures during the
    move include what they closed before): its rounds go to the recorder's kernels (whole
    rounds of new victims to kernels.one_asset_round, which writes the kept edges itself,
    the rounds of a compiled call's whole closes to kernels.whole_close_rounds, which calls
    it round after round; rounds with victims liquidated before to the separate kernels),
    and every table, the edges included, is the numpy run's."""
    # (kernels that other kernels call are not replaced: one compiled on first use inside
    # the test would bind the replacement; the recorder's methods that call them are)
    calls = []

    def watched(name, call):
        def record(*a):
            result = call(*a)
            calls.append((name, result if name == "round" else 0))
            return result

        return record

    def at_once(self, step, rnd, rounds, start, call=ContagionRecorder._whole_close_rounds):
        truncated = self.truncated_rounds
        stop, status = call(self, step, rnd, rounds, start)
        if self.truncated_rounds > truncated:  # rounds past the budget, in one call
            calls.append(("round", 2))
        if stop < len(rounds.bounds) - 1:  # a round handed back, with its status
            calls.append(("round", status))
        return stop, status

    monkeypatch.setattr(kernels, "one_asset_round", watched("round", kernels.one_asset_round))
    monkeypatch.setattr(ContagionRecorder, "_whole_close_rounds", at_once)
    for name in ("_factors_of_one_asset_round", "_keep_top_compiled"):
        monkeypatch.setattr(
            ContagionRecorder, name, watched(name, getattr(ContagionRecorder, name))
        )
    cfg = build_config(
        small_config(
            steps=40,
            assets=[{"symbol": "BTC", "price": 60000.0, "depth": 2.0e6, "max_leverage": 50}],
            shocks=[{"step": 10, "asset": "BTC", "return": -0.08}],
            traders={"count": 1500, "leverage": 25.0, "assets_per_trader": 1},
            margin={"liquidation": liquidation},
            contagion={"max_edges": 2000, "top_contributors": 3},
        )
    )
    summary = same_with_and_without_the_kernels(cfg, monkeypatch)
    rounds = {status for name, status in calls if name == "round"}
    assert 2 in rounds  # whole rounds past the budget: the kept edges written by one call
    if liquidation == "partial":  # victims liquidated before: the separate kernels
        assert 0 in rounds and {name for name, _ in calls} == {
            "round",
            "_factors_of_one_asset_round",
            "_keep_top_compiled",
        }
    else:  # and rounds within the budget
        assert 1 in rounds
    assert summary["liquidations"] > 0


@pytest.mark.parametrize("k_l", [1, 7, 8, 129, 1000, 4099])
def test_one_asset_factors_equal_numpy_to_the_bit(k_l):
    """kernels.one_asset_factors against model.contagion._one_asset_factors and
    _unit_edge_count: the shares to the bit (their sums added in numpy's pairwise order, up to
    thousands of liquidators), the columns and the edge count; rises and falls, liquidators
    that closed nothing (a -0.0 push), victims with no position, a round nobody pushed."""
    from model.contagion import _one_asset_factors, _unit_edge_count

    rng = np.random.default_rng(k_l)
    for move in (-35.0, 12.5):
        for nobody in (False, True):
            closed = rng.normal(size=(k_l, 1)) * 10.0 ** rng.integers(-6, 6, (k_l, 1))
            closed[rng.random(k_l) < 0.2] = 0.0
            if nobody:  # every liquidator closed against the move: nobody pushed
                closed = -np.sign(move) * np.abs(closed)
            notional = np.abs(closed[:, 0]) * 60000.0
            exposure = rng.normal(size=(300, 1))
            exposure[rng.random(300) < 0.1] = 0.0
            want_share, want_col = _one_asset_factors(exposure, np.array([move]), closed, notional)
            share, col = np.empty((k_l, 2)), np.empty(300, dtype=np.intp)
            count = kernels.one_asset_factors(
                exposure[:, 0], move, closed[:, 0], notional, share, col
            )
            assert same_bytes(share, want_share) and same_bytes(col, want_col)
            assert count == _unit_edge_count(want_col, want_share)


def test_victims_counted_as_numpy_counts_them(monkeypatch):
    """kernels.note_victims against the recorder's numpy writes: first step and round,
    events and notional of every row over rounds that liquidate some rows again."""
    from model.contagion import ContagionRecorder

    rng = np.random.default_rng(5)
    recorders = []
    for compiled in (True, False):
        rec = ContagionRecorder(np.arange(400), np.ones(400))
        rec._compiled = compiled
        for step in range(1, 30):
            rows = np.sort(rng.choice(400, rng.integers(1, 60), replace=False))
            notional = rng.lognormal(8, 2, rows.size)
            record = type("R", (), {"step": step, "round": 1 + step % 3, "notional": notional})
            assert rec._note_victims(rows, record) >= 0
        recorders.append(rec)
        rng = np.random.default_rng(5)  # the same rounds again
    for name in ("first_step", "first_round", "events", "notional"):
        assert same_bytes(getattr(recorders[0], name), getattr(recorders[1], name)), name
    assert recorders[0].events.sum() > 0 and (recorders[0].events > 1).any()


def test_least_and_greatest_of_two_floats_are_numpys_to_the_bit():
    """kernels._minimum and _maximum against np.minimum and np.maximum on signed zeros,
    infinities and NaN (of two equal values numpy returns the second: 0.0 or -0.0)."""
    values = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan]
    for a in values:
        for b in values:
            assert same_bytes(kernels._minimum(a, b), np.minimum(a, b)), (a, b)
            assert same_bytes(kernels._maximum(a, b), np.maximum(a, b)), (a, b)


@pytest.mark.parametrize("seed", range(4))
def test_changed_rows_sorted_out_as_numpy_does(seed, monkeypatch):
    """kernels.sort_out_changed against the screen's numpy lines: the candidates handed out
    and changed since, the closed-out rows marked (those already listed kept), the rows
    kept and their slots, on rows that overlap the handed-out ones in part."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        book = random_book(np.random.default_rng(seed), n=2000)
        book.qty[rng.random(2000) < 0.3] = 0.0  # closed out
        screen = MarginScreen(book)
        screen.changed_slot[rng.random(2000) < 0.2] = 7  # listed already
        screen._handed = np.sort(rng.choice(2000, 300, replace=False))
        screen.checked = 1000
        rows = np.sort(rng.choice(2000, 500, replace=False))
        kept, slots = screen._sort_out_changed(rows)
        outcomes.append((kept, slots, screen.changed_slot.copy(), screen.checked))
        rng = np.random.default_rng(seed)  # the same draws again
    (k1, s1, c1, n1), (k0, s0, c0, n0) = outcomes
    assert same_bytes(k1, k0) and same_bytes(s1, s0) and same_bytes(c1, c0) and n1 == n0
    assert 0 < k1.size < 500 and n1 < 1000 and (c1 == -2).any()


@pytest.mark.parametrize("seed", range(4))
def test_lane_extended_as_numpy_extends_it(seed, monkeypatch):
    """kernels.lane_pool and kernels.keep_below against the screen's numpy lines: a lane's
    rows at or beyond its horizon and their keys, then those below a bound, in row order,
    on keys with ties at the horizon and at the bound, infinite keys and NaNs; and whole
    extensions of every lane from a rebuild of a random book, equal to the bit."""
    rng = np.random.default_rng(seed)
    n = 5000
    keys = np.round(rng.normal(0.1, 0.1, n), 2)
    keys[rng.random(n) < 0.05] = np.inf
    keys[rng.random(n) < 0.01] = np.nan
    lanes = rng.integers(0, 3, n).astype(np.int8)
    for lane in range(3):
        horizon = float(np.sort(keys[lanes == lane])[200])  # (a key some rows tie with)
        rows, k = np.empty(n, np.int64), np.empty(n)
        m = kernels.lane_pool(lanes, keys, lane, horizon, rows, k)
        pool = np.flatnonzero((lanes == lane) & (keys >= horizon))
        assert same_bytes(rows[:m], pool) and same_bytes(k[:m], keys[pool])
        bound = float(keys[pool[pool.size // 2]])
        kept = kernels.keep_below(rows[:m], k[:m], bound)
        near = keys[pool] < bound
        assert 0 < kept < m and same_bytes(rows[:kept], pool[near])
        assert same_bytes(k[:kept], keys[pool][near])
    extended = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        screen = MarginScreen(random_book(np.random.default_rng(seed), n=3000))
        mark = np.array([1.0, 1.0]) * screen.book.entry.mean(axis=0)
        screen.rebuild(mark)
        for lane in range(3):
            screen._extend(lane, screen.horizon[lane] + 0.05)
        extended.append([(screen.order[i], screen.sorted_keys[i]) for i in range(3)])
        extended[-1].append(screen.horizon.copy())
    (*parts1, h1), (*parts0, h0) = extended
    assert same_bytes(h1, h0)
    for (o1, k1), (o0, k0) in zip(parts1, parts0, strict=True):
        assert same_bytes(o1, o0) and same_bytes(k1, k0)


def test_liquidations_counted_as_numpy_counts_them():
    """kernels.count_liquidations against the engine's numpy lines: the accounts liquidated
    for the first time ever and in the step, the counts and the stamps, over steps whose
    rounds liquidate some accounts again."""
    rng = np.random.default_rng(11)
    n = 300
    count0, stamp0 = np.zeros(n, np.int64), np.zeros(n, np.int32)
    count1, stamp1 = count0.copy(), stamp0.copy()
    totals = np.zeros((2, 2), np.int64)
    for step in range(1, 20):
        for _ in range(3):  # rounds
            rows = np.sort(rng.choice(n, rng.integers(1, 40), replace=False))
            c = count0[rows]
            totals[0] += (np.count_nonzero(c == 0), np.count_nonzero(stamp0[rows] != step))
            count0[rows], stamp0[rows] = c + 1, step
            totals[1] += kernels.count_liquidations(rows, count1, stamp1, step)
    assert same_bytes(count0, count1) and same_bytes(stamp0, stamp1)
    assert (totals[0] == totals[1]).all() and totals[0, 0] < totals[0, 1]


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_screen_queries_equal_numpy_with_the_same_state_left(seed, whole, monkeypatch):
    """kernels.reached_rows and kernels.closed_then_reached against the screen's numpy
    query: the same candidates, and the same sorted parts, starts, changed list and counters
    left behind, over queries at moving marks with fills between them (rows traded, some
    closed out, so that queries meet changed rows in the sorted parts and drop them; with
    ``whole``, every filled row closed out, as after a round of whole closes)."""
    calls = recorded_calls(monkeypatch, "closed_then_reached")
    states = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        rng = np.random.default_rng(seed)
        book = random_book(np.random.default_rng(seed), n=2000)
        screen = MarginScreen(book, rebuild_work=50.0)  # (one rebuild: the state carries on)
        mark = np.array([60000.0, 3000.0])
        handed = []
        for _ in range(30):
            mark = mark * np.exp(rng.normal(-0.004, 0.01, 2))
            handed.append(screen.candidates(mark).copy())
            rows = np.sort(rng.choice(2000, 40, replace=False))
            dq = np.where(rng.random((40, 2)) < 0.5, -book.qty[rows], rng.normal(0, 0.1, (40, 2)))
            book.fill(rows, -book.qty[rows] if whole else dq, mark)
        m = screen.changed_count
        states.append(
            {
                "handed": handed,
                "order": list(screen.order),
                "sorted_keys": list(screen.sorted_keys),
                "start": screen.start,
                "changed_slot": screen.changed_slot,
                "changed_rows": screen.changed_rows[:m],
                "changed_keys": screen.changed_keys[:m],
                "counters": [screen.checked, screen.scanned, screen.extensions, screen.rebuilds],
            }
        )
    compiled, plain = states
    for name, value in compiled.items():
        if isinstance(value, list):
            assert all(same_bytes(a, b) for a, b in zip(value, plain[name], strict=True)), name
        else:
            assert same_bytes(value, plain[name]), name
    assert sum(h.size for h in compiled["handed"]) > 0 and compiled["start"].any()
    assert (compiled["changed_slot"] == -2).any()  # rows closed out met and marked
    assert compiled["counters"][-1] == 1 and (compiled["changed_rows"].size > 0) != whole
    if whole:  # every query's changes absorbed by the one call (but where a lane extends)
        assert min(calls) >= 0 and len(calls) > 20
    else:  # rows still held: their headrooms recomputed by the numpy lines
        assert -1 in calls


@pytest.mark.parametrize("seed", range(4))
def test_the_query_and_the_cross_check_in_one_call_equal_numpy(seed, monkeypatch):
    """kernels.closed_then_below (MarginScreen.cross_liquidatable) against the numpy query
    and the numpy margin check of its rows, in a book of cross books only: the same rows
    below maintenance, the same candidates handed out, the same sorted parts and counters
    left behind, over queries at falling marks, each followed by a round that closes the rows
    found (and a few more) whole."""
    calls = recorded_calls(monkeypatch, "closed_then_below")
    states = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        rng = np.random.default_rng(seed)
        book = random_book(np.random.default_rng(seed), n=5000, isolated=0.0)
        screen = MarginScreen(book, rebuild_work=50.0)
        mark = np.array([60000.0, 3000.0])
        found, handed = [], []
        for _ in range(30):
            mark = mark * np.exp(rng.normal(-0.01, 0.01, 2))
            if compiled:
                below = screen.cross_liquidatable(mark)
            else:
                cand = screen.candidates(mark)
                below = cand[book.cross_liquidatable(mark, cand)]
            found.append(below)
            handed.append(screen._handed)
            rows = np.union1d(below, rng.choice(5000, 5, replace=False))
            book.fill(rows, -book.qty[rows], mark)
        m = screen.changed_count
        states.append(
            [*found, *handed, *screen.order, *screen.sorted_keys, screen.start,
             screen.changed_slot, screen.changed_rows[:m], screen.checked, screen.scanned,
             screen.extensions, screen.rebuilds]
        )  # fmt: skip
    compiled, plain = states
    assert all(same_bytes(a, b) for a, b in zip(compiled, plain, strict=True))
    assert sum(f.size for f in compiled[:30]) > 100
    # without the kernels the same entry gives the numpy query and check
    book = random_book(np.random.default_rng(seed), n=5000, isolated=0.0)
    twin = random_book(np.random.default_rng(seed), n=5000, isolated=0.0)
    screen, twin_screen = MarginScreen(book), MarginScreen(twin)
    mark = np.array([56000.0, 2800.0])
    cand = twin_screen.candidates(mark)
    assert same_bytes(screen.cross_liquidatable(mark), cand[twin.cross_liquidatable(mark, cand)])
    assert sum(c >= 0 for c in calls) > 20  # most queries the one compiled call


@pytest.mark.parametrize("tiers", ["flat", "tiered"])
def test_cross_books_checked_from_the_book_as_numpy_checks_them(tiers):
    """kernels.cross_liquidatable_rows (a book with no isolated position) against the numpy
    margin check: the same rows below maintenance, at marks that put many under."""
    book = random_book(np.random.default_rng(5), n=3000, tiers=tiers, isolated=0.0)
    rows = np.sort(np.random.default_rng(6).choice(3000, 1200, replace=False))
    for move in (1.0, 0.9, 1.15):
        mark = np.array([60000.0, 3000.0]) * move
        cross = book.cross_liquidatable(mark, rows)
        found = book.cross_liquidatable_rows(mark, rows)
        assert same_bytes(found, rows[cross]) and 0 < found.size < rows.size


@pytest.mark.parametrize("seed", range(3))
def test_every_edge_of_a_unit_rows_round_written_as_numpy_writes_it(seed, monkeypatch):
    """kernels.unit_rows_edges against the recorder's numpy blocks: the same edges in the
    same order, victims on either of two columns, liquidators with zero shares left out."""
    rng = np.random.default_rng(seed)
    share = rng.random((60, 2)) * (rng.random((60, 2)) < 0.7)
    col = rng.integers(0, 2, 45)
    src_rows, dst_rows = rng.permutation(1000)[:60], rng.permutation(1000)[:45]
    edges = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", compiled)
        recorder = ContagionRecorder(np.arange(1000), np.ones(1000))
        recorder._compiled = compiled
        recorder._attribute_columns(src_rows, dst_rows, share, col, 3, 2)
        edges.append(recorder.edges())
    for name in ("src", "dst", "weight", "step", "round"):
        assert same_bytes(edges[0][name], edges[1][name]), name
    assert edges[0]["src"].size == np.count_nonzero(share[:, col].T > 0)


@pytest.mark.parametrize("seed", range(3))
def test_balances_of_written_rows_summed_as_numpy_sums_them(seed, monkeypatch):
    """kernels.sums_of_rows (the finiteness check's sums of the rows a step wrote) against
    the numpy sums of the gathered rows: the same float, on scattered rows of a book with
    wallets, positions, entries and isolated margins of every size."""
    book = random_book(np.random.default_rng(seed), n=3000)
    rows = np.sort(np.random.default_rng(seed + 10).choice(3000, 700, replace=False))
    compiled = book.sum_of_balances(rows)
    monkeypatch.setattr(kernels, "_enabled", False)
    plain = book.sum_of_balances(rows)
    assert same_bytes(compiled, plain) and np.isfinite(compiled)
    book.margin[rows[5], 1] = np.inf  # one value not finite: so is the sum
    assert not np.isfinite(book.sum_of_balances(rows))


@pytest.mark.parametrize("isolated", [0.0, 0.3])
@pytest.mark.parametrize("seed", range(3))
def test_the_profits_adl_haircuts_equal_numpys(seed, isolated, monkeypatch):
    """kernels.paying_profits (adl._paying_profits of a compiled book) against the numpy
    lines: the same paying rows and the same profits to the bit, at marks that put some
    positions in profit and some in loss, isolated positions left out."""
    from model.adl import _paying_profits

    book = random_book(np.random.default_rng(seed), n=5000, isolated=isolated)
    for mark in ([60000.0, 3000.0], [54000.0, 3300.0], [66000.0, 2700.0]):
        compiled = _paying_profits(book, np.array(mark))
        monkeypatch.setattr(kernels, "_enabled", False)
        plain = _paying_profits(book, np.array(mark))
        monkeypatch.setattr(kernels, "_enabled", True)
        assert all(same_bytes(a, b) for a, b in zip(compiled, plain, strict=True))
        assert 0 < compiled[0].size < book.n_traders


@pytest.mark.parametrize("seed", range(3))
def test_the_accounts_due_to_re_enter_equal_numpys(seed):
    """kernels.due_and_flat against the re-entry rule's numpy lines: the positions of the
    waiting accounts past their cooldown and flat, in order."""
    rng = np.random.default_rng(seed)
    book = random_book(rng, n=5000, isolated=0.0)
    book.qty[rng.choice(5000, 1500, replace=False)] = 0.0  # (flat: liquidated whole)
    waiting = np.sort(rng.choice(5000, 2000, replace=False))
    last = rng.integers(0, 50, 5000)
    for step, cooldown in ((40, 5), (60, 1), (45, 30)):
        at = np.flatnonzero(step - last[waiting] >= cooldown)
        want = at[~(book.qty[waiting[at]] != 0).any(axis=1)]
        out = np.empty(waiting.size, dtype=np.intp)
        got = out[: kernels.due_and_flat(waiting, last, step, cooldown, book.qty, out)]
        assert same_bytes(got, want) and want.size > 0
