"""Inputs that are legal TOML but wrong, through ``contagion run``.

Errors: exit status 2 and one line naming the key or file (a shock after the last step, a
population file without rows or with stray spaces in its header, ids that cannot be kept).
Unit slips (a return of 10 for 10%, a volatility of 8 for 8%, leverage above the venue's
maximum): the run goes on, with one warning line on stderr that names the key, kept in
summary.json's ``warnings``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.cli import main
from model import ContagionModel, load_config
from model.config import build_config
from tests.helpers import small_config

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
HEADER = "trader_id,collateral,asset,quantity,entry_price"


def write_config(folder: Path, data: dict) -> Path:
    path = folder / "c.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _to_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def warnings_on_stderr():
    """Warnings printed on stderr as a fresh ``contagion`` process prints them (pytest
    otherwise collects them for its own summary)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _to_stderr
        yield


def run(capsys, config: Path, *args) -> tuple[int, list[str], Path]:
    """``contagion run config --out <folder> args``: exit status, stderr lines, run folder."""
    out = config.parent / "out"
    with warnings_on_stderr():
        code = main(["run", str(config), "--out", str(out), *map(str, args)])
    return code, capsys.readouterr().err.splitlines(), out


def one_error(capsys, config: Path, *args) -> str:
    code, err, out = run(capsys, config, *args)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("contagion: error: ")
    assert not (out / "summary.json").exists()
    return err[0]


def one_warning(capsys, config: Path, kind: str, *args) -> str:
    """The one warning of a run that succeeds; it is also summary.json's only warning."""
    code, err, out = run(capsys, config, *args)
    assert code == 0, err
    assert len(err) == 1, err
    assert err[0].startswith("contagion: warning: ")
    message = err[0].removeprefix("contagion: warning: ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [message]
    assert summary["warning_counts"] == {kind: 1}
    return message


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_a_shock_after_the_last_step(capsys, tmp_path):
    data = small_config(steps=12)
    data["shocks"].append({"step": 13, "asset": "ETH", "return": -0.05})
    line = one_error(capsys, write_config(tmp_path, data))
    assert line == (
        "contagion: error: shocks[1].step: 13 is after the last step (the run has steps = 12): "
        "the shock would never happen"
    )
    # a shorter run by --set: the baseline's shock is at step 500
    line = one_error(capsys, CONFIGS / "baseline.toml", "--set", "steps=200")
    assert "shocks[0].step: 500 is after the last step (the run has steps = 200)" in line


def test_a_shock_at_the_last_step_is_fine():
    data = small_config(steps=10)  # its shock is at step 10
    m = ContagionModel(build_config(data), create_agents=False).run()
    assert m.steps == 10 and m.warnings == []


def population_config(tmp_path, text: str) -> Path:
    (tmp_path / "accounts.csv").write_text(text)
    return write_config(tmp_path, small_config(steps=12, traders={"population": "accounts.csv"}))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEADER + "\n", "accounts.csv: no rows (a header only)"),
        (
            "trader_id, collateral, asset, quantity, entry_price\n1,100,BTC,1,5\n",
            "accounts.csv: stray spaces in the column names (found 'trader_id', ' collateral', "
            "' asset', ' quantity', ' entry_price')",
        ),
        (f"{HEADER}\n0xab,100,BTC,1,5\n,100,BTC,1,5\n", "accounts.csv: row 3: trader_id is empty"),
        (
            f"{HEADER}\n0xab,100,BTC,1,5\n0xab,300,ETH,1,5\n",
            "accounts.csv: trader '0xab': collateral differs between its rows (100 and 300); "
            "the rows of one account share its id and collateral, and two accounts cannot share "
            "an id",
        ),
        (
            f"{HEADER}\n0xab,100,BTC,1,5\nstep:2,100,BTC,1,5\n",
            "accounts.csv: row 3: trader_id 'step:2' would collide with the contagion graph's "
            "node names (step:<t>, others:<t>:<r>)",
        ),
    ],
)
def test_bad_population_files(capsys, tmp_path, text, words):
    assert words in one_error(capsys, population_config(tmp_path, text))


# --------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------


