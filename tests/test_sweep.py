"""Sweeps: samplers, seeds, validation, executors agree, failures, kill -9 and resume, Dask."""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.cli import main
from experiments.sweep import (
    ProcessExecutor,
    RunTask,
    SerialExecutor,
    load_sweep,
    plan_runs,
    run_one,
    run_seed,
    run_sweep,
    sample_points,
    unit_samples,
)
from model.config import ConfigError
from tests.helpers import small_config

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _base(tmp_path: Path, **overrides) -> Path:
    data = small_config(steps=20, **overrides)
    data["traders"] = {**data["traders"], "count": 200}
    path = tmp_path / "base.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _sweep_file(tmp_path: Path, sweep: dict, name: str = "s.toml") -> Path:
    base = _base(tmp_path)
    path = tmp_path / name
    path.write_text(tomli_w.dumps({"sweep": {"base": base.name, **sweep}}))
    return path


GRID = {
    "replicates": 2,
    "grid": {"traders.leverage": [5.0, 20.0], "margin.mode": ["cross", "isolated"]},
}


def _metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Everything except wall-clock time, which is the one column allowed to differ."""
    return df.drop(columns=["elapsed"]).reset_index(drop=True)


# ---- samplers -------------------------------------------------------------------------------


def test_grid_is_the_full_product_in_file_order(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path, GRID))
    points = sample_points(spec)
    expected = [
        {"traders.leverage": lev, "margin.mode": mode}
        for lev, mode in itertools.product([5.0, 20.0], ["cross", "isolated"])
    ]
    assert points == expected
    tasks = plan_runs(spec)
    assert len(tasks) == 4 * 2
    assert len({t.run_id for t in tasks}) == 8


@pytest.mark.parametrize("n", [8, 50])
def test_latin_hypercube_puts_one_sample_in_each_stratum(n):
    u = unit_samples("lhs", n, 3, seed=11)
    assert u.shape == (n, 3)
    for j in range(3):  # each of the n equal bins of each axis holds exactly one draw
        assert sorted(np.floor(u[:, j] * n).astype(int)) == list(range(n))


def test_sobol_points_are_balanced_and_random_points_are_uniform():
    u = unit_samples("sobol", 64, 2, seed=3)
    assert u.shape == (64, 2)
    # a (t, m, s)-net in base 2: each half and each quarter of each axis gets its exact share
    for j in range(2):
        assert np.bincount(np.floor(u[:, j] * 4).astype(int), minlength=4).tolist() == [16] * 4
    r = unit_samples("random", 4000, 2, seed=3)
    assert r.min() >= 0 and r.max() < 1
    assert abs(r.mean() - 0.5) < 4 * np.sqrt(1 / 12 / 8000)  # 4 standard errors


def test_saltelli_design_rows_swap_one_column_at_a_time():
    n, d = 8, 3
    u = unit_samples("saltelli", n, d, seed=5).reshape(n, d + 2, d)
    a, b = u[:, 0], u[:, d + 1]
    for i in range(d):
        ab = u[:, 1 + i]
        assert np.array_equal(ab[:, i], b[:, i])
        others = [j for j in range(d) if j != i]
        assert np.array_equal(ab[:, others], a[:, others])


def test_ranges_scale_log_and_round_whole_number_keys(tmp_path):
    sweep = {
        "sampler": "lhs",
        "samples": 10,
        "ranges": {"traders.leverage": [2, 50, "log"], "traders.count": [100, 300]},
        "grid": {"margin.mode": ["cross", "isolated"]},
    }
    spec = load_sweep(_sweep_file(tmp_path, sweep))
    points = sample_points(spec)
    assert len(points) == 20  # 10 sampled points crossed with 2 modes
    lev = np.array([p["traders.leverage"] for p in points[::2]])
    # log-uniform LHS: one draw in each of the 10 equal strata of log(leverage)
    strata = np.floor((np.log(lev) - np.log(2)) / (np.log(50) - np.log(2)) * 10).astype(int)
    assert sorted(strata) == list(range(10))
    counts = [p["traders.count"] for p in points]
    assert all(isinstance(c, int) and 100 <= c <= 300 for c in counts)
    assert [p["margin.mode"] for p in points[:2]] == ["cross", "isolated"]


def test_samplers_are_deterministic_given_the_base_seed(tmp_path):
    sweep = {"sampler": "random", "samples": 5, "ranges": {"market.volatility": [0.1, 1.0]}}
    a = sample_points(load_sweep(_sweep_file(tmp_path, {**sweep, "seed": 1}, "a.toml")))
    b = sample_points(load_sweep(_sweep_file(tmp_path, {**sweep, "seed": 1}, "b.toml")))
    c = sample_points(load_sweep(_sweep_file(tmp_path, {**sweep, "seed": 2}, "c.toml")))
    assert a == b and a != c


# ---- seeds ----------------------------------------------------------------------------------


def test_common_random_numbers_give_replicate_k_the_same_seed_at_every_point(tmp_path):
    spec = load_sweep(_sweep_file(tmp_path, {**GRID, "replicates": 3, "seed": 99}))
    tasks = plan_runs(spec)
    by_rep = {}
    for t in tasks:
        by_rep.setdefault(t.replicate, set()).add(t.seed)
    assert all(len(s) == 1 for s in by_rep.values())
    assert len({next(iter(s)) for s in by_rep.values()}) == 3
    # the seed is SeedSequence([base, 0, k]): recompute it independently
    ss = np.random.SeedSequence([99, 0, 0, 2]).generate_state(2, np.uint32)
    assert by_rep[2] == {((int(ss[0]) << 31) ^ int(ss[1])) & (2**63 - 1)}
    # more replicates or another grid do not change replicate k's seed
    more = plan_runs(load_sweep(_sweep_file(tmp_path, {**GRID, "replicates": 5, "seed": 99})))
    assert {t.seed for t in more if t.replicate == 1} == by_rep[1]


def test_without_common_random_numbers_the_seed_follows_the_point_values(tmp_path):
    sweep = {**GRID, "common_random_numbers": False}
    tasks = plan_runs(load_sweep(_sweep_file(tmp_path, sweep)))
    assert len({t.seed for t in tasks}) == len(tasks)
    reordered = {
        **sweep,
        "grid": {"margin.mode": ["isolated", "cross"], "traders.leverage": [20.0, 5.0]},
    }
    other = plan_runs(load_sweep(_sweep_file(tmp_path, reordered, "r.toml")))

    def key(t):
        return (tuple(sorted(t.params.items())), t.replicate)

    assert {key(t): t.seed for t in tasks} == {key(t): t.seed for t in other}
    assert run_seed(1, 0, {"a": 1}) != run_seed(1, 0, {"a": 2}) != run_seed(1, 0)


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sweep", "needle"),
    [
        ({"grid": {"traders.levrage": [2, 5]}}, "traders.levrage: unknown key"),
        ({"grid": {"traders.leverage": [0.5, 5]}}, "traders.leverage: must be >= 1"),
        ({"grid": {"traders.leverage": []}}, "sweep.grid.traders.leverage"),
        ({"replicate": 3}, "sweep.replicate: unknown key (did you mean 'replicates'?)"),
        ({"replicates": 0}, "sweep.replicates: must be >= 1"),
        ({"sampler": "halton"}, "sweep.sampler"),
        (
            {"sampler": "sobol", "samples": 100, "ranges": {"market.volatility": [0.1, 1]}},
            "sweep.samples: the sobol sampler needs a power of 2",
        ),
        (
            {"sampler": "lhs", "samples": 4, "ranges": {"market.volatility": [1, 0.1]}},
            "sweep.ranges.market.volatility: low must be below high",
        ),
        ({"sampler": "lhs", "samples": 4}, "sweep.ranges: the lhs sampler needs"),
        ({"ranges": {"market.volatility": [0.1, 1]}}, "grid sampler takes values"),
    ],
)
def test_bad_sweep_files_name_the_key(tmp_path, sweep, needle):
    with pytest.raises(ConfigError, match=None) as info:
        load_sweep(_sweep_file(tmp_path, sweep))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    path = _sweep_file(tmp_path, {"grid": {"market.volatility": [-1.0]}})
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "market.volatility" in err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: file not found" in capsys.readouterr().err
    good = _sweep_file(tmp_path, GRID, "g.toml")
    assert main(["sweep", str(good), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


# ---- running --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid sweep run serially, in this process: the reference every executor must match."""
    tmp = tmp_path_factory.mktemp("ref")
    spec = load_sweep(_sweep_file(tmp, GRID))
    runs = run_sweep(spec, tmp / "out", SerialExecutor(), progress=False)
    return spec, runs


