"""The demo: its narration is checked against the run folders it writes, and its figures are
real images (the tree layout is checked by hand in test_cascade_drawing.py)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cascade_drawing import holding_labels
from experiments.cli import main
from experiments.demo import DEMO_CONFIG, run_demo_command
from experiments.narration import CascadeNarrator
from model import ContagionModel, load_config

ROUND = re.compile(
    r"  round (\d+): ([\d,]+) accounts? liquidated(.*)\n"
    r" +(.*) \(closed .*\)\n"
    r" +prices after their orders: (.*)\n"
    r" +insurance fund \$([\d.]+)(k|M)? \(\+\$([\d.,]+)(k|M)? fees"
)


def _money(number: str, unit: str | None) -> float:
    return float(number.replace(",", "")) * {"k": 1e3, "M": 1e6, None: 1.0, "": 1.0}[unit]


def _half_digit(unit: str | None) -> float:
    """Rounding error of a printed amount: $1,234 / $1.2k / $1.23M."""
    return {"k": 50.0, "M": 5000.0, None: 0.5, "": 0.5}[unit] + 1e-9


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run ``contagion demo`` once; keep what it printed and its folder (benchmarks/bench.py's
    ``teaching`` section measures how long it takes)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_demo_command(out=out)
    return {"code": code, "text": buf.getvalue(), "out": out}


def _sections(text: str) -> tuple[str, str]:
    cross, rest = text.split("Now the same accounts and the same shock under isolated margin")
    iso = rest.split("Cross vs isolated")[0]
    return cross, iso


def _open_prices(folder, step):
    """Prices when ``step``'s liquidation rounds begin, from market.parquet alone: the step's
    fundamental times the previous step's impact after one step of decay."""
    cfg = load_config(DEMO_CONFIG)
    mk = pd.read_parquet(folder / "market.parquet")
    out = {}
    for a in cfg.assets:
        rows = mk[mk["asset"] == a.symbol].set_index("step")
        out[a.symbol] = rows.loc[step, "fundamental"] * np.exp(
            (1 - cfg.market.resilience) * rows.loc[step - 1, "impact"]
        )
    return out


@pytest.mark.parametrize("which", ["cross", "isolated"])
def test_narration_matches_the_run_folder(demo, which):
    assert demo["code"] == 0
    cross_text, iso_text = _sections(demo["text"])
    text = cross_text if which == "cross" else iso_text
    folder = demo["out"] if which == "cross" else demo["out"] / "isolated"
    cfg = load_config(DEMO_CONFIG)
    shock = cfg.shocks[0]
    liq = pd.read_parquet(folder / "liquidations.parquet")
    steps = pd.read_parquet(folder / "steps.parquet")
    assert set(liq["step"]) == {shock.step}, "the demo's only cascade is the shock's"

    told = ROUND.findall(text)
    rounds = sorted(liq["round"].unique())
    assert [int(r[0]) for r in told] == rounds
    assert len(rounds) >= 3, "the demo should show a cascade of several rounds"

    price = _open_prices(folder, shock.step)
    earlier = set()
    for rnd, accounts, how, traded, moves, fund, fund_unit, fees, fees_unit in told:
        r = liq[liq["round"] == int(rnd)]
        # accounts liquidated in the round, and those of them liquidated in an earlier round
        assert int(accounts.replace(",", "")) == r["trader_id"].nunique()
        again = set(r["trader_id"]) & earlier
        m = re.match(r", ([\d,]+) of them again", how)
        assert (int(m.group(1).replace(",", "")) if m else 0) == len(again)
        earlier |= set(r["trader_id"])
        # positions: a fill of kind full closed all of one, a partial fill cut one back
        assert _count(how, "closed out") == int((r["kind"] == "full").sum())
        assert _count(how, "cut back") == int((r["kind"] == "partial").sum())
        for sym in cfg.symbols:
            a = r[r["asset"] == sym]
            # what they sold (closing longs): the positive closed quantities
            sold = a.loc[a["quantity"] > 0, "quantity"].sum()
            bought = -a.loc[a["quantity"] < 0, "quantity"].sum()
            for verb, qty in (("sold", sold), ("bought back", bought)):
                clause = re.search(rf"{verb} ((?:[\d.,]+ \w+(?: and )?)+)", traded)
                m = re.search(rf"([\d.,]+) {sym}\b", clause.group(1)) if clause else None
                if qty > 0:
                    assert m, f"round {rnd}: {sym} {verb} not told"
                    told_qty = float(m.group(1).replace(",", ""))
                    assert told_qty == pytest.approx(qty, rel=5e-3, abs=6e-3)
                else:
                    assert not m
            # the price after the round: every fill of the round is at it
            after = a["price"].iloc[0] if len(a) else price[sym]
            assert np.allclose(a["price"], after)
            m = re.search(rf"{sym} ([+-][\d.]+)% to \$([\d,.]+)", moves)
            assert float(m.group(2).replace(",", "")) == pytest.approx(
                after, abs=0.51
            )  # whole dollars
            assert float(m.group(1)) == pytest.approx(100 * (after / price[sym] - 1), abs=0.051)
            price[sym] = after
        assert _money(fees, fees_unit) == pytest.approx(r["fee"].sum(), abs=_half_digit(fees_unit))
        last_fund, last_unit = _money(fund, fund_unit), fund_unit
    # the fund after the last round is the fund at the end of the shock step
    fund_end = steps.set_index("step").loc[shock.step, "insurance_fund"]
    assert last_fund == pytest.approx(fund_end, abs=_half_digit(last_unit))
    summary = json.loads((folder / "summary.json").read_text())
    m = re.search(
        rf"step {shock.step} in all: ([\d,]+) accounts liquidated ([\d,]+) times"
        r"(?:, ([\d,]+) of them in more than one round)?;",
        text,
    )
    assert int(m.group(1).replace(",", "")) == summary["accounts_liquidated"]
    rounds_per_account = liq.groupby("trader_id")["round"].nunique()
    assert int(m.group(2).replace(",", "")) == rounds_per_account.sum()
    assert int((m.group(3) or "0").replace(",", "")) == (rounds_per_account > 1).sum()


