"""Extreme parameters run to the end with finite outputs; run folders survive being killed.

The in-suite variants keep trader counts small so they stay quick; docs/reliability.md lists
the full-size runs (10,000 traders, hundreds of thousands of steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from agents.market import Market
from model import ContagionModel
from model.config import AssetConfig, MarketConfig, build_config
from model.results import INCOMPLETE_MARKER, RUN_FILES, money_scale, run_status
from tests.helpers import small_config

# Columns where NaN is a documented value ("no such price"), not a numerical failure.
NAN_MEANS_NONE = ("liquidation_price_", "leverage", "margin_ratio")


def extreme_config(**patch):
    """Leverage up to 1000x on both assets, depth a thousandth of the test default."""
    data = small_config(steps=300, traders={"count": 150, "leverage": 1000.0})
    for asset in data["assets"]:
        asset["max_leverage"] = 1000.0
        asset["depth"] /= 1000.0
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_finite_folder(out):
    assert run_status(out) == "complete"
    for name in ("market", "steps", "liquidations", "accounts"):
        df = pd.read_parquet(out / f"{name}.parquet")
        for col in df.select_dtypes("number").columns:
            values = df[col].to_numpy(dtype=float)
            if name == "accounts" and col.startswith(NAN_MEANS_NONE):
                values = values[~np.isnan(values)]
            assert np.all(np.isfinite(values)), f"{name}.{col} is not finite"
    market = pd.read_parquet(out / "market.parquet")
    assert (market["price"] > 0).all() and (market["fundamental"] > 0).all()
    return strict_json(out / "summary.json")


def run_quietly(data, out=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(build_config(data), create_agents=False).run()
        if out is not None:
            m.write_results(out)
    return m


def assert_money_conserved(m):
    assert abs(m.money()["total"] - m.initial_money) <= 1e-9 * money_scale(m)


# --------------------------------------------------------------------------------------------
# Extreme parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({}, id="leverage-1000-depth-1e-3"),
        pytest.param({"market": {"volatility": 10.0}}, id="volatility-10"),
        pytest.param({"market": {"volatility": 10.0, "impact_exponent": 2.0}}, id="impact-2"),
        pytest.param(
            {"market": {"volatility": 50.0, "step_minutes": 525_600.0}}, id="volatility-50-yearly"
        ),
        pytest.param(
            {"market": {"jump_intensity": 1e6, "jump_mean": 5.0, "jump_volatility": 5.0}},
            id="jumps-max",
        ),
        pytest.param(
            {"margin": {"mode": "isolated", "liquidation": "full", "insurance_fund": 0.0}},
            id="isolated-no-fund",
        ),
        pytest.param(
            {"shocks": [{"step": 2, "asset": "BTC", "return": 100.0}]}, id="shock-plus-10000pct"
        ),
        pytest.param(
            {"shocks": [{"step": 2, "asset": "ETH", "return": -0.999999}]},
            id="shock-minus-99.9999pct",
        ),
    ],
)
def test_extreme_parameters_run_to_the_end_with_finite_outputs(tmp_path, patch):
    data = extreme_config(**patch)
    m = run_quietly(data, tmp_path / "run")
    assert m.steps == data["steps"]
    assert_money_conserved(m)
    summary = assert_finite_folder(tmp_path / "run")
    assert summary["steps"] == data["steps"]
    assert 0.0 <= summary["fraction_liquidated"] <= 1.0
    assert summary["money_error"] <= 1e-9


@pytest.mark.slow
def test_long_run_small_population():
    # vol 10 drifts the log price down by sigma^2 / 2 = 50 a year: 40,000 two-hour steps (9
    # years) take the fundamental to the price floor long before the end, and the run must
    # still finish with finite numbers.
    data = extreme_config(steps=40_000, market={"volatility": 10.0, "step_minutes": 120.0})
    data["traders"]["count"] = 20
    m = run_quietly(data)
    assert m.steps == 40_000
    assert np.all(np.isfinite(m.mark)) and np.all(m.mark > 0)
    assert_money_conserved(m)
    assert m.warning_counts.get("price_floor", 0) > 0
    summary = m.summary()
    assert summary["warning_counts"]["price_floor"] == m.warning_counts["price_floor"]
    assert len(summary["warnings"]) <= 20 * len(summary["warning_counts"])
    json.dumps(summary, allow_nan=False)


def test_market_stays_within_limits_under_absurd_flows():
    import mesa

    model = mesa.Model(rng=0)
    asset = AssetConfig(symbol="X", price=100.0, depth=1.0, volatility=0.0)
    mk = Market(model, MarketConfig(impact_exponent=2.0), [asset])
    mk.move_fundamentals(1)
    price = mk.execute([1e150], forced=True)  # sell 1e150 units into a 1-dollar book
    assert np.isfinite(price).all() and price[0] > 0
    assert mk.limit_hit[0] == -1
    price = mk.execute([-1e151], forced=True)  # then buy ten times as much back
    assert np.isfinite(price).all() and mk.limit_hit[0] == 1
    mk.move_fundamentals(2)
    assert mk.limit_hit[0] == 0 and np.isfinite(mk.price).all()


# --------------------------------------------------------------------------------------------
# Warnings: one stderr line each, and in summary.json
# --------------------------------------------------------------------------------------------


def write_config(tmp_path, data):
    import tomli_w

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def run_cli(*args):
    """The real command line in a fresh process: what a user sees on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stderr


