"""contagion calibrate: the file's validation, priors and bands, determinism across executors,
resume from the run records, parameter recovery, the report's numbers and stress prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.calibrate import Prior, Target, load_calibration, resample, run_calibration
from experiments.calibration_report import identifiability, weighted_quantile
from experiments.cli import main
from model.config import ConfigError
from tests.helpers import RECOVERY, recovery_calibration, small_config

pytest.importorskip("pyabc")


def _base(tmp_path: Path, count: int = 100, steps: int = 20) -> Path:
    data = small_config(steps=steps, shocks=[{"step": 5, "asset": "BTC", "return": -0.10}])
    data["assets"] = [data["assets"][0]]
    data["assets"][0]["depth"] = 2.0e5
    data["traders"] = {"count": count, "leverage": 10.0, "assets_per_trader": 1}
    path = tmp_path / "base.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _file(tmp_path: Path, name: str = "cal.toml", **calibrate) -> Path:
    _base(tmp_path)
    table = {
        "base": "base.toml",
        "budget": 90,
        "population": 30,
        "predictive": 10,
        "parameters": {"traders.leverage": [2, 50, "log"]},
        "targets": {"fraction_liquidated": 0.3},
    }
    table.update(calibrate)
    path = tmp_path / name
    path.write_text(tomli_w.dumps({"calibrate": table}))
    return path


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the key
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"targets": {"fraction_liquidatd": 0.1}},
            "calibrate.targets.fraction_liquidatd: not a metric of this base config "
            "(did you mean 'fraction_liquidated'?)",
        ),
        (
            {"parameters": {"traders.leveage": [2, 5]}},
            "calibrate.parameters: point (traders.leveage=2.0): traders.leveage: unknown key",
        ),
        (
            {"parameters": {"traders.leverage": [5, 5]}},
            "calibrate.parameters.traders.leverage: low must be below high, got [5, 5]",
        ),
        (
            {"parameters": {"market.volatility": [-0.5, 0.5, "log"]}},
            "calibrate.parameters.market.volatility: a log range must lie above zero",
        ),
        (
            {"budget": 50},
            "calibrate.budget: abc-smc needs at least 90 runs here, got 50",
        ),
        ({"methd": "abc-smc"}, "calibrate.methd: unknown key"),
        ({"method": "nuts"}, "calibrate.method:"),
        (
            {"targets": {"fraction_liquidated": [0.3, 0.1]}},
            "calibrate.targets.fraction_liquidated: band low must be below high",
        ),
        (
            {"parameters": {"traders.leverage": [0.5, 5]}},
            "calibrate.parameters: point (traders.leverage=0.5): traders.leverage: must be",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, change, expected):
    path = _file(tmp_path, **change)
    out = tmp_path / "out"
    assert main(["calibrate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert expected in err[0], err[0]
    assert not out.exists()  # nothing started


def test_out_folder_of_another_calibration_is_refused(tmp_path, capsys):
    path = _file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration.json").write_text(json.dumps({"fingerprint": "other"}))
    assert main(["calibrate", str(path), "--out", str(out)]) == 2
    assert "holds a different calibration" in capsys.readouterr().err


def test_budget_minimum_of_the_emulator_names_the_method(tmp_path):
    path = _file(tmp_path, method="emulator", budget=15)
    with pytest.raises(ConfigError, match="calibrate.budget: emulator needs at least 20 runs"):
        load_calibration(path)


# --------------------------------------------------------------------------------------------
# Priors, bands, quantiles, resampling: by hand
# --------------------------------------------------------------------------------------------


def test_log_prior_maps_the_unit_interval_geometrically():
    p = Prior("traders.leverage", 2.0, 50.0, log=True)
    np.testing.assert_allclose(p.value(np.array([0.0, 0.5, 1.0])), [2.0, 10.0, 50.0])
    np.testing.assert_allclose(p.unit(np.array([2.0, 10.0, 50.0])), [0.0, 0.5, 1.0])
    q = Prior("market.volatility", 0.2, 1.0)
    np.testing.assert_allclose(q.value(np.array([0.25])), [0.4])
    assert Prior("traders.count", 10, 20, integer=True).config_value(0.26) == 13  # 12.6


def test_band_excess_is_zero_inside_and_the_distance_to_the_edge_outside():
    band = Target("long_share_liquidated", 0.84, 0.91)
    np.testing.assert_allclose(band.excess(np.array([0.80, 0.84, 0.9, 0.95])), [0.04, 0, 0, 0.04])
    point = Target("fraction_liquidated", 0.088, 0.088)
    assert not point.is_band
    np.testing.assert_allclose(point.excess(np.array([0.1])), [0.012])


def test_weighted_quantile_by_hand():
    x = np.array([3.0, 1.0, 2.0, 4.0])
    # equal weights: the midpoints of the sorted values are at cdf 1/8, 3/8, 5/8, 7/8
    np.testing.assert_allclose(weighted_quantile(x, [0.125, 0.5, 0.875]), [1.0, 2.5, 4.0])
    np.testing.assert_allclose(weighted_quantile(x, [0.5]), np.quantile(x, [0.5], method="hazen"))
    # weight 3 on the value 1: cdf midpoints 1.5/6 (x=1), 3.5/6 (2), 4.5/6 (3), 5.5/6 (4)
    w = np.array([1.0, 3.0, 1.0, 1.0])
    np.testing.assert_allclose(weighted_quantile(x, [0.25, 7 / 12], w), [1.0, 2.0])


def test_systematic_resampling_keeps_the_weights():
    w = np.array([0.5, 0.25, 0.25, 0.0])
    idx = resample(w, 8, seed=3)
    assert np.bincount(idx, minlength=4).tolist() == [4, 2, 2, 0]


def test_identifiability_of_a_posterior_by_hand(tmp_path):
    spec = load_calibration(_file(tmp_path))
    # log prior [2, 50]: the prior's 90% interval spans 0.9 of the unit interval; a posterior
    # uniform on [2, 10] (half of the unit interval) has a 90% interval of 0.45 -> ratio 0.5
    u = (np.arange(2000) + 0.5) / 2000 * 0.5
    post = pd.DataFrame({"traders.leverage": spec.priors[0].value(u)})
    row = identifiability(spec, post).iloc[0]
    assert row["width_ratio"] == pytest.approx(0.5, abs=2e-3)
    assert row["median"] == pytest.approx(np.sqrt(2 * 10), rel=1e-2)


# --------------------------------------------------------------------------------------------
# Runs through the executors: determinism, resume, recovery
# --------------------------------------------------------------------------------------------


def _posterior(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "posterior.parquet")


@pytest.mark.slow
def test_same_seed_same_posterior_with_any_number_of_workers_and_after_resume(tmp_path):
    path = _file(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_calibration(path, out=one, workers=1, progress=False) == 0
    assert run_calibration(path, out=two, workers=2, progress=False) == 0
    pd.testing.assert_frame_equal(_posterior(one), _posterior(two))
    pd.testing.assert_frame_equal(
        pd.read_parquet(one / "predictive.parquet"), pd.read_parquet(two / "predictive.parquet")
    )
    # an interrupted calibration: half of the run records, no results yet
    cut = tmp_path / "cut"
    shutil.copytree(one, cut)
    records = sorted((cut / "runs").glob("*.json"))
    for rec in records[len(records) // 2 :]:
        rec.unlink()
    for name in ("posterior.parquet", "predictive.parquet", "report.md"):
        (cut / name).unlink()
    (cut / ".incomplete").write_text("")
    assert main(["calibrate", str(path), "--out", str(cut)]) == 2  # needs --resume
    assert run_calibration(path, out=cut, workers=1, resume=True, progress=False) == 0
    pd.testing.assert_frame_equal(_posterior(one), _posterior(cut))
    assert len(list((cut / "runs").glob("*.json"))) == len(records)
    post = _posterior(one)
    assert list(post.columns) == ["traders.leverage", "weight"]
    assert post["weight"].sum() == pytest.approx(1.0)
    assert (post["traders.leverage"].between(2, 50)).all()
    report = (one / "report.md").read_text()
    assert "traders.leverage" in report and "fraction_liquidated" in report
    for fig in ("pairs.png", "predictive.png"):
        assert (one / fig).stat().st_size > 1000


@pytest.mark.slow
def test_a_calibration_on_a_dask_scheduler_equals_the_local_one(tmp_path):
    """The runs go through the sweep's Dask executor (a local cluster reached by its address,
    as ``--scheduler tcp://...`` would reach a remote one): same draws, same posterior."""
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster

    path = _file(tmp_path)
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert run_calibration(path, out=local, workers=1, progress=False) == 0
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        code = run_calibration(path, out=dask, scheduler=cluster.scheduler_address, progress=False)
    finally:
        cluster.close()
    assert code == 0
    pd.testing.assert_frame_equal(_posterior(local), _posterior(dask))
    pd.testing.assert_frame_equal(
        pd.read_parquet(local / "predictive.parquet"), pd.read_parquet(dask / "predictive.parquet")
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["abc-smc", "emulator"])
def test_parameter_recovery(tmp_path, method):
    """A hidden truth makes the targets; the 90% interval covers it and is much narrower
    than the prior."""
    path = recovery_calibration(tmp_path, method)
    out = tmp_path / "out"
    assert run_calibration(path, out=out, workers=1, progress=False) == 0
    spec = load_calibration(path)
    row = identifiability(spec, _posterior(out)).iloc[0]
    truth = RECOVERY["truth"]["traders.leverage"]
    assert row["q05"] <= truth <= row["q95"], row.to_dict()
    assert row["width_ratio"] < RECOVERY["width_below"], row.to_dict()