def _count(text: str, what: str) -> int:
    """``12`` from "... 12 positions closed out" or "12 cut back" (0 when not told)."""
    m = re.search(rf"([\d,]+) (?:positions? )?{what}", text)
    return int(m.group(1).replace(",", "")) if m else 0


def _step_move(folder, step, sym):
    mk = pd.read_parquet(folder / "market.parquet")
    p = mk[mk["asset"] == sym].set_index("step")["price"]
    return p[step] / p[step - 1] - 1


def test_comparison_and_lesson_follow_from_the_two_runs(demo):
    cfg = load_config(DEMO_CONFIG)
    shock = cfg.shocks[0]
    other = next(s for s in cfg.symbols if s != shock.asset)
    text = demo["text"]
    table = text.split("Cross vs isolated")[1].split("The lesson:")[0]
    cross_sum = json.loads((demo["out"] / "summary.json").read_text())
    iso_sum = json.loads((demo["out"] / "isolated" / "summary.json").read_text())
    m = re.search(r"accounts liquidated +([\d,]+) +([\d,]+)", table)
    assert int(m.group(1).replace(",", "")) == cross_sum["accounts_liquidated"]
    assert int(m.group(2).replace(",", "")) == iso_sum["accounts_liquidated"]
    tables = {
        "cross": pd.read_parquet(demo["out"] / "liquidations.parquet"),
        "isolated": pd.read_parquet(demo["out"] / "isolated" / "liquidations.parquet"),
    }
    m = re.search(r"liquidations \(an account in one round\) +([\d,]+) +([\d,]+)", table)
    for got, liq in zip(m.groups(), tables.values(), strict=True):
        assert int(got.replace(",", "")) == len(liq.drop_duplicates(["round", "trader_id"]))
    for sym in cfg.symbols:
        m = re.search(rf"{sym} positions liquidated +([\d,]+) +([\d,]+)", table)
        for got, liq in zip(m.groups(), tables.values(), strict=True):
            assert int(got.replace(",", "")) == liq.loc[liq["asset"] == sym, "trader_id"].nunique()
    for sym in cfg.symbols:
        m = re.search(rf"{sym} over step {shock.step} \(fundamental [^)]*\) +(\S+)% +(\S+)%", table)
        assert float(m.group(1)) == pytest.approx(
            100 * _step_move(demo["out"], shock.step, sym), abs=0.051
        )
        assert float(m.group(2)) == pytest.approx(
            100 * _step_move(demo["out"] / "isolated", shock.step, sym), abs=0.051
        )

    # The lesson's claims, checked on the tables: isolated margin keeps the other asset's
    # price at its fundamental (nobody sells it by force), cross margin drags it down.
    iso_liq = pd.read_parquet(demo["out"] / "isolated" / "liquidations.parquet")
    cross_liq = pd.read_parquet(demo["out"] / "liquidations.parquet")
    assert (iso_liq["asset"] == other).sum() == 0
    assert (cross_liq["asset"] == other).sum() > 0
    mk = pd.read_parquet(demo["out"] / "isolated" / "market.parquet")
    eth = mk[mk["asset"] == other].set_index("step")
    fundamental_move = eth.loc[shock.step, "fundamental"] / eth.loc[shock.step - 1, "fundamental"]
    assert _step_move(demo["out"], shock.step, other) < fundamental_move - 1 - 0.01
    lesson = text.split("The lesson:")[1].split("run folder:")[0]
    assert 2 <= lesson.count(". ") + 1 <= 4
    assert "Under cross margin" in lesson and "Under isolated margin" in lesson
    assert f"{cross_sum['accounts_liquidated']:,} vs {iso_sum['accounts_liquidated']:,}" in lesson
    # cause before effect: the forced sales of the other asset are told before its move
    sales = lesson.index(f"{other} positions were closed out or cut back")
    assert sales < lesson.index(f"moved {other} ")


