"""Validation checks: their kernels against hand-computed values, and the quick variants.

The quick variants run once (module fixture) through ``contagion validate --quick``; each
check's test then asserts on its row of results.json. The kernels the checks compare the engine
with (fixed point, GLT closed form, Caccioli's thresholds, the TFG market, the return
statistics) are tested here against values computed by hand or in closed form.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main
from experiments.validation.caccioli import (
    ALPHA,
    branching_ratio,
    critical_leverage,
    reference_cascade,
)
from experiments.validation.fixed_point import (
    expected_cascade,
    liquidation_prices,
    price_map_rounds,
)
from experiments.validation.greenwood import glt_closed_form
from experiments.validation.stylized_facts import (
    BANDS,
    acf,
    excess_kurtosis,
    hill_tail_index,
    load_returns,
    reference_returns,
    return_stats,
    skewness,
)
from experiments.validation.thurner import N_SHARES, RHO, SIGMA, simulate_tfg
from model.config import ConfigError

# --------------------------------------------------------------------------------------------
# The quick variants, through the command line
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    code = main(["validate", "--quick", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    return {
        "out": out,
        "code": code,
        "results": results,
        "checks": {c["key"]: c for c in results["checks"]},
    }


@pytest.mark.slow
def test_validate_writes_one_row_per_check_and_the_figures(quick_run):
    out, checks = quick_run["out"], quick_run["checks"]
    assert set(checks) == {
        "fixed_point",
        "greenwood",
        "caccioli",
        "thurner",
        "thurner_engine",
        "stylized_facts",
        "endogenous",
        "endogenous_v2",
        "endogenous_v3",
        "endogenous_v4",
    }
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.endswith("| PASS |")]
    rows += [line for line in report.splitlines() if line.endswith("| **FAIL** |")]
    assert len(rows) == 10
    for c in checks.values():
        for fig in c["figures"]:
            assert (out / fig).stat().st_size > 10_000  # a real PNG, not an empty file
            assert f"]({fig})" in report
    # exit status: 0 only when every check passes
    assert quick_run["code"] == (0 if quick_run["results"]["passed"] else 1)
    assert quick_run["results"]["passed"] == all(c["passed"] for c in checks.values())


@pytest.mark.slow
def test_fixed_point_check_passes(quick_run):
    c = quick_run["checks"]["fixed_point"]
    assert c["passed"], c["measured"]
    table = pd.DataFrame(c["table"])
    assert set(table["beta"]) == {1.0, 0.5}
    assert (table["same set"]).all()
    assert (table["rel. error"] <= 1e-12).all()
    assert (table["rounds (engine)"] >= 3).all()  # real multi-round cascades
    # cascades of different sizes, not all-or-nothing
    assert table["liquidated (fixed point)"].min() < table["liquidated (fixed point)"].max() / 5


@pytest.mark.slow
def test_greenwood_check_passes(quick_run):
    c = quick_run["checks"]["greenwood"]
    assert c["passed"], c["measured"]
    table = pd.DataFrame(c["table"])
    assert (table["AV rel. error"] <= 1e-9).all()
    assert (table["AV (closed form)"] > 1e-3).all()  # the impact is not negligible
    assert (table["liquidations"] == 0).all()


@pytest.mark.slow
def test_caccioli_check_passes(quick_run):
    c = quick_run["checks"]["caccioli"]
    assert c["passed"], c["measured"]
    assert "in 180/180 runs" in c["measured"]  # engine = direct cascade in every run
    table = pd.DataFrame(c["table"]).set_index("leverage")
    assert (table.loc[[3.0, 4.0]] == 0).all().all()  # below lambda_c = 4.88: never
    row = table.loc[20.0].to_numpy()
    assert row.max() >= 0.5 and row[-1] <= row.max() / 2  # the window closes at high mu_b


@pytest.mark.slow
def test_thurner_check_passes(quick_run):
    c = quick_run["checks"]["thurner"]
    assert c["passed"], c["measured"]


@pytest.mark.slow
def test_stylized_facts_verdicts_follow_the_bands(quick_run):
    """The simulated baseline may or may not be realistic; the verdict must match the bands."""
    c = quick_run["checks"]["stylized_facts"]
    table = pd.DataFrame(c["table"]).set_index("index")
    sims = [col for col in table.columns if col not in ("band",) and "S&P" not in col]
    assert sims, "no simulated column"
    ok = all(test(float(table.loc[k, s])) for s in sims for k, (test, _) in BANDS.items())
    assert c["passed"] == ok
    assert "S&P 500 1999-2018 (arch)" in table.columns  # arch is a dev extra
    if not c["passed"]:
        # a FAIL names each failing statistic per asset, and says why
        for s in sims:
            failing = [k for k, (test, _) in BANDS.items() if not test(float(table.loc[k, s]))]
            if failing:
                assert f"{s}: {', '.join(failing)}" in c["notes"]
        assert "Why:" in c["notes"] or "trading rules of this config" in c["notes"]


def test_validate_bad_out_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["validate", "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "file.txt" in err and "not a folder" in err


# --------------------------------------------------------------------------------------------
# Fixed point: the sorted scan and the round map on a case worked by hand
# --------------------------------------------------------------------------------------------


def test_liquidation_price_is_where_equity_meets_maintenance():
    w, q, e, r = 100.0, 10.0, 50.0, 0.02
    lp = liquidation_prices(w, q, e, r)
    assert lp == pytest.approx((500.0 - 100.0) / (10.0 * 0.98))
    assert w + q * (lp - e) == pytest.approx(r * q * lp)


def test_fixed_point_by_hand():
    lp = np.array([99.0, 97.0, 90.0])
    q = np.ones(3)
    # d = 1, beta 1: after the first sale P = 98 e^-0.01 = 97.02 >= 97: one account goes
    liq, price = expected_cascade(lp, q, 98.0, 1.0, 1.0)
    assert liq.tolist() == [True, False, False]
    assert price == pytest.approx(98.0 * math.exp(-0.01))
    # d = 0.25, beta 1: 98 e^-0.04 = 94.16 < 97, then 98 e^-0.08 = 90.47 >= 90: two go
    liq, price = expected_cascade(lp, q, 98.0, 0.25, 1.0)
    assert liq.tolist() == [True, True, False]
    assert price == pytest.approx(98.0 * math.exp(-0.08))
    rounds = price_map_rounds(lp, q, 98.0, 0.25, 1.0)
    np.testing.assert_allclose(rounds, [98.0 * math.exp(-0.04), 98.0 * math.exp(-0.08)])
    # beta 0.5: 98 e^(-0.01 sqrt 8) = 95.27 after two accounts
    liq, price = expected_cascade(lp, q, 98.0, 0.25, 0.5)
    assert liq.tolist() == [True, True, False]
    assert price == pytest.approx(98.0 * math.exp(-0.01 * math.sqrt(8.0)))
    # nobody under at the start: no rounds
    assert price_map_rounds(lp, q, 100.0, 1.0, 1.0).size == 0


# --------------------------------------------------------------------------------------------
# Greenwood-Landier-Thesmar: the closed form on a two-bank example
# --------------------------------------------------------------------------------------------


def test_glt_closed_form_by_hand():
    a = [100.0, 50.0]
    b = [9.0, 4.0]
    m = [[1.0, 0.0], [0.5, 0.5]]
    f = [-0.1, 0.0]
    lam = [0.001, 0.002]
    # M F = (-0.1, -0.05); B A M F = (-90, -10); M' B A M F = (-95, -5);
    # L M' B A M F = (-0.095, -0.01); A M L ... = (-9.5, 50 x -0.0525 = -2.625)
    second, av = glt_closed_form(a, b, m, f, lam)
    np.testing.assert_allclose(second, [-9.5, -2.625])
    assert av == pytest.approx(12.125 / 20.0)  # equity 100/10 + 50/5


# --------------------------------------------------------------------------------------------
# Caccioli et al.: thresholds
# --------------------------------------------------------------------------------------------


def test_caccioli_critical_leverage():
    # exp(-alpha x) = 0.9 ** (10 x): selling 10% moves the price 10%
    assert math.exp(-ALPHA * 0.1) == pytest.approx(0.9)
    assert critical_leverage() == pytest.approx(2.0 / (1.0 - 0.9**5))
    assert 4.88 < critical_leverage() < 4.89


def test_reference_cascade_by_hand():
    """Two holders of one asset, one share each; holder 0 has failed and sells its share:
    x = 1/2, the price falls to 0.9 ** 5 and holder 1 loses 1 - 0.9 ** 5 = 0.40951."""
    qty = np.array([[1.0], [1.0]])
    assert reference_cascade(qty, np.array([-1.0, 0.40])).tolist() == [True, True]
    assert reference_cascade(qty, np.array([-1.0, 0.41])).tolist() == [True, False]
    # a chain: holder 2 shares asset 1 with holder 1 only, and fails once holder 1 sells
    qty = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # asset 0: x = 1 / 1.5, loss of 1 = 0.5 (1 - 0.9 ** (20/3)) = 0.2523 > 0.25: fails;
    # asset 1: x = 0.5 / 1.5, loss of 2 = 1 - 0.9 ** (10/3) = 0.2962
    assert reference_cascade(qty, np.array([-1.0, 0.25, 0.29])).tolist() == [True, True, True]
    assert reference_cascade(qty, np.array([-1.0, 0.25, 0.30])).tolist() == [True, True, False]
    assert reference_cascade(qty, np.array([-1.0, 0.26, 0.0])).tolist() == [True, False, False]


def test_branching_ratio_limits():
    lam_c = critical_leverage()
    # below lambda_c a single hit never fails a holder with 2 or more assets
    assert branching_ratio(lam_c * 0.99, 3.0, 3.0) == 0.0
    assert branching_ratio(lam_c * 1.01, 3.0, 3.0) > 0.0
    # with unbounded leverage every single hit fails: R = E~[k_a - 1] E~[k_b - 1] = mu_a mu_b
    assert branching_ratio(1e12, 2.0, 3.0) == pytest.approx(6.0, rel=1e-6)
    # R grows with leverage
    rs = [branching_ratio(x, 4.0, 4.0) for x in (6.0, 10.0, 20.0, 40.0)]
    assert rs == sorted(rs)


# --------------------------------------------------------------------------------------------
# Thurner et al.: the market clears
# --------------------------------------------------------------------------------------------


def test_tfg_without_leverage_room_the_price_is_the_noise_traders():
    """Cap 0: funds never hold the asset, so p = xi / N with xi the AR(1) cash demand."""
    steps = 400
    prices = simulate_tfg(0.0, steps, np.random.default_rng(3))
    chi = np.random.default_rng(3).standard_normal(steps)
    log_xi = math.log(N_SHARES)
    expected = [1.0]
    for x in chi:
        log_xi = RHO * log_xi + SIGMA * x + (1 - RHO) * math.log(N_SHARES)
        expected.append(math.exp(log_xi) / N_SHARES)
    np.testing.assert_allclose(prices, expected, rtol=1e-9)


def test_tfg_funds_only_add_demand():
    """Funds' holdings are never negative, so the clearing price is never below xi / N."""
    steps = 3000
    prices = simulate_tfg(10.0, steps, np.random.default_rng(4))
    noise_only = simulate_tfg(0.0, steps, np.random.default_rng(4))
    assert (prices >= noise_only * (1 - 1e-9)).all()
    assert (prices > noise_only * 1.01).mean() > 0.1  # funds do buy below the value


