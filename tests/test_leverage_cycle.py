"""The leverage cycle's rules (agents/leverage_cycle.py) and experiments/configs/leverage-cycle.toml.

The config is the market of validation checks 4b and 6d: run through ``contagion run`` it gives
check 6d's returns to the bit; the noise trader's demand follows its AR(1) (closed form with
the shocks off); money is conserved through margin calls, defaults, investors' flows and the
makers' re-entries; bad rule parameters stop the run with one line.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main
from experiments.validation import thurner_engine as te
from model import ContagionModel, load_config

CONFIG = te.CONFIG
# the paper's N (units the noise trader holds), V (the value) and W0 (a fund's equity)
N_SHARES, V, W0 = 1000.0, 1.0, 2.0


def _run_returns(tmp_path, *args) -> np.ndarray:
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--out", str(out), "--quiet", *args]) == 0
    price = pd.read_parquet(out / "market.parquet")["price"].to_numpy()
    return np.diff(np.log(np.r_[V, price]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "control"),
    [("F", []), ("C1", ["--set", "assets.X.max_leverage=1", "--set", "margin.maintenance=0.999"])],
)
def test_the_config_run_is_check_6d_to_the_bit(tmp_path, variant, control):
    """``contagion run experiments/configs/leverage-cycle.toml`` (and with the control's two
    keys) gives the returns of check 6d's F (and C1), bit for bit, at a seed of neither."""
    from experiments.validation.endogenous_v4 import endogenous_v4_run

    got = _run_returns(tmp_path, "--set", "steps=600", "--seed", "7", *control)
    _, want = endogenous_v4_run(variant, 7, steps=600, burn_in=0)
    assert got.shape == (600,)
    np.testing.assert_array_equal(got, want)


def test_the_config_is_the_papers_market():
    """The config and its population file hold the market of Thurner, Farmer and Geanakoplos
    that checks 4b and 6d describe (docs/validation.md quotes these values from the file):
    N = 1,000 units with the noise trader, value 1, ten flat funds of W0 = 2 whose
    aggressiveness runs over check 4b's, default at 10% and re-entry after 100 steps, margin
    calls at the cap with a buffer of 0.1."""
    cfg = load_config(CONFIG)
    pop = pd.read_csv(CONFIG.parent / cfg.traders.population)
    noise = pop[pop["strategy"] == "noise_demand"]
    funds = pop[pop["strategy"] == "leverage_cycle"]
    fund_rule = cfg.traders.rules["leverage_cycle"]
    assert (len(noise), len(funds)) == (1, len(te.BETAS))
    assert noise["quantity"].item() == N_SHARES
    assert cfg.assets[0].price == V and cfg.market.volatility == 0.0
    assert (funds["collateral"] == W0).all() and (funds["quantity"] == 0).all()
    assert (fund_rule.aggressiveness_first, fund_rule.aggressiveness_last) == (50.0, 500.0)
    assert te.BETAS[0] == 50.0 and te.BETAS[-1] == 500.0
    assert (fund_rule.floor, fund_rule.reentry_steps) == (0.1, 100)
    assert cfg.margin.buffer == 0.1
    assert cfg.margin.maintenance == 1.0 / cfg.assets[0].max_leverage  # calls at the cap


def test_noise_demand_reverts_to_its_mean_in_closed_form():
    """With no shocks (sigma 0) a demand started at twice its mean reverts as
    log xi_t = log N + rho^t log 2; above the value the funds hold nothing, so each walk
    clears the demand alone and the price is xi_t / N = 2 ** (rho ** t)."""
    over = {"traders.rules.noise_demand.sigma": 0.0, **te.NO_MAKERS}
    m = ContagionModel(load_config(CONFIG, overrides=over), create_agents=False)
    noise, rows = m.strategies["noise_demand"], m.strategy_rows["noise_demand"]
    noise._setup(rows)  # the demand's state, then moved to twice its mean
    noise.log_xi[:] = math.log(2.0 * N_SHARES)
    rho = m.config.traders.rules["noise_demand"].rho
    for t in range(1, 120):
        m.step()
        assert m.market.price[0] == pytest.approx(2.0 ** (rho**t), rel=1e-8)
        assert m.book.qty[m.strategy_rows["leverage_cycle"], 0].sum() == 0.0