@pytest.mark.slow
def test_stress_over_the_posterior(tmp_path):
    path = _file(tmp_path)
    out = tmp_path / "out"
    assert run_calibration(path, out=out, workers=1, progress=False) == 0
    stress = tmp_path / "btc.toml"
    stress.write_text(
        tomli_w.dumps(
            {
                "stress": {
                    "draws": 12,
                    "set": {"shocks": [{"step": 5, "asset": "BTC", "return": -0.25}]},
                }
            }
        )
    )
    assert run_calibration(path, out=out, workers=1, predict=stress, progress=False) == 0
    table = pd.read_parquet(out / "stress-btc" / "stress.parquet")
    assert len(table) == 12
    # a -25% fundamental jump: every run's drawdown is at least the jump's
    assert (table["max_drawdown_BTC"] >= 0.25 - 1e-9).all()
    assert (out / "stress-btc" / "stress.png").exists()
    assert "fraction_liquidated" in (out / "stress-btc" / "stress.md").read_text()


def test_bad_stress_file_exits_2_before_any_run(tmp_path, capsys):
    path = _file(tmp_path)
    stress = tmp_path / "bad.toml"
    stress.write_text(tomli_w.dumps({"stress": {"draws": 5, "set": {"market.volatilty": 0.5}}}))
    out = tmp_path / "out"
    assert main(["calibrate", str(path), "--out", str(out), "--predict", str(stress)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml: stress.set: market.volatilty: unknown key" in err[0], err
    assert not out.exists()
