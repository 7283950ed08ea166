"""The partial-liquidation fraction: by-hand cases, exact rational arithmetic, a dense scan.

The references here do not use model.accounts' tier formula: maintenance is computed as the
sum of rate increments above each cap, ``mm(n) = sum_t (r_t - r_{t-1}) max(n - cap_{t-1}, 0)``
(equal to Binance's ``n r_t - cum_t`` when rates do not decrease), exactly, with Fractions.
The exact smallest restoring fraction is the smallest of all breakpoints and all roots of the
linear pieces between them at which the slack, recomputed exactly, is non-negative.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import ContagionModel, kernels
from model.accounts import TierTable, maintenance_margin
from model.config import build_config
from model.partial import partial_fraction
from model.population import Population

EPS = np.finfo(float).eps
EXAMPLES = int(os.environ.get("CONTAGION_HYPOTHESIS_EXAMPLES", "30"))
EXACT_SETTINGS = settings(
    max_examples=4 * EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CONTAGION_HYPOTHESIS_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow],
)

# Binance BTCUSDT maintenance tiers (cap, rate), as in experiments/configs/baseline.toml.
BTC = [
    (5e4, 0.004),
    (2.5e5, 0.005),
    (1e6, 0.01),
    (1e7, 0.025),
    (2e7, 0.05),
    (5e7, 0.10),
    (1e8, 0.125),
    (2e8, 0.15),
    (3e8, 0.25),
    (5e8, 0.50),
]


# ---- independent reference ------------------------------------------------------------------


def exact_mm(n: Fraction, tiers: list[tuple[float, float]]) -> Fraction:
    """Maintenance as rate increments above each cap, in exact arithmetic."""
    total, floor, prev = Fraction(0), Fraction(0), Fraction(0)
    for cap, rate in tiers:
        rate = Fraction(rate)
        total += (rate - prev) * max(n - floor, Fraction(0))
        prev = rate
        floor = Fraction(cap) if np.isfinite(cap) else floor
    return total


def exact_slack(f, equity, notional, tiers, fee, buffer) -> Fraction:
    """``E - c f N - (1 + b) sum_a mm((1 - f) N_a)`` with every input taken exactly."""
    f = Fraction(f)
    n = [Fraction(x) for x in notional]
    mm = sum(exact_mm((1 - f) * x, t) for x, t in zip(n, tiers, strict=True))
    return Fraction(equity) - Fraction(fee) * f * sum(n) - (1 + Fraction(buffer)) * mm


def exact_points(notional, tiers) -> list[Fraction]:
    """0, 1 and every ``1 - cap / N_a`` strictly between them, sorted."""
    points = {Fraction(0), Fraction(1)}
    for x, t in zip(notional, tiers, strict=True):
        for cap, _ in t[:-1]:  # the last tier has no cap
            if x > 0 and 0 < 1 - Fraction(cap) / Fraction(x) < 1:
                points.add(1 - Fraction(cap) / Fraction(x))
    return sorted(points)


def exact_fraction(equity, notional, tiers, fee, buffer):
    """The smallest ``f`` in [0, 1] with slack >= 0, or None if there is none.

    Candidates are the breakpoints and the root of the line through each pair of consecutive
    breakpoints when it lies on that piece; the answer is the smallest candidate whose slack,
    recomputed from the tier formula, is >= 0.
    """

    def s(f):
        return exact_slack(f, equity, notional, tiers, fee, buffer)

    points = exact_points(notional, tiers)
    values = [s(p) for p in points]
    candidates = list(points)
    for p0, p1, s0, s1 in zip(points, points[1:], values, values[1:], strict=False):
        if s0 != s1:
            root = p0 - s0 * (p1 - p0) / (s1 - s0)
            if p0 <= root <= p1:
                candidates.append(root)
    return next((c for c in sorted(candidates) if s(c) >= 0), None)


def scale(equity, notional, tiers, fee, buffer) -> float:
    """Magnitude of the terms the slack is computed from (bounds its rounding error)."""
    top = sum(x * max(r for _, r in t) for x, t in zip(notional, tiers, strict=True))
    return abs(equity) + fee * sum(notional) + (1 + buffer) * top


def float_slack(f, equity, notional, table, fee, buffer):
    """The slack as the engine evaluates it (model.accounts' tier formula, floats)."""
    f = np.atleast_1d(np.asarray(f, dtype=float))
    mm = maintenance_margin((1 - f)[:, None] * np.asarray(notional)[None, :], table).sum(axis=1)
    return equity - fee * f * np.sum(notional) - (1 + buffer) * mm


def largest_abs_slack(lo, hi, equity, notional, tiers, fee, buffer) -> Fraction:
    """max |S| over [lo, hi]: S is linear between breakpoints, so at the ends or a breakpoint."""
    lo, hi = Fraction(lo), Fraction(hi)
    inside = [p for p in exact_points(notional, tiers) if lo < p < hi]
    return max(abs(exact_slack(x, equity, notional, tiers, fee, buffer)) for x in [lo, hi, *inside])


def check_against_exact(f, equity, notional, tiers, table, fee, buffer):
    """``f`` is the exact smallest restoring fraction, or differs from it only across a stretch
    where the slack is 0 to rounding (there the answer is decided by rounding, e.g. a unit whose
    slack is exactly 0 from some fraction on)."""
    noise = 256 * EPS * scale(equity, notional, tiers, fee, buffer)
    exact = exact_fraction(equity, notional, tiers, fee, buffer)
    assert 0.0 <= f <= 1.0
    if exact is None:
        peak = max(
            exact_slack(p, equity, notional, tiers, fee, buffer)
            for p in exact_points(notional, tiers)
        )
        assert f == 1.0 or (
            peak < noise and exact_slack(f, equity, notional, tiers, fee, buffer) >= -noise
        )
    elif abs(f - float(exact)) > 1e-12:
        gap = largest_abs_slack(min(f, exact), max(f, exact), equity, notional, tiers, fee, buffer)
        assert gap < noise, (f, float(exact), float(gap), noise)
    if f < 1.0:  # the engine's own evaluation says the unit is restored
        assert float_slack(f, equity, notional, table, fee, buffer)[0] >= 0.0


# ---- by hand -------------------------------------------------------------------------------


def test_binance_btc_partial_close_that_the_last_piece_hides():
    """10 BTC long at 100,000 (N = 1,000,000), equity 4,980, fee 0.5%, buffer 0.1.

    mm(n) = 0.01 n - 1,300 on (250k, 1M], 0.005 n - 50 on (50k, 250k], 0.004 n below 50k
    (cum: 0.001 x 50k = 50; 50 + 0.005 x 250k = 1,300). mm(1M) = 8,700 > 4,980: liquidatable.
    S(f) = 4,980 - 5,000 f - 1.1 mm((1 - f) 1M):
      f in [0, 0.75]:    S = 4,980 - 5,000 f - 1.1 (10,000 (1 - f) - 1,300) = -4,590 + 6,000 f
                         (its own root 0.765 lies beyond the piece; S(0.75) = -90);
      f in [0.75, 0.95]: S = 4,980 - 5,000 f - 1.1 (5,000 (1 - f) - 50) = -465 + 500 f,
                         root f = 0.93 (S(0.95) = 10);
      f in [0.95, 1]:    S = 4,980 - 5,000 f - 1.1 x 4,000 (1 - f) = 580 - 600 f, S(1) = -20.
    S(1) < 0, yet closing 93% restores the buffer: fee 0.005 x 930,000 = 4,650 leaves 330,
    which is exactly 1.1 x mm(70,000) = 1.1 x (350 - 50) = 330. Closing everything would pay
    a fee of 5,000, more than the whole equity.
    """
    table = TierTable.from_lists([BTC])
    f = partial_fraction(np.array([4980.0]), np.array([[1e6]]), table, 0.005, 0.1)
    assert f[0] == pytest.approx(0.93, rel=1e-12)
    left = 4980.0 - 0.005 * f[0] * 1e6
    assert left == pytest.approx(330.0, rel=1e-9)
    assert left == pytest.approx(1.1 * (0.005 * (1 - f[0]) * 1e6 - 50.0), rel=1e-9)


def test_binance_btc_other_equities_by_hand():
    """Same unit. E = 9,000: S = -570 + 6,000 f on the first piece, f = 0.095 (S(1) >= 0 too,
    but the smallest fraction is wanted). E = 4,000: S is E - 4,980 plus the slack above,
    whose largest value is 10 at f = 0.95, so it is negative everywhere: closed whole.
    E = 10,000: S(0) = 10,000 - 1.1 x 8,700 = 430 >= 0: nothing to close, f = 0.
    E = -5: negative equity, nothing restores it: closed whole."""
    table = TierTable.from_lists([BTC])
    eq = np.array([9000.0, 4000.0, 10_000.0, -5.0])
    f = partial_fraction(eq, np.full((4, 1), 1e6), table, 0.005, 0.1)
    assert f[0] == pytest.approx(0.095, rel=1e-12)
    assert f[1] == 1.0
    assert f[2] == 0.0
    assert f[3] == 1.0


def test_two_assets_root_on_the_second_piece():
    """Asset 1: 1% up to 100, 2% above (mm = 0.02 n - 1 above 100); asset 2: flat 5%.
    N = (400, 100), E = 2, no fee, no buffer. Breakpoint f = 1 - 100/400 = 0.75.
    On [0, 0.75]: S = 2 - (8 (1 - f) - 1) - 5 (1 - f) = 13 f - 10, whose root 10/13 = 0.769
    lies beyond the piece (S(0.75) = -0.25). On [0.75, 1]: S = 2 - 4 (1 - f) - 5 (1 - f)
    = 9 f - 7, root 7/9."""
    table = TierTable.from_lists([[(100.0, 0.01), (np.inf, 0.02)], [(np.inf, 0.05)]])
    f = partial_fraction(np.array([2.0]), np.array([[400.0, 100.0]]), table, 0.0, 0.0)
    assert f[0] == pytest.approx(7 / 9, rel=1e-12)


def test_flat_tier_is_the_closed_form():
    """One flat rate r: S(f) = E - c f N - (1 + b) r (1 - f) N is linear with slope
    N ((1 + b) r - c). Rising: f = ((1 + b) r N - E) / (N ((1 + b) r - c)) if that is in
    [0, 1], 0 if S(0) >= 0, 1 if S(1) = E - c N < 0. Falling or flat: 0 if S(0) >= 0, else
    no fraction restores (S is largest at 0): 1."""
    rng = np.random.default_rng(7)
    k = 2000
    r = rng.uniform(0.001, 0.05, k)
    c = rng.uniform(0.0, 0.02, k)
    b = rng.uniform(0.0, 1.0, k)
    c[:20] = (1 + b[:20]) * r[:20]  # flat slack (to rounding)
    n = 10 ** rng.uniform(2, 8, k)
    eq = (1 + b) * r * n * rng.uniform(-0.2, 1.3, k)
    f = np.empty(k)
    for i in range(k):  # one rate per unit here; the function takes one table
        f[i] = partial_fraction(
            eq[i : i + 1], n[i : i + 1, None], TierTable.flat([r[i]]), c[i], b[i]
        )[0]
    slope = n * ((1 + b) * r - c)
    s0 = eq - (1 + b) * r * n
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.clip(-s0 / slope, 0.0, 1.0)
    expected = np.where(s0 >= 0, 0.0, np.where(slope > 0, rising, 1.0))
    expected = np.where((s0 < 0) & (eq - c * n < 0) & (slope > 0), 1.0, expected)
    clear = np.abs(slope) > 1e-9 * n  # leave the rounding-level flat cases to the check below
    np.testing.assert_allclose(f[clear], expected[clear], rtol=1e-10, atol=1e-12)
    flat = ~clear
    assert flat.sum() >= 10
    np.testing.assert_array_equal(f[flat], np.where(s0[flat] >= 0, 0.0, 1.0))


def test_the_engine_closes_93_percent_not_everything():
    """The by-hand case through a run: BTC at 200,000 halves to 100,000 (depth so deep the
    fill moves nothing that matters). The account closes 9.3 of 10 BTC, pays a fee of about
    4,650 and keeps about 330 of equity, where it used to be closed whole."""
    cfg = build_config(
        {
            "seed": 1,
            "steps": 1,
            "market": {"volatility": 0.0, "impact_exponent": 1.0, "resilience": 0.0},
            "assets": [
                {
                    "symbol": "BTC",
                    "price": 200_000.0,
                    "depth": 1e12,
                    "max_leverage": 100,
                    "tiers": [{"cap": c, "rate": r} for c, r in BTC],
                }
            ],
            "traders": {"count": 0},
            "margin": {
                "mode": "cross",
                "liquidation": "partial",
                "fee": 0.005,
                "buffer": 0.1,
                "insurance_fund": 0.0,
            },
            "shocks": [{"step": 1, "asset": "BTC", "return": -0.5}],
        }
    )
    # equity at 100,000: 1,004,980 + 10 (100,000 - 200,000) = 4,980
    pop = Population(
        np.arange(1),
        np.array([1_004_980.0]),
        np.array([[10.0]]),
        np.array([[200_000.0]]),
        np.zeros((1, 1), bool),
        np.zeros((1, 1)),
        np.array(["hold"], dtype=object),
    )
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"]
    assert list(fills["kind"]) == ["partial"]
    assert m.book.qty[0, 0] == pytest.approx(0.7, rel=1e-9)
    assert fills["fee"].sum() == pytest.approx(4650.0, rel=1e-6)
    equity = m.book.cross_equity(m.market.mark, np.arange(1))[0]
    assert equity == pytest.approx(330.0, abs=0.1)


# ---- random tables against exact arithmetic ------------------------------------------------


@st.composite
def tier_list(draw, monotone=True):
    """1-10 tiers: caps increasing (log-uniform 10^2-10^9); rates non-decreasing in [0, 22%]
    (sometimes equal, sometimes 0, so the fee (0-2%) falls among them), or with
    ``monotone=False`` any rates in [0, 5%] (mm not convex, S not concave: not a venue's table,
    but the solution does not rely on it)."""
    n = draw(st.integers(1, 10))
    caps = sorted(draw(st.lists(st.floats(2.0, 9.0), min_size=n - 1, max_size=n - 1, unique=True)))
    if monotone:
        steps = draw(
            st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.005, 0.02]), min_size=n, max_size=n)
        )
        jitter = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
        base = draw(st.floats(0.0, 0.01))
        rates = np.cumsum([s * j for s, j in zip(steps, jitter, strict=True)]) + base
    else:
        rates = draw(st.lists(st.floats(0.0, 0.05), min_size=n, max_size=n))
    return [(10.0**c, float(r)) for c, r in zip(caps, rates, strict=False)] + [
        (np.inf, float(rates[-1]))
    ]


