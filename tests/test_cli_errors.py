"""Bad input on the command line: exit status 2 and one line naming the key or file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tomli_w

from experiments.cli import main
from tests.helpers import small_config


@pytest.fixture
def config_file(tmp_path):
    def write(data=None, name="c.toml"):
        path = tmp_path / name
        path.write_text(tomli_w.dumps(small_config(steps=2, shocks=[]) if data is None else data))
        return path

    return write


def run_main(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("contagion: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_config_file(capsys, tmp_path):
    code, err = run_main(capsys, "run", tmp_path / "nope.toml")
    assert_one_line_error(code, err, "nope.toml", "file not found")


def test_invalid_toml(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("steps = [1,\n")
    code, err = run_main(capsys, "run", path)
    assert_one_line_error(code, err, "bad.toml", "invalid TOML")


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"stpes": 3}, ["stpes: unknown key", "did you mean 'steps'"]),
        ({"market": {"volatility": -1}}, ["market.volatility: must be >= 0"]),
        (
            {"market": {"correlation": [[1.0, 0.2], [0.3, 1.0]]}},
            ["market.correlation", "symmetric"],
        ),
        (
            {"market": {"correlation": [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]}},
            ["market.correlation", "2x2"],
        ),
        ({"shocks": [{"step": 1, "asset": "DOGE", "return": -0.1}]}, ["shocks[0].asset", "DOGE"]),
        ({"margin": {"mode": "crss"}}, ["margin.mode", "did you mean 'cross'"]),
        ({"traders": {"population": "nowhere.csv"}}, ["nowhere.csv", "file not found"]),
        ({"liquidity": {"model": "makers"}}, ["liquidity.model", "did you mean 'market_makers'"]),
        ({"liquidity": {"capital": -1.0}}, ["liquidity.capital: must be > 0, got -1"]),
        ({"liquidity": {"inventory_limit": -5}}, ["liquidity.inventory_limit: must be > 0"]),
        ({"liquidity": {"makers": -2}}, ["liquidity.makers: must be >= 0, got -2"]),
        ({"liquidity": {"margin_pull": [0.9, 0.5]}}, ["liquidity.margin_pull", "start < end"]),
        (
            {"liquidity": {"model": "market_makers"}, "market": {"depth_stress": 0.1}},
            ["market.depth_stress", "market makers"],
        ),
        (
            {"liquidity": {"model": "market_makers", "makers": 0, "backstop": 0.0}},
            ["liquidity.backstop", "empty"],
        ),
    ],
)
def test_bad_config_values(capsys, config_file, patch, words):
    data = small_config(steps=2, shocks=[])
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    code, err = run_main(capsys, "run", config_file(data))
    assert_one_line_error(code, err, *words)


def test_bad_population_file(capsys, tmp_path, config_file):
    (tmp_path / "accounts.csv").write_text(
        "trader_id,collateral,asset,quantity,entry_price\n1,100,BTC,1,60000\n1,200,ETH,1,3000\n"
    )
    data = small_config(steps=2, shocks=[], traders={"population": "accounts.csv"})
    code, err = run_main(capsys, "run", config_file(data))
    assert_one_line_error(code, err, "accounts.csv", "trader 1", "collateral differs")


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["novalue"], ["--set novalue: expected KEY=VALUE"]),
        (["=3"], ["--set =3: empty key"]),
        (["market.volatilty=1"], ["market.volatilty: unknown key", "'volatility'"]),
        (["steps=many"], ["steps: expected a whole number, got 'many'"]),
        (["steps=1e400"], ["steps"]),
        (["market.volatility=nan"], ["market.volatility: must be finite"]),
        (["assets.SOL.depth=1e6"], ["assets.SOL: no such entry", "BTC, ETH"]),
        (["margin.adl=maybe"], ["margin.adl: expected true or false"]),
    ],
)
def test_bad_set_values(capsys, config_file, sets, words):
    args = ["run", config_file()]
    for s in sets:
        args += ["--set", s]
    code, err = run_main(capsys, *args)
    assert_one_line_error(code, err, *words)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["required"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["run"], ["the following arguments are required: config"]),
        (["run", "{config}", "--seed", "abc"], ["--seed", "invalid int value"]),
        (["run", "{config}", "--seed", "-1"], ["seed: must be >= 0"]),
        (["run", "{config}", "--out", "{file}"], ["exists and is not a folder"]),
        (["run", "{config}", "--out", "{file}/sub"], ["cannot create the run folder"]),
    ],
)
def test_bad_arguments(capsys, tmp_path, config_file, args, words):
    afile = tmp_path / "afile"
    afile.write_text("x")
    path = config_file()
    args = [a.format(config=path, file=afile) for a in args]
    code, err = run_main(capsys, *args)
    assert_one_line_error(code, err, *words)


def test_good_set_values_run(capsys, tmp_path, config_file):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(config_file()),
            "--out",
            str(out),
            "--set",
            "market.volatility=.5",
            "--set",
            "steps=3",
            "--set",
            "name=2024",
            "--set",
            "assets.ETH.depth=5e5",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["name"] == "2024"


def test_no_traceback_from_a_real_process(tmp_path):
    """The installed entry point, not just main(): nothing but the one line on stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[market]\nvolatility = 'high'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", str(bad), "--set", "steps=2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "contagion: error: market.volatility: expected a number, got 'high'\n"
    assert proc.stdout == ""