def test_serial_runs_equal_direct_model_runs(reference):
    spec, runs = reference
    assert len(runs) == 8 and (runs["status"] == "ok").all()
    assert runs[["point", "replicate"]].drop_duplicates().shape[0] == 8
    assert list(runs.columns[:5]) == [
        "point",
        "replicate",
        "seed",
        "traders.leverage",
        "margin.mode",
    ]
    # one row recomputed by hand through the public API
    from model import ContagionModel
    from model.config import apply_overrides, build_config

    row = runs.iloc[5]
    cfg = build_config(
        apply_overrides(
            spec.base,
            {
                "traders.leverage": row["traders.leverage"],
                "margin.mode": row["margin.mode"],
                "seed": int(row["seed"]),
            },
        ),
        base_dir=spec.base_dir,
    )
    s = ContagionModel(cfg, create_agents=False).run().summary()
    assert row["accounts_liquidated"] == s["accounts_liquidated"]
    assert row["fraction_liquidated"] == s["fraction_liquidated"]
    assert row["max_drawdown"] == s["max_drawdown"]["worst"]
    assert row["liquidated_notional_BTC"] + row["liquidated_notional_ETH"] == pytest.approx(
        s["liquidated_notional"], rel=1e-12
    )
    # the leverage grid matters: 20x liquidates more than 5x in the same replicate and mode
    hi = runs[runs["traders.leverage"] == 20.0]["fraction_liquidated"].sum()
    lo = runs[runs["traders.leverage"] == 5.0]["fraction_liquidated"].sum()
    assert hi > lo