def draw_units(rng, tiers, k, fee, buffer):
    """Units spread across and between tiers: notionals log-uniform, some exactly at a cap,
    some absent; equities around maintenance, around the fee on everything, random, or just
    enough for some fraction to restore the unit."""
    a = len(tiers)
    notional = 10 ** rng.uniform(1.0, 9.5, (k, a))
    caps = [[c for c, _ in t[:-1]] for t in tiers]
    for j in range(a):
        at_cap = rng.random(k) < 0.15
        if caps[j] and at_cap.any():
            notional[at_cap, j] = rng.choice(caps[j], at_cap.sum()) * rng.choice(
                [1.0, 2.0, 1.5], at_cap.sum()
            )
        if a > 1:
            notional[rng.random(k) < 0.2, j] = 0.0
    table = TierTable.from_lists(tiers)
    mm = maintenance_margin(notional, table).sum(axis=1)
    # "just restorable": the slack of zero equity peaks at -need somewhere on a grid of f and
    # falls by drop from there to f = 1; an equity between need and need + drop makes a
    # restoring stretch that ends before f = 1 (the case a full liquidation used to take)
    grid = np.linspace(0.0, 1.0, 2001)
    zero = np.array([float_slack(grid, 0.0, n, table, fee, buffer) for n in notional])
    need, drop = -zero.max(axis=1), zero.max(axis=1) - zero[:, -1]
    how = rng.integers(0, 4, k)
    eq = np.select(
        [how == 0, how == 1, how == 2],
        [
            (1 + buffer) * mm * rng.uniform(0.0, 1.1, k),
            fee * notional.sum(axis=1) * rng.uniform(0.8, 1.2, k),
            mm * rng.normal(0.5, 0.5, k),
        ],
        need + drop * rng.uniform(0.0, 1.2, k),
    )
    return eq, notional, table