def test_a_shock_return_in_percent(capsys, tmp_path):
    data = small_config(steps=10, traders={"count": 100})
    data["shocks"][0]["return"] = 10
    message = one_warning(capsys, write_config(tmp_path, data), "shock_return")
    assert message == "shocks[0].return = 10 is a +1000% move; returns are fractions (0.1 = 10%)"


@pytest.mark.parametrize(
    ("key", "value"),
    [("market.volatility", "8 is 800% a year"), ("assets.BTC.volatility", "30 is 3000% a year")],
)
def test_a_volatility_in_percent(capsys, tmp_path, key, value):
    data = small_config(steps=10, traders={"count": 100})
    if key == "market.volatility":
        data["market"]["volatility"] = 8
    else:
        data["assets"][0]["volatility"] = 30
    message = one_warning(capsys, write_config(tmp_path, data), "volatility")
    assert message == f"{key} = {value}; volatility is an annual fraction (0.6 = 60%)"


def test_a_volatility_of_five_is_not_a_slip(capsys, tmp_path):
    data = small_config(steps=10, traders={"count": 100}, market={"volatility": 5.0})
    code, err, out = run(capsys, write_config(tmp_path, data))
    assert code == 0 and err == []
    assert json.loads((out / "summary.json").read_text())["warnings"] == []


def test_generated_leverage_above_the_maximum(capsys, tmp_path):
    data = small_config(steps=10, traders={"count": 200, "leverage": 100.0})  # BTC 50x, ETH 25x
    message = one_warning(capsys, write_config(tmp_path, data), "leverage_cap")
    # capped accounts: leverage exactly the smallest maximum of the assets they hold
    accounts = pd.read_parquet(tmp_path / "out" / "accounts.parquet")
    held = accounts[["initial_quantity_BTC", "initial_quantity_ETH"]].to_numpy() != 0
    cap = np.where(held, [50.0, 25.0], np.inf).min(axis=1)
    capped = int(np.isclose(accounts["initial_leverage"], cap, rtol=1e-9, atol=0).sum())
    assert 0 < capped < 200
    assert message == (
        "traders.leverage = 100 is above assets.BTC.max_leverage = 50, "
        f"assets.ETH.max_leverage = 25: {capped} of 200 generated accounts were capped at the "
        "maximum leverage of the assets they hold"
    )


def test_file_accounts_above_the_maximum(capsys, tmp_path):
    # BTC allows 50x, ETH 25x. Leverage: gross notional over equity at the initial prices.
    text = (
        f"{HEADER}\n"
        "0xa,1000,BTC,0.5,60000\n"  # 30000 / 1000 = 30x: fine
        "0xb,1000,BTC,1,60000\n"  # 60x: above 50x
        "0xc,1000,ETH,10,3000\n"  # 30x: above ETH's 25x
        "0xd,1000,BTC,0.1,60000\n"
        "0xd,1000,ETH,8,3000\n"  # (6000 + 24000) / 1000 = 30x, above ETH's 25x
    )
    message = one_warning(capsys, population_config(tmp_path, text), "population_leverage")
    path = tmp_path / "accounts.csv"
    assert message == (
        f"{path}: 3 of 4 accounts start above the maximum leverage of an asset they hold "
        "(e.g. trader '0xb': 60x, assets.BTC.max_leverage = 50)"
    )


@pytest.mark.slow
def test_a_real_process_prints_the_one_warning_line(tmp_path):
    data = small_config(steps=10, traders={"count": 100})
    data["shocks"][0]["return"] = 10
    config = write_config(tmp_path, data)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", str(config), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "contagion: warning: shocks[0].return = 10 is a +1000% move; returns are fractions "
        "(0.1 = 10%)\n"
    )


# --------------------------------------------------------------------------------------------
# The shipped configs and the README's example stay quiet
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_build_without_warnings(path):
    m = ContagionModel(load_config(path), create_agents=False)
    assert m.warnings == [] and m.warning_counts == {}


def test_the_readme_example_reaches_the_shock():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("m = ContagionModel(load_config("))
    overrides = ast.literal_eval(line[line.index("overrides=") + len("overrides=") : -2])
    cfg = load_config(CONFIGS / "baseline.toml", overrides=overrides)
    assert cfg.steps >= max(s.step for s in cfg.shocks)
    m = ContagionModel(cfg, create_agents=False)
    assert m.warnings == []