def test_cascade_table_matches_the_runs(reference, tmp_path):
    spec, runs = reference
    out = Path(spec.path).parent / "out"
    cascades = pd.read_parquet(out / "cascades.parquet")
    per_run = cascades.groupby(["point", "replicate"])["size"].agg(["max", "size"])
    merged = runs.set_index(["point", "replicate"]).join(per_run).fillna({"max": 0, "size": 0})
    assert (merged["max"] == merged["largest_cascade"]).all()
    assert (merged["size"] == merged["cascades"]).all()


@pytest.mark.slow
def test_parallel_processes_equal_serial(reference, tmp_path):
    spec, runs = reference
    par = run_sweep(spec, tmp_path / "par", ProcessExecutor(2), progress=False)
    pd.testing.assert_frame_equal(_metrics(par), _metrics(runs))


@pytest.mark.slow
def test_dask_local_cluster_equals_serial_and_survives_a_lost_worker(reference, tmp_path):
    pytest.importorskip("dask.distributed")
    from experiments.sweep import DaskExecutor

    spec, runs = reference
    ex = DaskExecutor("local", workers=2)
    assert ex.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    try:
        # a second client on the same scheduler address, as --scheduler tcp://... would make
        addr = DaskExecutor(ex.cluster.scheduler_address)
        got = run_sweep(spec, tmp_path / "dask", addr, progress=False)
        pd.testing.assert_frame_equal(_metrics(got), _metrics(runs))

        # kill one worker process while its runs are in flight: they are rescheduled
        fn = functools.partial(_slow_run, base=spec.base, base_dir=spec.base_dir)
        pids = ex.client.run(os.getpid)
        results = {}
        for task, result in ex.run(fn, plan_runs(spec)):
            if not results:
                os.kill(next(iter(pids.values())), signal.SIGKILL)
            results[task.run_id] = result
        assert len(results) == 8
        assert all(r["status"] == "ok" for r in results.values())
        for task in plan_runs(spec):
            ref = runs[(runs["point"] == task.point) & (runs["replicate"] == task.replicate)]
            assert results[task.run_id]["metrics"]["liquidations"] == ref["liquidations"].item()
    finally:
        ex.close()


