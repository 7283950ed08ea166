"""Stochastic volatility of the fundamental: GARCH(1,1) variance and Student-t innovations,
against their closed forms (Bollerslev 1986; the ARMA(1,1) form of the squared returns)."""

import math
from pathlib import Path

import mesa
import numpy as np
import pytest

from agents.market import MINUTES_PER_YEAR, Market
from model import ContagionModel, load_config
from model.config import AssetConfig, ConfigError, MarketConfig, build_config

SIGMA = 0.5
DT = 60.0 / MINUTES_PER_YEAR
STEPS = 60_000


def fundamental_returns(steps=STEPS, seed=11, correlation=0.0, **kw):
    """(steps, 2) log returns of two fundamentals, nothing else moving them."""
    model = mesa.Model(rng=seed)
    assets = [
        AssetConfig(symbol="A", price=100.0, depth=1e6, volatility=SIGMA),
        AssetConfig(symbol="B", price=10.0, depth=1e5, volatility=SIGMA),
    ]
    mk = Market(model, MarketConfig(correlation=float(correlation), **kw), assets)
    logs = np.empty((steps + 1, 2))
    logs[0] = mk.log_fundamental
    for t in range(1, steps + 1):
        mk.move_fundamentals(t)
        logs[t] = mk.log_fundamental
    return np.diff(logs, axis=0)


def acf(x, lag):
    d = x - x.mean()
    return float(np.dot(d[:-lag], d[lag:]) / np.dot(d, d))


def kurtosis(x):
    d = x - x.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def test_off_by_default_is_the_constant_volatility_gbm():
    r = fundamental_returns(steps=50, seed=4, garch_alpha=0.0, garch_beta=0.0)
    z = np.random.default_rng(4).standard_normal((50, 2))  # the same stream, drawn directly
    expected = -0.5 * SIGMA**2 * DT + SIGMA * math.sqrt(DT) * z
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_garch_variance_and_acf_of_squared_returns_match_the_closed_form():
    alpha, beta = 0.1, 0.8
    r = fundamental_returns(garch_alpha=alpha, garch_beta=beta)
    phi = alpha + beta
    # unconditional variance omega / (1 - alpha - beta) = sigma^2 dt
    var = SIGMA**2 * DT
    # squared returns are ARMA(1, 1) with AR root alpha + beta and MA root -beta:
    rho1 = alpha * (1 - alpha * beta - beta**2) / (1 - 2 * alpha * beta - beta**2)  # 0.14
    # kurtosis with normal innovations: 3 (1 - phi^2) / (1 - phi^2 - 2 alpha^2)
    kurt = 3 * (1 - phi**2) / (1 - phi**2 - 2 * alpha**2)  # 3.35
    for a in range(2):
        x = r[:, a]
        assert x.var() == pytest.approx(var, rel=0.05)
        sq = x**2
        for lag in (1, 2, 5, 10):
            assert acf(sq, lag) == pytest.approx(rho1 * phi ** (lag - 1), abs=0.03)
        assert kurtosis(x) == pytest.approx(kurt, rel=0.1)
    # a constant-volatility series has none of it
    flat = fundamental_returns(steps=20_000)[:, 0]
    assert abs(acf(flat**2, 1)) < 0.03
    assert kurtosis(flat) == pytest.approx(3.0, abs=0.15)


@pytest.mark.slow
def test_student_t_innovations_keep_variance_and_correlation_and_fatten_the_tails():
    nu = 12.0
    r = fundamental_returns(correlation=0.6, innovation_dof=nu)
    for a in range(2):
        assert r[:, a].var() == pytest.approx(SIGMA**2 * DT, rel=0.05)
        # standardised t: kurtosis 3 (nu - 2) / (nu - 4) = 3.75
        assert kurtosis(r[:, a]) == pytest.approx(3 * (nu - 2) / (nu - 4), rel=0.1)
    assert np.corrcoef(r.T)[0, 1] == pytest.approx(0.6, abs=0.02)
    # no variance dynamics without GARCH
    assert abs(acf(r[:, 0] ** 2, 1) - 0.0) < 0.03


def test_config_bounds_and_wiring():
    base = {"assets": [{"symbol": "X", "price": 100.0, "depth": 1e6}]}
    with pytest.raises(ConfigError, match="garch_alpha \\+ market.garch_beta"):
        build_config({**base, "market": {"garch_alpha": 0.2, "garch_beta": 0.8}})
    with pytest.raises(ConfigError, match="innovation_dof"):
        build_config({**base, "market": {"innovation_dof": 2.0}})
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo.toml",
        overrides={
            "market.garch_alpha": 0.1,
            "market.garch_beta": 0.85,
            "market.innovation_dof": 6.0,
            "steps": 3,
            "shocks": [],  # the demo's shock (step 4) is after these three steps
        },
    )
    m = ContagionModel(cfg, create_agents=False)
    m.run()
    mk = m.market
    assert (mk.garch_alpha, mk.garch_beta, mk.innovation_dof) == (0.1, 0.85, 6.0)
    assert np.all(mk.variance > 0) and np.all(np.isfinite(mk.price))