@pytest.mark.slow
def test_price_floor_warning_goes_to_stderr_and_summary(tmp_path):
    data = extreme_config(steps=400, market={"volatility": 50.0, "step_minutes": 1440.0})
    path = write_config(tmp_path, data)
    code, stderr = run_cli("run", path, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    err = stderr.splitlines()
    floor = [line for line in err if "price held at its floor" in line]
    assert 1 <= len(floor) <= 3
    assert all(line.startswith("contagion: warning: step ") for line in floor)
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert summary["warning_counts"]["price_floor"] >= len(floor)
    assert any("floor" in w for w in summary["warnings"])


@pytest.mark.slow
def test_round_limit_warning_goes_to_stderr_and_summary(tmp_path):
    data = small_config(steps=12, traders={"count": 400, "leverage": 40.0})
    data["margin"]["max_rounds"] = 1
    data["shocks"] = [{"step": 3, "asset": "BTC", "return": -0.3}]
    path = write_config(tmp_path, data)
    code, stderr = run_cli("run", path, "--out", tmp_path / "out")
    assert code == 0, stderr
    err = stderr.splitlines()
    lines = [line for line in err if "round limit margin.max_rounds=1 hit" in line]
    assert lines and all(line.startswith("contagion: warning: step ") for line in lines)
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert summary["warning_counts"]["round_limit"] >= 1
    steps = pd.read_parquet(tmp_path / "out" / "steps.parquet")
    assert summary["warning_counts"]["round_limit"] <= int((steps["rounds"] == 1).sum())


# --------------------------------------------------------------------------------------------
# Crash-safe run folders
# --------------------------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.helpers import small_config
    import model.storage as storage
    from model import ContagionModel
    from model.config import build_config

    target = {target!r}
    real = storage.atomic_write

    def dying_write(path, write):
        if path.name == target:
            def half(tmp):
                tmp.write_bytes(b"half a file")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, half)
        return real(path, write)

    storage.atomic_write = dying_write
    m = ContagionModel(build_config(small_config(steps=5, shocks=[], traders={{"count": 50}})))
    m.run().write_results({out!r})
    """
)


@pytest.mark.parametrize("target", ["liquidations.parquet", "contagion.graphml.gz", "summary.json"])
@pytest.mark.slow
def test_run_folder_killed_mid_write_is_marked_incomplete_and_recovers(tmp_path, target):
    out = tmp_path / "run"
    # a complete earlier run in the same folder: its files must not pass for the new run's
    run_quietly(small_config(steps=3, shocks=[], traders={"count": 20}), out)
    assert run_status(out) == "complete"
    script = _KILLED_WRITER.format(
        root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        target=target,
        out=str(out),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (out / INCOMPLETE_MARKER).exists()
    assert run_status(out) == "incomplete"
    assert not (out / "summary.json").exists()
    # nothing under a final name is half written: every parquet present opens
    for name in RUN_FILES:
        if name.endswith(".parquet") and (out / name).exists():
            pd.read_parquet(out / name)
    assert list(out.glob(".*.tmp")), "the killed writer left its temporary file"
    # writing again completes the folder and clears the leftovers
    run_quietly(small_config(steps=5, shocks=[], traders={"count": 50}), out)
    assert run_status(out) == "complete"
    assert not list(out.glob(".*.tmp"))
    assert strict_json(out / "summary.json")["steps"] == 5


def test_run_status_of_missing_and_partial_folders(tmp_path):
    assert run_status(tmp_path / "nothing") == "missing"
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "summary.json").write_text("{}")
    assert run_status(tmp_path / "partial") == "incomplete"


@pytest.mark.slow
def test_degenerate_market_stops_with_one_clean_line(tmp_path):
    # A one-dollar book at a price of 1e-12 with orders of 100x equity: every trade drives the
    # price to a limit and balances can compound beyond floating point. The run either finishes
    # with finite outputs or stops with one line and exit status 2, leaving no run folder
    # posing as complete; never a traceback or a NaN.
    data = {
        "name": "degenerate",
        "seed": 143644346,
        "steps": 6,
        "market": {
            "correlation": 0.0,
            "volatility": 0.0,
            "impact_exponent": 2.0,
            "resilience": 0.0,
            "step_minutes": 1e-9,
            "jump_mean": -5.0,
            "depth_recovery": 0.0,
            "funding_cap": 0.0,
            "funding_interest": -0.01,
        },
        "assets": [
            {"symbol": "AAA", "price": 1e-12, "depth": 1.0, "volatility": 0.0, "max_leverage": 1.0},
            {"symbol": "BBB", "price": 1e-12, "depth": 1.0, "volatility": 0.0, "max_leverage": 1.0},
        ],
        "traders": {
            "count": 22,
            "assets_per_trader": 2,
            "leverage": 1.0,
            "leverage_dispersion": 0.0,
            "collateral": 1.0,
            "collateral_tail": 0.100000001,
            "long_fraction": 0.0,
            "rules": {
                "target_leverage": {"target": 1.0, "rebalance": 1e-9},
                "momentum": {"leverage": 0.0, "lookback": 1},
                "value": {"leverage": 0.0, "scale": 1e-9},
                "noise": {"size": 100.0, "decay": 1e-9},
            },
            "strategies": {"hold": 1.0, "target_leverage": 1.0, "noise": 1.0},
        },
        "margin": {
            "mode": "cross",
            "liquidation": "full",
            "fee": 0.0,
            "buffer": 0.0,
            "insurance_fund": 0.0,
            "max_rounds": 1,
            "adl": False,
        },
        "shocks": [{"step": 1, "asset": "AAA", "return": -0.999999}],
    }
    code, stderr = run_cli("run", write_config(tmp_path, data), "--out", tmp_path / "out")
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("contagion: error:")]
    if code == 0:
        assert not errors
        assert_finite_folder(tmp_path / "out")
        return
    assert code == 2, stderr
    assert errors == [
        "contagion: error: step 6: balances overflowed floating point (prices held at their "
        "limits while traders kept trading: assets.depth is too thin for these orders)"
    ]
    assert run_status(tmp_path / "out") != "complete"


def test_non_finite_balances_stop_the_run_cleanly(tmp_path, monkeypatch, capsys):
    from experiments.cli import main

    real_step = ContagionModel.trade_voluntarily

    def overflowing(self):
        real_step(self)
        if self.steps == 3:
            self.book.credit([0], wallet=[np.inf])  # written as every writer does

    monkeypatch.setattr(ContagionModel, "trade_voluntarily", overflowing)
    path = write_config(tmp_path, small_config(steps=5, shocks=[]))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "contagion: error: step 3: balances overflowed floating point (prices held at their "
        "limits while traders kept trading: assets.depth is too thin for these orders)"
    ]
    assert run_status(tmp_path / "out") != "complete"
