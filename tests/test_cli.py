"""`contagion run`: writes a run folder; bad input is one line and exit status 2."""

import json
import subprocess
import sys

import pytest
import tomli_w

from tests.helpers import small_config


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.slow
def test_run_writes_the_folder_and_honours_set_and_seed(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(small_config(steps=12)))
    out = tmp_path / "out"
    r = run_cli(
        "run",
        str(cfg),
        "--out",
        str(out),
        "--seed",
        "99",
        "--set",
        "market.volatility=0.3",
        "--set",
        "assets.ETH.depth=5e5",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 99 and summary["steps"] == 12
    rerun = (out / "config.toml").read_text()
    assert "volatility = 0.3" in rerun and "depth = 500000.0" in rerun
    # the run command draws the largest cascade into the folder
    assert (out / "cascade.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_cascade_drawn_from_one_steps_rows_is_the_whole_tables_drawing(
    tmp_path, monkeypatch
):
    """cascade.png is drawn from the largest cascade's rows alone, read with a filter from
    tables of many row groups: the same PNG as drawn from the whole tables."""
    import pandas as pd

    import model.results as results
    from experiments.cascade_drawing import largest_cascade_step, write_cascade_png
    from experiments.run import draw_run_cascade
    from model import ContagionModel
    from model.config import build_config

    monkeypatch.setattr(results, "LOG_ROWS_PER_GROUP", 50)
    m = ContagionModel(build_config(small_config(steps=40)), create_agents=False).run()
    folder = m.write_results(tmp_path / "run")
    edges = pd.read_parquet(folder / "contagion_edges.parquet")
    liquidations = pd.read_parquet(folder / "liquidations.parquet")
    assert edges["step"].nunique() > 1 and len(edges) > 200  # several steps, many row groups
    step = largest_cascade_step(edges)
    whole = tmp_path / "whole.png"
    write_cascade_png(whole, edges, liquidations)
    draw_run_cascade(folder)
    assert (folder / "cascade.png").read_bytes() == whole.read_bytes()
    part = tmp_path / "part.png"  # (a drawing of another step differs: the check can fail)
    write_cascade_png(part, edges, liquidations, step=int(edges["step"].iloc[0]))
    assert step != edges["step"].iloc[0] and part.read_bytes() != whole.read_bytes()


def test_a_cascade_drawing_that_fails_is_one_warning_and_the_folder_is_complete(
    tmp_path, monkeypatch, capsys
):
    """The figure is drawn after the data are written: if the renderer gives up, the run
    still exits 0 with every table, and stderr says in one line which figure is missing."""
    import experiments.run
    from experiments.cli import main
    from model.results import RUN_FILES

    def fail(folder):
        raise OverflowError("Exceeded cell block limit in Agg.\nPlease set ...")

    monkeypatch.setattr(experiments.run, "draw_run_cascade", fail)
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(small_config(steps=12, traders={"count": 100})))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cascade.png not drawn (OverflowError: Exceeded" in err[0], err
    assert all((out / name).is_file() for name in RUN_FILES) and not (out / "cascade.png").exists()

    def full(folder):  # a file that cannot be written is still an error: exit 2, one line
        raise OSError(28, "No space left on device", str(folder / "cascade.png"))

    monkeypatch.setattr(experiments.run, "draw_run_cascade", full)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cascade.png" in err[0] and "no space left" in err[0].lower(), err


@pytest.mark.slow
def test_bad_key_exits_2_with_one_line_naming_it(tmp_path):
    data = small_config()
    data["market"]["volatilty"] = 0.3
    cfg = tmp_path / "bad.toml"
    cfg.write_text(tomli_w.dumps(data))
    r = run_cli("run", str(cfg), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "market.volatilty" in lines[0] and "volatility" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bad_value_and_missing_file_exit_2(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(small_config()))
    r = run_cli("run", str(cfg), "--set", "traders.leverage=-3")
    assert (
        r.returncode == 2
        and "traders.leverage" in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
    r = run_cli("run", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "nope.toml" in r.stderr and "Traceback" not in r.stderr


def test_run_folder_files_are_ordinary_files(tmp_path, small_cfg):
    import os
    import stat

    from model import ContagionModel

    umask = os.umask(0o022)
    os.umask(umask)
    out = ContagionModel(small_cfg).run().write_results(tmp_path / "run")
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name