@pytest.mark.slow
def test_money_is_conserved_through_calls_defaults_flows_and_the_makers():
    """Traders, makers, fund and market agent, less the funds' investor flows and the makers'
    fresh capital (the model's deposits), stay the initial money every step; the makers start
    flat, quote the noise trader's 1% depth at the value and never hedge; calls happen."""
    cfg = load_config(CONFIG, overrides={"seed": 5})
    m = ContagionModel(cfg, create_agents=False)
    rows = m.liquidity.maker_rows
    assert (m.book.qty[rows] == 0).all() and len(rows) == 5
    # the noise trader's curve xi / p buys N (1 / 0.99 - 1) units for a 1% fall at the value
    assert cfg.assets[0].depth == pytest.approx(N_SHARES * (1 / 0.99 - 1), rel=0.011)
    calls = 0
    for _ in range(1500):
        m.step()
        calls += int(m.last.liquidations > 0)
        assert abs(m.money()["total"] - m.initial_money - m.deposits) < 1e-9 * 1e4
    assert m.market_history.depth[0, 0] == pytest.approx(cfg.assets[0].depth)
    assert (m.liquidity.desk.hedge == 0).all()
    assert (m.book.qty[rows] != 0).any() and calls > 0
    assert m.strategies["leverage_cycle"].deposits != 0.0


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("traders.rules.leverage_cycle.floor", "1.5", "must be < 1, got 1.5"),
        ("traders.rules.leverage_cycle.aggressiveness_last", "-1", "must be >= 0, got -1"),
        ("traders.rules.noise_demand.rho", "1", "must be < 1, got 1"),
    ],
)
def test_bad_rule_parameters_stop_with_one_line(tmp_path, capsys, key, value, words):
    out = tmp_path / "run"
    code = main(["run", str(CONFIG), "--out", str(out), "--set", f"{key}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert key in err[0] and words in err[0]
    assert not out.exists()


def test_noise_demand_in_a_generated_venue_holds_its_curve_until_liquidated():
    """In a generated venue (two assets, longs and shorts, leverage 15, a -8% shock), accounts
    following noise_demand: a short or flat first-asset position has no demand and is kept;
    a long one holds ``xi / p`` of the first asset after every step, until it is liquidated,
    which withdraws its demand for good (venues cancel the orders of an account under
    liquidation); money is conserved every step."""
    from model.config import build_config
    from tests.helpers import small_config

    data = small_config(traders={"strategies": {"hold": 0.5, "noise_demand": 0.5}})
    m = ContagionModel(build_config(data), create_agents=False)
    rows = m.strategy_rows["noise_demand"]
    q0 = m.book.qty[rows, 0].copy()
    assert (q0 < 0).any() and (q0 > 0).any()
    rule = m.strategies["noise_demand"]
    for _ in range(30):
        m.step()
        assert abs(m.money()["total"] - m.initial_money - m.deposits) < 1e-9 * m.initial_money
        demand = rule.demand
        called = m.liquidation_count[demand.rows] > 0
        np.testing.assert_array_equal(demand.live, ~called)
        held = m.book.qty[demand.rows[demand.live], 0]
        want = demand.xi[demand.live] / m.market.price[0]
        np.testing.assert_allclose(held, want, rtol=1e-9)
    assert (~demand.live).any() and demand.live.any()  # the shock called some, not all
    short = (q0 <= 0) & (m.liquidation_count[rows] == 0)
    np.testing.assert_array_equal(m.book.qty[rows, 0][short], q0[short])