# --------------------------------------------------------------------------------------------
# Return statistics
# --------------------------------------------------------------------------------------------


def test_moments_against_closed_forms():
    rng = np.random.default_rng(0)
    n = 400_000
    assert excess_kurtosis(rng.standard_normal(n)) == pytest.approx(0.0, abs=0.05)
    assert excess_kurtosis(rng.laplace(size=n)) == pytest.approx(3.0, abs=0.15)
    assert skewness(rng.exponential(size=n)) == pytest.approx(2.0, abs=0.08)
    assert skewness(rng.standard_normal(n)) == pytest.approx(0.0, abs=0.02)


def test_hill_index_of_a_pareto_tail():
    rng = np.random.default_rng(1)
    x = (1.0 - rng.random(200_000)) ** (-1.0 / 3.0) * rng.choice([-1.0, 1.0], 200_000)
    assert hill_tail_index(x) == pytest.approx(3.0, abs=0.1)


def test_acf_of_an_ar1():
    rng = np.random.default_rng(2)
    e = rng.standard_normal(200_000)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, e.size):
        x[t] = 0.6 * x[t - 1] + e[t]
    assert acf(x, 1) == pytest.approx(0.6, abs=0.01)
    assert acf(x, 2) == pytest.approx(0.36, abs=0.01)