def test_demo_writes_folders_figures_and_narration(demo):
    out = demo["out"]
    for folder in (out, out / "isolated"):
        for name in ("market.parquet", "steps.parquet", "liquidations.parquet", "summary.json"):
            assert (folder / name).is_file()
        assert not (folder / ".incomplete").exists()
    assert (out / "narration.txt").read_text() == demo["text"]
    from matplotlib.image import imread

    for name in ("prices.png", "cascade_tree.png", "cross_vs_isolated.png", "depth.png"):
        img = imread(out / name)
        assert img.shape[0] > 400 and img.shape[1] > 800
        grey = img[..., :3].mean(axis=2)
        assert grey.std() > 0.05, f"{name} looks blank"
        assert (grey < 0.5).mean() > 0.005, f"{name} has almost no ink"


def test_narrator_keeps_the_contagion_graph_and_sees_every_round():
    cfg = load_config(DEMO_CONFIG)
    plain = ContagionModel(cfg).run()
    told = []
    m = ContagionModel(cfg)
    narrator = CascadeNarrator(m, told.append)
    m.run()
    a, b = plain.recorder.edges(), m.recorder.edges()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    fills = m.engine.fills.columns()
    pairs = sorted(set(zip(fills["step"].tolist(), fills["round"].tolist(), strict=True)))
    assert [(s.step, s.round) for s in narrator.stories] == pairs
    for s in narrator.stories:
        sel = (fills["step"] == s.step) & (fills["round"] == s.round)
        rows_ids = np.unique(fills["trader_id"][sel])
        np.testing.assert_array_equal(np.sort(m.book.ids[s.rows]), rows_ids)
        q = fills["quantity"][sel]
        for j in range(len(m.symbols)):
            on = fills["asset"][sel] == j
            assert s.sold[j] == pytest.approx(q[on & (q > 0)].sum())
            assert s.bought[j] == pytest.approx(-q[on & (q < 0)].sum())
    assert any("round 1:" in t for t in told)


def test_bad_out_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0]
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]


def test_holding_labels():
    qty = np.array([[1.0, 0.0], [0.0, -2.0], [3.0, 4.0], [0.0, 0.0]])
    labels = holding_labels(qty, ["BTC", "ETH"])
    assert labels.tolist() == ["BTC only", "ETH only", "BTC+ETH", "none"]


def test_set_changes_the_market_of_both_runs(demo, tmp_path):
    """Four times the depth: the same shock moves BTC less, under both margin modes."""
    out = tmp_path / "deep"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            [
                "demo",
                "--out",
                str(out),
                "--set",
                "assets.BTC.depth=4e6",
                "--set",
                "assets.ETH.depth=2e6",
            ]
        )
    assert code == 0
    step = load_config(DEMO_CONFIG).shocks[0].step
    for sub in (".", "isolated"):
        cfg = load_config(out / sub / "config.toml")
        assert [a.depth for a in cfg.assets] == [4e6, 2e6]
        deep = _step_move(out / sub, step, "BTC")
        base = _step_move(demo["out"] / sub, step, "BTC")
        fundamental = load_config(DEMO_CONFIG).shocks[0].return_
        assert fundamental > deep > base, (deep, base)  # a smaller fall, but still amplified
    assert "assets: BTC $60,000 (1% depth $4.00M)" in buf.getvalue()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "margin.mode=isolated"], "margin.mode"),
        (["--set", "assets.BTC.depth=-1"], "depth"),
        (["--set", "nonsense"], "nonsense"),
    ],
)
def test_bad_set_is_one_line_exit_2(tmp_path, capsys, args, named):
    assert main(["demo", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


@pytest.mark.slow
def test_demo_runs_without_the_optional_packages(tmp_path):
    """The README's first command installs no extra: the demo must not import any of them."""
    import subprocess
    import sys

    optional = ["solara", "dask", "distributed", "SALib", "arch", "pytest", "hypothesis"]
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({optional!r}))  # importing them fails\n"
        "from experiments.cli import main\n"
        f"sys.exit(main(['demo', '--out', {str(tmp_path / 'demo')!r}]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "The lesson:" in done.stdout