@pytest.mark.slow
def test_a_lost_dask_scheduler_stops_the_sweep_and_resume_finishes_it(reference, tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster

    from experiments.sweep import DaskExecutor, SweepAborted

    spec, runs = reference
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    ex = DaskExecutor(cluster.scheduler_address, timeout=2)
    inner = ex.run

    def run_then_lose_the_scheduler(fn, tasks):
        for i, item in enumerate(inner(fn, tasks)):
            if i == 1:
                cluster.close()
            yield item

    ex.run = run_then_lose_the_scheduler
    fn = functools.partial(_slow_run, base=spec.base, base_dir=spec.base_dir)
    out = tmp_path / "lost"
    with pytest.raises(SweepAborted, match="--resume"):
        run_sweep(spec, out, ex, progress=False, run_fn=fn)
    done = len(list((out / "runs").glob("p*.json")))
    assert 2 <= done < 8  # the finished runs were kept, the cancelled ones were not recorded
    assert (out / ".incomplete").exists()
    resumed = run_sweep(spec, out, SerialExecutor(), resume=True, progress=False)
    pd.testing.assert_frame_equal(_metrics(resumed), _metrics(runs))


def _slow_run(task, base, base_dir):
    time.sleep(0.4)
    return run_one(task, base, base_dir)


def _dies_on_point_1(task, base, base_dir):
    if task.point == 1 and task.replicate == 0:
        os._exit(3)
    return run_one(task, base, base_dir)


@pytest.mark.slow
def test_a_dying_worker_costs_only_its_own_run(reference, tmp_path):
    spec, runs = reference
    fn = functools.partial(_dies_on_point_1, base=spec.base, base_dir=spec.base_dir)
    got = run_sweep(spec, tmp_path / "die", ProcessExecutor(2), progress=False, run_fn=fn)
    bad = (got["point"] == 1) & (got["replicate"] == 0)
    assert bad.sum() == 1
    assert (got.loc[bad, "status"] == "error").all()
    assert got.loc[bad, "error"].str.contains("worker process died").all()
    assert got.loc[bad, "fraction_liquidated"].isna().all()
    # same values; whole-number columns are floats in ``got`` because its error rows hold NaN
    pd.testing.assert_frame_equal(
        _metrics(got[~bad]), _metrics(runs[~bad]), check_dtype=False, check_exact=True
    )


def test_a_run_that_raises_becomes_an_error_row(tmp_path):
    csv = tmp_path / "pop.csv"
    csv.write_text("trader_id,collateral,asset,quantity,entry_price\n1,1000,BTC,0.1,60000\n")
    sweep = {"grid": {"traders.population": ["pop.csv", "missing.csv"]}}
    spec = load_sweep(_sweep_file(tmp_path, sweep))
    runs = run_sweep(spec, tmp_path / "out", progress=False)
    assert runs["status"].tolist() == ["ok", "error"]
    assert "missing.csv" in runs["error"].iloc[1]
    assert runs["traders"].iloc[0] == 1
    assert not (tmp_path / "out" / ".incomplete").exists()


def test_existing_folder_needs_resume_and_the_same_sweep(reference, tmp_path, capsys):
    spec, _ = reference
    out = Path(spec.path).parent / "out"
    assert main(["sweep", str(spec.path), "--out", str(out), "--workers", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    # resuming a finished sweep runs nothing and leaves the results as they were
    before = pd.read_parquet(out / "runs.parquet")
    assert main(["sweep", str(spec.path), "--out", str(out), "--workers", "1", "--resume"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "runs.parquet"), before)
    changed = _sweep_file(tmp_path, {**GRID, "replicates": 3})
    assert main(["sweep", str(changed), "--out", str(out), "--resume"]) == 2
    assert "different sweep" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(x) for x in text)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.slow
def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    sweep = {
        "replicates": 6,
        "grid": {"traders.leverage": [5.0, 10.0, 20.0], "margin.mode": ["cross", "isolated"]},
    }
    path = _sweep_file(tmp_path, sweep)
    out = tmp_path / "out"
    cmd = [PYTHON, "-m", "experiments.cli", "sweep", str(path), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    total = 36
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(list((out / "runs").glob("p*.json"))) >= 4:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.01)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must follow
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "orphaned workers kept running"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = len(list((out / "runs").glob("p*.json")))
    assert 4 <= done < total
    assert (out / ".incomplete").exists()

    res = subprocess.run(
        [*cmd, "--workers", "2", "--resume"], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    resumed = pd.read_parquet(out / "runs.parquet")
    assert len(resumed) == total
    assert not resumed.duplicated(["point", "replicate"]).any()
    assert not (out / ".incomplete").exists()
    assert not list((out / "runs").glob(".*.tmp"))

    whole = run_sweep(load_sweep(path), tmp_path / "whole", progress=False)
    pd.testing.assert_frame_equal(_metrics(resumed), _metrics(whole))
    # the durable records are exactly one per run
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("p*.json")]
    assert sorted((r["point"], r["replicate"]) for r in records) == sorted(
        itertools.product(range(6), range(6))
    )


class _Terminal(io.StringIO):
    """stderr as a terminal: progress bars draw on it."""

    def isatty(self):
        return True


def test_progress_bar_shows_runs_rate_and_time_left_on_a_terminal(tmp_path, monkeypatch):
    path = _sweep_file(tmp_path, {"grid": {"traders.leverage": [5.0, 10.0]}, "replicates": 2})
    spec = load_sweep(path)
    failing = {1}  # point 1 of replicate 0 fails

    def fn(task):
        if task.point in failing and task.replicate == 0:
            return {"status": "error", "error": "boom", "metrics": {}, "cascades": [], "elapsed": 0}
        return run_one(task, base=spec.base, base_dir=spec.base_dir)

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    run_sweep(spec, tmp_path / "out", SerialExecutor(), run_fn=fn)
    text = term.getvalue()
    # tqdm redraws one line in place (at most every 0.2 s, and clears it at the end): its
    # states name the runs done of 4, the rate, the time left and the failure
    states = [line for line in text.split("\r") if "run" in line]
    assert all(re.search(r" [0-4]/4 ", line) for line in states) and states, text
    assert any("run/s" in line or "s/run" in line for line in states), text
    assert any("1 failed" in line for line in states), text
    assert any("<" in line for line in states), text  # elapsed<left
    # not a terminal, or quiet: nothing at all
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    run_sweep(spec, tmp_path / "out2", SerialExecutor(), run_fn=fn)
    monkeypatch.setattr(sys, "stderr", term := _Terminal())
    run_sweep(spec, tmp_path / "out3", SerialExecutor(), run_fn=fn, progress=False)
    assert quiet.getvalue() == "" and term.getvalue() == ""


def test_run_one_reports_errors_instead_of_raising():
    task = RunTask(0, 0, 1, {"traders.population": "/nonexistent/file.csv"})
    rec = run_one(task, small_config(), ".")
    assert rec["status"] == "error" and "file.csv" in rec["error"]
    assert rec["metrics"] == {} and rec["elapsed"] >= 0