def test_sp500_reference_matches_published_figures():
    """Values from docs/reference/literature.md (S&P 500 daily log returns 1999-2018)."""
    s = return_stats(reference_returns())
    assert s["n"] == 5030
    assert s["sd"] == pytest.approx(0.0120, abs=5e-5)
    assert s["excess kurtosis"] == pytest.approx(8.17, abs=0.01)
    assert s["Hill index (top 5%)"] == pytest.approx(2.93, abs=0.01)
    assert s["ACF(r, 1)"] == pytest.approx(-0.070, abs=0.001)
    assert s["ACF(|r|, 1)"] == pytest.approx(0.244, abs=0.001)
    assert s["ACF(|r|, 50)"] == pytest.approx(0.168, abs=0.001)
    assert all(test(s[k]) for k, (test, _) in BANDS.items())


def test_load_returns_from_prices_and_from_returns(tmp_path):
    prices = np.exp(np.cumsum(np.r_[0.0, np.random.default_rng(5).normal(0, 0.01, 300)])) * 100
    f = tmp_path / "btc.csv"
    pd.DataFrame({"date": np.arange(301), "close": prices}).to_csv(f, index=False)
    np.testing.assert_allclose(load_returns(f), np.diff(np.log(prices)))
    g = tmp_path / "r.csv"
    pd.DataFrame({"Return": np.diff(np.log(prices))}).to_csv(g, index=False)
    np.testing.assert_allclose(load_returns(g), np.diff(np.log(prices)))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("close\n1\n-2\n" + "3\n" * 300, "prices <= 0"),
        ("close\n" + "1\n" * 50, "at least 200 returns"),
        ("name\nx\ny\n", "no numeric price column"),
    ],
)
def test_load_returns_bad_files(tmp_path, content, message):
    f = tmp_path / "r.csv"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_returns(f)
    assert message in str(exc.value) and "r.csv" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_validate_bad_returns_file_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "mine.csv"
    f.write_text("close\n1\n2\n")
    assert main(["validate", "--returns", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mine.csv" in err and "200 returns" in err
    assert not (tmp_path / "o").exists()  # rejected before any work


def test_user_returns_replace_the_reference_column(tmp_path):
    from experiments.validation.stylized_facts import run_stylized_facts

    rng = np.random.default_rng(9)
    r = rng.standard_t(3, 2000) * 0.01
    f = tmp_path / "crypto.csv"
    pd.DataFrame({"return": r}).to_csv(f, index=False)
    res = run_stylized_facts(quick=True, reference_csv=f)
    assert "crypto.csv" in res["table"].columns
    assert "S&P 500 1999-2018 (arch)" not in res["table"].columns
    assert res["table"].loc["n", "crypto.csv"] == 2000
    assert res["table"].loc["excess kurtosis", "crypto.csv"] == pytest.approx(excess_kurtosis(r))


def test_caccioli_heatmap_cells_sit_on_a_numeric_log_axis():
    """Each cell spans the geometric midpoints to its neighbours (worked by hand), so values
    between grid points (lambda_c = 4.88) fall where they belong on the leverage axis."""
    from experiments.validation.caccioli import _log_edges

    edges = _log_edges([2.0, 8.0, 32.0])
    assert edges == pytest.approx([1.0, 4.0, 16.0, 64.0])
    assert _log_edges([5.0]) == pytest.approx([5.0 / 1.2, 5.0 * 1.2])


def test_tfg_through_the_engine_clears_against_the_noise_traders_curve():
    """Above the value the funds hold nothing, so every walk clears the noise trader's
    elastic demand alone: the engine's price is xi_t / N (backstop 1e-9 of the book)."""
    from experiments.validation import thurner_engine as te

    market = te.TFGMarket(5.0, seed=11)
    noise, rows = market.noise, market.model.strategy_rows["noise_demand"]
    n = market.model.book.qty[rows[0], 0]  # the N units the noise trader holds at the start
    noise._setup(rows)
    noise.log_xi[:] = math.log(2.0 * n)  # the price starts near 2: funds stay out
    for _ in range(150):
        price = market.step()
        np.testing.assert_allclose(price, noise.demand.xi[0] / n, rtol=1e-8)
        assert market.model.book.qty[market.fund_rows, 0].sum() == 0.0
    m = market.model
    assert abs(m.money()["total"] - m.initial_money - m.deposits) < 1e-9 * 1e4


@pytest.mark.slow
def test_tfg_funds_are_margin_called_back_under_the_cap():
    """Funds whose leverage a price move pushes above the cap are liquidated in part by the
    engine: after every step's rounds no fund is above the cap, and calls do happen."""
    from experiments.validation import thurner_engine as te

    cap = 10.0
    market = te.TFGMarket(cap, seed=3)
    book = market.model.book
    for _ in range(2000):
        price = np.array([market.step()])
        rows = market.fund_rows
        equity = book.equity(price, rows)
        notional = np.abs(book.qty[rows, 0]) * price[0]
        held = notional > 0
        assert (notional[held] <= cap * equity[held] * (1 + 1e-9)).all()
    assert market.margin_calls > 20


def _at_42_to_44(variant, *stats):
    """One made-up run of ``variant`` at each of seeds 42-44 with the same statistics
    (:func:`_facts_row`'s order): the ablations' medians are then these values."""
    return [_facts_row(variant, seed, *stats) for seed in (42, 43, 44)]


def _made_up_f():
    """F at seeds 42-44 with medians: kurtosis 8, Hill 3, ACF(r, 1) -0.06, ACF(|r|, 1) 0.3,
    ACF(|r|, 50) 0.10 (the predictions-by-hand tests score ablations against them)."""
    return [
        _facts_row("F", 42, 7.0, 3.0, -0.05, 0.2, 0.08),
        _facts_row("F", 43, 8.0, 3.0, -0.06, 0.3, 0.10),
        _facts_row("F", 44, 9.0, 3.0, -0.07, 0.4, 0.12),
    ]


def _facts_row(variant, seed, kurt, hill, acf_r1, acf1, acf50):
    return {
        "variant": variant,
        "seed": seed,
        "excess kurtosis": kurt,
        "Hill index (top 5%)": hill,
        "ACF(r, 1)": acf_r1,
        "ACF(|r|, 1)": acf1,
        "ACF(|r|, 50)": acf50,
    }


def test_endogenous_verdict_counts_seeds_and_medians_by_hand():
    """P1: >= 4 of 5 seeds of F inside every band and F's medians inside; P2: >= 4 of 5 seeds
    of C1 without clustering and fat tails. Seed 46 of F misses the Hill band (4.5), which
    still leaves 4; C1 seed 45 has clustering (0.2), which still leaves 4."""
    from experiments.validation.endogenous import verdict

    f = [_facts_row("F", s, 6.0, 3.0, -0.02, 0.3, 0.05) for s in (42, 43, 44, 45)]
    f.append(_facts_row("F", 46, 6.0, 4.5, -0.02, 0.3, 0.05))
    c = [_facts_row("C1", s, 1.0, 5.0, 0.0, 0.02, 0.0) for s in (42, 43, 44, 46)]
    c.append(_facts_row("C1", 45, 1.0, 5.0, 0.0, 0.2, 0.0))
    v = verdict(pd.DataFrame(f + c))
    assert (v["F seeds in every band"], v["C1 seeds without the facts"]) == (4, 4)
    assert v["P1"] and v["P2"] and v["passed"]
    # a second F seed out of band: 3 of 5, P1 fails although the medians stay inside
    f[0] = _facts_row("F", 42, 2.0, 3.0, -0.02, 0.3, 0.05)
    v = verdict(pd.DataFrame(f + c))
    assert v["F medians in band"] and not v["P1"] and not v["passed"]


def test_endogenous_ablation_predictions_scored_against_f_on_the_same_seeds():
    """Each ablation's medians against F's medians over the ablation's own seeds (42-44), by
    hand: F's medians there are kurtosis 8, ACF(|r|, 1) 0.3, ACF(|r|, 50) 0.10, ACF(r, 1)
    -0.06 (seeds 45-46 of F, far off, must not count)."""
    from experiments.validation.endogenous import score_ablations

    rows = [
        _facts_row("F", 42, 7.0, 3.0, -0.05, 0.2, 0.08),
        _facts_row("F", 43, 8.0, 3.0, -0.06, 0.3, 0.10),
        _facts_row("F", 44, 9.0, 3.0, -0.07, 0.4, 0.12),
        _facts_row("F", 45, 90.0, 3.0, -0.9, 0.9, 0.9),
        _facts_row("F", 46, 90.0, 3.0, -0.9, 0.9, 0.9),
    ]
    rows += [
        _facts_row("C1", s, 1.0, 5.0, 0.0, 0.05, 0.06 if s < 45 else 0.0)
        for s in (42, 43, 44, 45, 46)
    ]
    rows += _at_42_to_44("A2", 4.0, 3.0, -0.05, 0.2, 0.04)
    rows += _at_42_to_44("A3", 2.0, 3.0, -0.03, 0.2, 0.1)
    rows += _at_42_to_44("A4", 5.0, 3.0, -0.05, 0.35, 0.1)
    rows += _at_42_to_44("A5", 8.5, 3.0, -0.05, 0.3, 0.1)
    rows += _at_42_to_44("A6", 8.0, 3.0, -0.05, 0.3, 0.1)
    scores = score_ablations(pd.DataFrame(rows))
    assert list(scores.index) == ["A1 (C1)", "A2", "A3", "A4", "A5", "A6"]
    assert scores.loc["A2", "ACF(|r|, 50) (F)"] == pytest.approx(0.10)
    assert scores.loc["A1 (C1)", "seeds"] == 5
    # C1: median ACF(|r|, 50) over 42-46 is 0.06 > 0.05: "about 0" fails, the rest holds
    assert not scores.loc["A1 (C1)", "confirmed"]
    assert scores.loc["A1 (C1)", "refuted parts"].startswith("ACF(|r|, 50) about 0")
    assert scores.loc["A2", "confirmed"]  # kurtosis 4 > 3, 0.04 < half of 0.10
    assert not scores.loc["A3", "confirmed"]  # |-0.03| < 0.06, but kurtosis 2: tails gone
    assert scores.loc["A3", "refuted parts"] == "tails remain (kurtosis > 3)"
    assert not scores.loc["A4", "confirmed"]  # 0.35 is not lower than 0.3
    assert scores.loc["A5", "confirmed"]  # 8.5 > 8
    assert not scores.loc["A6", "confirmed"]  # 8 is not lower than 8


def test_endogenous_v2_predictions_scored_by_hand():
    """Check 6b's own predictions on made-up medians (F's over 42-44: kurtosis 8, ACF(r, 1)
    -0.06, ACF(|r|, 50) 0.10): A2 and A6 need a lower kurtosis, A3 a lower ACF(|r|, 50), A5 a
    more negative ACF(r, 1), A7 a higher ACF(|r|, 50)."""
    from experiments.validation.endogenous import score_ablations
    from experiments.validation.endogenous_v2 import PREDICTIONS

    rows = _made_up_f()
    rows += _at_42_to_44("C1", 1.0, 5.0, 0.0, 0.05, 0.0)
    rows += _at_42_to_44("A2", 7.5, 3.0, -0.05, 0.2, 0.1)
    rows += _at_42_to_44("A3", 8.0, 3.0, -0.05, 0.2, 0.1)
    rows += _at_42_to_44("A4", 5.0, 3.0, -0.05, 0.25, 0.1)
    rows += _at_42_to_44("A5", 8.0, 3.0, -0.45, 0.3, 0.1)
    rows += _at_42_to_44("A6", 9.0, 3.0, -0.05, 0.3, 0.1)
    rows += _at_42_to_44("A7", 9.0, 3.0, -0.05, 0.3, 0.5)
    scores = score_ablations(pd.DataFrame(rows), PREDICTIONS)
    assert list(scores.index) == ["A1 (C1)", "A2", "A3", "A4", "A5", "A6", "A7"]
    confirmed = scores["confirmed"].to_dict()
    assert confirmed == {
        "A1 (C1)": True,  # kurtosis 1, ACF(|r|, 1) 0.05, ACF(|r|, 50) 0
        "A2": True,  # 7.5 < 8
        "A3": False,  # 0.1 is not lower than 0.10
        "A4": True,  # 0.25 < 0.3 and kurtosis 5 > 3
        "A5": True,  # -0.45 < -0.06
        "A6": False,  # 9 is not lower than 8
        "A7": True,  # 0.5 > 0.10
    }


def test_endogenous_v3_predictions_scored_by_hand():
    """Check 6c's own predictions on made-up medians (F's over 42-44: kurtosis 8, ACF(|r|, 1)
    0.3, ACF(|r|, 50) 0.10): A4 now needs a higher kurtosis than F, and A8 (the makers' start)
    ACF(|r|) at lags 1 and 50 each within 0.05 of F's; A2-A3 and A5-A7 are check 6b's."""
    from experiments.validation.endogenous import score_ablations
    from experiments.validation.endogenous_v3 import ABLATIONS, PREDICTIONS

    assert ABLATIONS["A8"] == {"liquidity.basis_share": 0.3}
    rows = _made_up_f()
    rows += _at_42_to_44("C1", 1.0, 5.0, 0.0, 0.05, 0.0)
    rows += _at_42_to_44("A2", 8.5, 3.0, -0.05, 0.2, 0.1)
    rows += _at_42_to_44("A3", 8.0, 3.0, -0.05, 0.2, 0.05)
    rows += _at_42_to_44("A4", 9.0, 3.0, -0.05, 0.25, 0.1)
    rows += _at_42_to_44("A5", 8.0, 3.0, -0.02, 0.3, 0.1)
    rows += _at_42_to_44("A6", 7.0, 3.0, -0.05, 0.3, 0.1)
    rows += _at_42_to_44("A7", 9.0, 3.0, -0.05, 0.3, 0.1)
    # A8: ACF(|r|, 1) 0.34 (0.04 from 0.3: within), ACF(|r|, 50) 0.16 (0.06 from 0.10: not)
    rows += _at_42_to_44("A8", 8.0, 3.0, -0.05, 0.34, 0.16)
    scores = score_ablations(pd.DataFrame(rows), PREDICTIONS)
    assert list(scores.index) == ["A1 (C1)", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]
    assert scores["confirmed"].to_dict() == {
        "A1 (C1)": True,  # kurtosis 1, ACF(|r|, 1) 0.05, ACF(|r|, 50) 0
        "A2": False,  # 8.5 is not lower than 8
        "A3": True,  # 0.05 < 0.10
        "A4": True,  # 9 > 8
        "A5": False,  # -0.02 is not lower than -0.06
        "A6": True,  # 7 < 8
        "A7": False,  # 0.1 is not higher than 0.10
        "A8": False,  # ACF(|r|, 50) 0.06 away
    }
    assert scores.loc["A8", "refuted parts"] == "ACF(|r|, 50) within 0.05 of F's"


def test_endogenous_v4_predictions_scored_by_hand():
    """Check 6d's predictions on made-up medians (F's over 42-44: kurtosis 8, ACF(|r|, 1) 0.3,
    ACF(|r|, 50) 0.10): A2 needs ACF(|r|, 50) <= 0 or below half of F's, A3 (no makers)
    ACF(|r|, 50) about 0 and a higher kurtosis, A4 (no margin calls) a lower kurtosis and a
    lower ACF(|r|, 1)."""
    from experiments.validation.endogenous import score_ablations
    from experiments.validation.endogenous_v4 import PREDICTIONS, VARIANTS

    assert VARIANTS["A3"] == (20.0, None, {}) and VARIANTS["A4"][2] == {"maintenance": 0.0}
    rows = _made_up_f()
    rows += _at_42_to_44("C1", 1.0, 5.0, 0.0, 0.05, 0.06)
    rows += _at_42_to_44("A2", 8.5, 3.0, -0.05, 0.2, 0.049)
    rows += _at_42_to_44("A3", 12.0, 3.0, -0.05, 0.2, -0.06)
    rows += _at_42_to_44("A4", 7.0, 3.0, -0.05, 0.3, 0.1)
    scores = score_ablations(pd.DataFrame(rows), PREDICTIONS)
    assert list(scores.index) == ["A1 (C1)", "A2", "A3", "A4"]
    assert scores["confirmed"].to_dict() == {
        "A1 (C1)": False,  # ACF(|r|, 50) 0.06 is not about 0
        "A2": True,  # 0.049 < half of 0.10
        "A3": False,  # |-0.06| is not below 0.05 (kurtosis 12 > 8 holds)
        "A4": False,  # kurtosis 7 < 8, but ACF(|r|, 1) 0.3 is not lower than 0.3
    }
    assert scores.loc["A3", "refuted parts"] == "ACF(|r|, 50) about 0 (|.| < 0.05)"
    assert scores.loc["A4", "refuted parts"] == "lower ACF(|r|, 1) than F"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "run"),
    [
        ("endogenous_v2", "seeds 42; 1,500 steps (quick), the first 300 dropped"),
        ("endogenous_v3", "seeds 42; 1,500 steps (quick), the first 300 dropped"),
        ("endogenous_v4", "seeds 42; 3,000 steps (quick), the first 300 dropped"),
    ],
)
def test_endogenous_quick_variants_run_f_and_its_control(quick_run, key, run):
    """Checks 6b, 6c (F and C1 at seed 42, 1,500 steps) and 6d (F at cap 20 and C1 at cap 1,
    3,000 steps) through results.json: PASS exactly when F is in every band and C1 has
    neither fact (the verdict's arithmetic on the quick bands: one seed, every band)."""
    c = quick_run["checks"][key]
    table = pd.DataFrame(c["table"]).set_index("variant")
    assert list(table.index) == ["F", "C1"]
    assert run in c["notes"]
    f, cl = table.loc["F"], table.loc["C1"]
    in_band = (
        f["excess kurtosis"] > 3
        and 2 <= f["Hill index (top 5%)"] <= 4
        and f["ACF(|r|, 1)"] > 0.1
        and f["ACF(|r|, 50)"] > 0
    )
    control = cl["ACF(|r|, 1)"] <= 0.1 and (
        cl["excess kurtosis"] <= 3 or cl["Hill index (top 5%)"] > 4
    )
    assert c["passed"] == (in_band and control)
    if key == "endogenous_v4":  # at leverage 1 no fund is ever called
        assert f["accounts liquidated"] > 0 and cl["accounts liquidated"] == 0
