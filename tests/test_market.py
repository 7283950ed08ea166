"""The market agent: impact law, resilience, GBM statistics, counterparty book."""

import math

import mesa
import numpy as np
import pytest

from agents.market import Market, impact_state, libm_exp, libm_power
from model.config import AssetConfig, MarketConfig


def make_market(volatilities=(0.5, 0.8), **kw):
    """Two assets, A at 100 and B at 10, correlated 0.6; ``kw``: keys of the [market] section."""
    assets = [
        AssetConfig(symbol=s, price=p, depth=d, volatility=v)
        for s, p, d, v in zip(["A", "B"], [100.0, 10.0], [1e6, 1e5], volatilities, strict=True)
    ]
    return Market(mesa.Model(rng=3), MarketConfig(correlation=0.6, **kw), assets)


@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5])
def test_selling_the_depth_moves_the_log_price_by_one_percent(beta):
    m = make_market(impact_exponent=beta, volatilities=[0.0, 0.0])
    m.move_fundamentals(1)
    price = m.execute([1e6 / 100.0, 0.0], forced=True)  # the depth, in units
    assert math.log(price[0] / 100.0) == pytest.approx(-0.01)
    assert price[1] == pytest.approx(10.0)
    # four times the depth: 4 ** beta percent
    price = m.execute([3e6 / 100.0, 0.0], forced=False)
    assert math.log(price[0] / 100.0) == pytest.approx(-0.01 * 4**beta)
    assert m.forced_flow[0] == pytest.approx(1e4)
    assert m.flow[0] == pytest.approx(4e4)


def test_impact_decays_by_the_resilience_between_steps():
    m = make_market(volatilities=[0.0, 0.0], resilience=0.25)
    m.move_fundamentals(1)
    m.execute([1e4, 0.0], forced=True)
    s = m.impact[0]
    m.move_fundamentals(2)
    assert m.impact[0] == pytest.approx(0.75 * s)
    m.execute([-1e4, 0.0], forced=False)  # buying back walks up from the decayed level
    assert m.impact[0] == pytest.approx(0.75 * s + 0.01)


def test_impact_state_is_odd_in_flow():
    s = impact_state(np.zeros(3), np.array([-5.0, 0.0, 5.0]), 10.0, 0.5)
    np.testing.assert_allclose(s, [0.01 * 0.5**0.5, 0.0, -0.01 * 0.5**0.5])


def test_prices_and_impact_are_the_c_librarys_exp_and_power():
    """The market's exp and power are math.exp and math.pow element by element (the bits a
    compiled walk computes), keep the shape, and overflow to inf as numpy's do."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-50.0, 50.0, (4, 3))
    assert [v for v in libm_exp(x).ravel()] == [math.exp(v) for v in x.ravel()]
    assert libm_exp(x).shape == (4, 3)
    y = rng.uniform(0.0, 1e6, 5)
    assert [v for v in libm_power(y, 0.7)] == [math.pow(v, 0.7) for v in y]
    assert libm_exp(np.array([800.0, -800.0])).tolist() == [math.inf, 0.0]
    assert libm_power(np.array([1e300]), 2.0).tolist() == [math.inf]
    m = make_market()
    m.move_fundamentals(1)
    m.execute([5e3, -300.0], forced=True)
    log_price = m.log_fundamental + m.impact
    assert m.price.tolist() == [math.exp(v) for v in log_price]


def test_gbm_volatility_and_correlation():
    m = make_market(step_minutes=60.0)
    n = 20000
    logs = np.empty((n + 1, 2))
    logs[0] = m.log_fundamental
    for t in range(1, n + 1):
        m.move_fundamentals(t)
        logs[t] = m.log_fundamental
    r = np.diff(logs, axis=0)
    dt = 60 / (365 * 24 * 60)
    vol = r.std(axis=0) / math.sqrt(dt)
    np.testing.assert_allclose(vol, [0.5, 0.8], rtol=0.03)  # 20k draws: ~0.5% sd of the estimate
    assert np.corrcoef(r.T)[0, 1] == pytest.approx(0.6, abs=0.03)
    # zero drift in price: E[exp(r)] = 1
    assert np.exp(r).mean(axis=0) == pytest.approx([1.0, 1.0], abs=1e-3)


def test_counterparty_book_conserves_value():
    m = make_market()
    m.take_other_side(np.array([2.0, -3.0]), np.array([100.0, 10.0]))
    assert m.inventory.tolist() == [-2.0, 3.0]
    assert m.cash.tolist() == [200.0, -30.0]
    assert m.value(np.array([100.0, 10.0])) == pytest.approx(0.0)


def _clipped(values, low, high, hit):
    """The plain clip of ``values`` to ``[low, high]`` and the limits hit noted over ``hit``
    (the market's numpy lines, every time)."""
    clipped = np.minimum(np.maximum(values, low), high)
    with np.errstate(invalid="ignore"):
        bit = np.sign(values - clipped).astype(np.int8)
    return clipped, np.where(bit != 0, bit, hit)


def test_limits_leave_values_strictly_within_them_as_the_clip_leaves_them():
    """The log-price limits as the market applies them (a value strictly inside its limits
    passed on as it is) against the plain clip, to the bit: values at, just inside and
    beyond each limit, signed zeros where a limit is zero, and a NaN; the impact's limits
    (relative to the fundamental) and the fundamental's own, and which limit each hit."""
    lim = 230.0
    edge = [np.nextafter(lim, 0.0), lim, np.nextafter(lim, np.inf), 1e300, 0.0, -0.0, np.nan]
    values = [v for x in edge for v in (x, -x)]
    mk = make_market()
    for f in (0.0, -lim, lim, 3.5):  # the impact's limits relative to this fundamental
        for x in values + [v - f for v in values]:  # (a limit of zero at f = +-lim)
            mk.log_fundamental = np.array([f, 11.0])
            mk.limit_hit = np.zeros(2, dtype=np.int8)
            s = np.array([x, 0.25])
            low, high = -lim - mk.log_fundamental, lim - mk.log_fundamental
            want, hit = _clipped(s, low, high, np.zeros(2, dtype=np.int8))
            with np.errstate(invalid="ignore"):
                got = mk._within_limits(s.copy())
            assert got.tobytes() == want.tobytes(), (f, x)
            assert mk.limit_hit.tobytes() == hit.tobytes(), (f, x)
    mk._drift, mk._diffusion = np.zeros(2), np.zeros(2)  # (the step's move: the shock)
    for x in values:  # the fundamental's own limits, through a step's move
        mk.log_fundamental, mk.log_shocks = np.zeros(2), {1: np.array([x, 0.0])}
        with np.errstate(invalid="ignore"):
            mk.move_fundamentals(1)
        raw = np.zeros(2) + np.array([x, 0.0])
        want, _ = _clipped(raw, -lim, lim, 0)
        with np.errstate(invalid="ignore"):
            hit = np.sign(raw - want).astype(np.int8)
        assert mk.log_fundamental.tobytes() == want.tobytes(), x
        assert mk.limit_hit.tobytes() == hit.tobytes(), x