def non_convex_draws(test):
    """``test`` run on tables whose rates may fall as well as rise, with any fee and buffer
    (hypothesis draws ``tiers``, ``fee``, ``buffer`` and ``seed``)."""
    draws = given(
        tiers=st.lists(tier_list(monotone=False), min_size=1, max_size=3),
        fee=st.floats(0.0, 0.02),
        buffer=st.floats(0.0, 1.0),
        seed=st.integers(0, 2**32 - 1),
    )
    return settings(EXACT_SETTINGS, max_examples=2 * EXAMPLES)(draws(test))


@EXACT_SETTINGS
@given(
    tiers=st.lists(tier_list(), min_size=1, max_size=3),
    fee=st.floats(0.0, 0.02),
    buffer=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_tables_against_exact_arithmetic(tiers, fee, buffer, seed):
    rng = np.random.default_rng(seed)
    eq, notional, table = draw_units(rng, tiers, 12, fee, buffer)
    f = partial_fraction(eq, notional, table, fee, buffer)
    assert f.shape == (12,)
    for i in range(12):
        check_against_exact(f[i], eq[i], notional[i], tiers, table, fee, buffer)


@non_convex_draws
def test_non_convex_tables_against_exact_arithmetic(tiers, fee, buffer, seed):
    """Falling rates make S non-concave (it can restore on two separate stretches): still the
    smallest root."""
    rng = np.random.default_rng(seed)
    eq, notional, table = draw_units(rng, tiers, 12, fee, buffer)
    f = partial_fraction(eq, notional, table, fee, buffer)
    for i in range(12):
        check_against_exact(f[i], eq[i], notional[i], tiers, table, fee, buffer)


def test_two_restoring_stretches_the_first_wins():
    """Rates 2% up to 100, 0 to 200, 5% above (not a venue's table: mm is not convex).
    N = 300, fee 1%, no buffer: mm(n) = 0.02 n up to 100, 2 up to 200, 0.05 n - 8 above, so
    S(f) = E - 3 f - mm(300 (1 - f)) rises, falls, rises:
      [0, 1/3]:   S = E - 3 f - (7 - 15 f) = E - 7 + 12 f      (S(1/3) = E - 3)
      [1/3, 2/3]: S = E - 3 f - 2                              (S(2/3) = E - 4)
      [2/3, 1]:   S = E - 3 f - 6 (1 - f) = E - 6 + 3 f        (S(1) = E - 3)
    E = 3.5 restores on [7/24, 1/2] and on [5/6, 1]: the first, f = 3.5 / 12 = 7/24.
    E = 3.2: f = 3.8 / 12 = 19/60. E = 2.9: S <= -0.1 everywhere, f = 1. (E = 3 would touch 0
    at 1/3 and at 1 only, where rounding decides.)"""
    table = TierTable.from_lists([[(100.0, 0.02), (200.0, 0.0), (np.inf, 0.05)]])
    eq = np.array([3.5, 3.2, 2.9])
    f = partial_fraction(eq, np.full((3, 1), 300.0), table, 0.01, 0.0)
    assert f[0] == pytest.approx(7 / 24, rel=1e-12)
    assert f[1] == pytest.approx(19 / 60, rel=1e-12)
    assert f[2] == 1.0


def test_random_tables_against_a_dense_scan():
    """On a grid of 20,001 fractions: no grid point left of f restores the unit, and f is no
    later than the first grid point that does. The draws cover every regime: closed whole,
    nothing to close, a root where S(1) >= 0, and a root where S(1) < 0 (closed whole before)."""
    rng = np.random.default_rng(11)
    grid = np.linspace(0.0, 1.0, 20_001)
    regimes = {"whole": 0, "none": 0, "root": 0, "root, S(1) < 0": 0}
    for _ in range(40):
        a = int(rng.integers(1, 4))
        tiers = []
        for _ in range(a):
            n = int(rng.integers(1, 11))
            caps = np.sort(10 ** rng.uniform(2, 9, n - 1))
            rates = np.cumsum(rng.uniform(0, 0.01, n) * (rng.random(n) < 0.7))
            tiers.append([*zip(caps, rates[:-1], strict=True), (np.inf, rates[-1])])
        fee, buffer = rng.uniform(0, 0.02), rng.uniform(0, 1)
        low = (1 + buffer) * max(t[0][1] for t in tiers)
        if 0 < low < 0.02 and rng.random() < 0.5:  # fee above the lowest rates: S can fall
            fee = rng.uniform(low, 0.02)
        eq, notional, table = draw_units(rng, tiers, 25, fee, buffer)
        f = partial_fraction(eq, notional, table, fee, buffer)
        if kernels.enabled():  # the compiled twin: the same floats in every regime below
            compiled = partial_fraction(eq, notional, table, fee, buffer, compiled=True)
            assert compiled.tobytes() == f.tobytes()
        for i in range(25):
            s = float_slack(grid, eq[i], notional[i], table, fee, buffer)
            noise = 256 * EPS * scale(eq[i], notional[i], tiers, fee, buffer)
            assert (s[grid < f[i] - 1e-9] < noise).all()
            ok = np.flatnonzero(s >= noise)
            if ok.size:
                assert f[i] <= grid[ok[0]] + 1e-12
            if f[i] == 1.0:
                regimes["whole"] += 1
            elif f[i] == 0.0:
                regimes["none"] += 1
            else:
                regimes["root" if s[-1] >= 0 else "root, S(1) < 0"] += 1
    assert sum(regimes.values()) == 1000
    assert min(regimes.values()) >= 40, regimes


def test_old_bisection_cases_agree_where_the_slack_is_monotone():
    """Fee below every rate x (1 + buffer): S rises in f, so the answer is where it crosses 0
    on its way up, or 1 when S(1) < 0 -- what the old bisection returned."""
    table = TierTable.from_lists([BTC, [(np.inf, 0.02)]])
    rng = np.random.default_rng(3)
    notional = rng.uniform(1e4, 5e6, (300, 2))
    mm = maintenance_margin(notional, table).sum(axis=1)
    eq = mm * rng.uniform(0.3, 0.99, 300)
    f = partial_fraction(eq, notional, table, 0.001, 0.1)
    tiers = [BTC, [(np.inf, 0.02)]]
    for i in range(0, 300, 10):
        check_against_exact(f[i], eq[i], notional[i], tiers, table, 0.001, 0.1)
        s1 = float_slack(1.0, eq[i], notional[i], table, 0.001, 0.1)[0]
        assert (f[i] == 1.0) == (s1 < 0)


def test_no_units_and_no_positions():
    table = TierTable.from_lists([BTC])
    assert partial_fraction(np.zeros(0), np.zeros((0, 1)), table, 0.005, 0.1).shape == (0,)
    f = partial_fraction(np.array([5.0, 0.0, -1.0]), np.zeros((3, 1)), table, 0.005, 0.1)
    np.testing.assert_array_equal(f, [0.0, 0.0, 1.0])  # S = E for every f


@non_convex_draws
def test_the_compiled_fractions_are_numpys_to_the_bit(tiers, fee, buffer, seed):
    """kernels.partial_fractions (a unit at a time) against numpy's columns of breakpoints,
    on the draws of every regime, tables that fall as well as rise, units with no position,
    flat tables and NaN notionals: the same floats, bit for bit."""
    if not kernels.enabled():
        pytest.skip("the compiled kernels are off")
    rng = np.random.default_rng(seed)
    eq, notional, table = draw_units(rng, tiers, 40, fee, buffer)
    notional[:3] = 0.0  # no position: S = E everywhere
    eq[:2] = [5.0, -1.0]
    notional[3, 0] = np.nan
    for t in (table, TierTable.flat([0.01] * len(tiers))):
        plain = partial_fraction(eq, notional, t, fee, buffer)
        compiled = partial_fraction(eq, notional, t, fee, buffer, compiled=True)
        assert plain.tobytes() == compiled.tobytes()
