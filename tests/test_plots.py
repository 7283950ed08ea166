"""`contagion plot`: the figures exist, are valid files, and show the numbers they claim to."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from matplotlib.container import BarContainer

from experiments import plots
from experiments.cli import main
from experiments.sweep import load_sweep, run_sweep
from model import ContagionModel
from tests.helpers import small_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sweep(tmp: Path, sweep: dict) -> Path:
    data = small_config(steps=20)
    data["traders"] = {**data["traders"], "count": 200}
    (tmp / "base.toml").write_text(tomli_w.dumps(data))
    path = tmp / "s.toml"
    path.write_text(tomli_w.dumps({"sweep": {"base": "base.toml", **sweep}}))
    out = tmp / "out"
    run_sweep(load_sweep(path), out, progress=False)
    return out


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    return _sweep(
        tmp_path_factory.mktemp("grid"),
        {
            "replicates": 2,
            "grid": {
                "traders.leverage": [5.0, 20.0],
                "market.volatility": [0.4, 1.0],
                "margin.mode": ["cross", "isolated"],
            },
        },
    )


def _valid(path: Path) -> None:
    if path.suffix == ".png":
        assert path.read_bytes()[:8] == PNG_MAGIC
    else:
        assert ET.parse(path).getroot().tag.endswith("svg")


def test_ccdf_by_hand():
    xs, ps = plots.ccdf(np.array([5, 1, 2, 1]))
    assert xs.tolist() == [1, 2, 5]
    assert ps.tolist() == [1.0, 0.5, 0.25]
    assert plots.ccdf(np.array([]))[0].size == 0


@pytest.mark.slow
def test_plot_sweep_writes_every_figure_as_png_and_svg(grid_sweep, capsys):
    assert main(["plot", str(grid_sweep)]) == 0
    printed = capsys.readouterr().out.split()
    names = {
        "phase_diagram",
        "metrics_vs_leverage",
        "cascade_ccdf",
        "cross_vs_isolated",
        "cross_minus_isolated",
    }
    for name in names:
        for ext in ("png", "svg"):
            path = grid_sweep / "figures" / f"{name}.{ext}"
            assert str(path) in printed
            _valid(path)


@pytest.mark.slow
def test_phase_diagram_cells_are_the_replicate_statistics(grid_sweep):
    runs = pd.read_parquet(grid_sweep / "runs.parquet")
    fig = plots.phase_diagram(runs)
    axes = fig.axes
    # rows: fraction liquidated (mean), amplification (median); columns: cross, isolated;
    # rows of a heatmap: volatility high -> low. Colour bars are axes too: skip them.
    heat = [ax for ax in axes if ax.collections and ax.get_xlabel()]
    assert len(heat) == 4
    cases = [("fraction_liquidated", np.mean), ("amplification", np.median)]
    for k, ax in enumerate(heat):
        metric, stat = cases[k // 2]
        mode = ["cross", "isolated"][k % 2]
        cells = np.asarray(ax.collections[0].get_array()).reshape(2, 2)
        sub = runs[runs["margin.mode"] == mode]
        for i, vol in enumerate([1.0, 0.4]):
            for j, lev in enumerate([5.0, 20.0]):
                sel = sub[(sub["market.volatility"] == vol) & (sub["traders.leverage"] == lev)]
                assert len(sel) == 2
                assert cells[i, j] == pytest.approx(stat(sel[metric].to_numpy()), abs=1e-12)


def test_paired_difference_matches_the_runs_row_by_row():
    runs = pd.DataFrame(
        {
            "traders.leverage": [5, 5, 5, 5, 20, 20],
            "margin.mode": ["cross", "isolated", "cross", "isolated", "cross", "isolated"],
            "replicate": [0, 0, 1, 1, 0, 0],
            "status": ["ok"] * 6,
            "fraction_liquidated": [0.1, 0.3, 0.2, 0.1, 0.5, 0.5],
        }
    )
    d = plots.paired_difference(runs, "fraction_liquidated", ["traders.leverage", "margin.mode"])
    got = {(r["traders.leverage"], r["replicate"]): r["difference"] for _, r in d.iterrows()}
    assert got == pytest.approx({(5, 0): -0.2, (5, 1): 0.1, (20, 0): 0.0})


@pytest.mark.slow
def test_plot_run_marks_every_step_with_liquidations(tmp_path, small_cfg):
    model = ContagionModel(small_cfg).run()
    out = model.write_results(tmp_path / "run")
    assert main(["plot", str(out)]) == 0
    for ext in ("png", "svg"):
        _valid(out / "figures" / f"price_paths.{ext}")
    liq = pd.read_parquet(out / "liquidations.parquet")
    fig = plots.price_paths(pd.read_parquet(out / "market.parquet"), liq)
    btc = fig.axes[0]
    markers = [c for c in btc.collections if len(c.get_offsets())]
    steps = sorted(liq.loc[liq["asset"].astype(str) == "BTC", "step"].unique())
    assert len(steps) > 0
    assert sorted(markers[0].get_offsets()[:, 0].tolist()) == [float(s) for s in steps]


@pytest.mark.slow
def test_saltelli_sweep_gets_sobol_indices(tmp_path):
    pytest.importorskip("SALib")
    out = _sweep(
        tmp_path,
        {
            "sampler": "saltelli",
            "samples": 4,
            "ranges": {"traders.leverage": [3, 30, "log"], "market.resilience": [0.05, 0.5]},
        },
    )
    assert main(["plot", str(out)]) == 0
    table = pd.read_csv(out / "sobol_indices.csv")
    assert set(table["parameter"]) == {"traders.leverage", "market.resilience"}
    assert {"S1", "ST", "S1_conf", "ST_conf", "metric"} <= set(table.columns)
    _valid(out / "figures" / "sobol_indices.png")
    # each bar sits on its own knob's label, in every panel
    fig = plots.sobol_bars(table)
    axes = [ax for ax in fig.axes if ax.get_title()]
    names = [t.get_text() for t in axes[0].get_yticklabels()]
    by_label = {plots._label(k): k for k in table["parameter"]}
    by_title = {plots._label(m): m for m in table["metric"]}
    for ax in axes:
        rows = table[table["metric"] == by_title[ax.get_title()]].set_index("parameter")
        # drawn first: the total indices, centred 0.2 above their tick
        st_bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]
        assert len(st_bars) == len(names)
        for bar in st_bars:
            i = int(round(bar.get_y() + bar.get_height() / 2 - 0.2))
            assert bar.get_width() == pytest.approx(rows.loc[by_label[names[i]], "ST"])


def test_bad_folders_exit_2_with_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither a sweep folder" in err and "\n" not in err


@pytest.mark.slow
def test_unfinished_sweep_is_plotted_from_its_records(grid_sweep, tmp_path):
    """An interrupted sweep (no runs.parquet yet) plots the runs that finished."""
    import shutil

    from experiments.sweep import read_runs

    copy = tmp_path / "partial"
    shutil.copytree(grid_sweep, copy)
    (copy / "runs.parquet").unlink()
    records = sorted((copy / "runs").glob("p*.json"))
    for p in records[::2]:
        p.unlink()
    (copy / ".incomplete").write_text("")
    runs = read_runs(copy)
    assert len(runs) == len(records) - len(records[::2])
    full = pd.read_parquet(grid_sweep / "runs.parquet").set_index(["point", "replicate"])
    part = runs.set_index(["point", "replicate"])
    assert (part["fraction_liquidated"] == full.loc[part.index, "fraction_liquidated"]).all()
    planned = 2 * 2 * 2 * 2  # leverage x volatility x mode x replicates
    left = len(records) - len(records[::2])
    with pytest.warns(
        UserWarning, match=f"^drawing {left} of {planned} runs: the sweep is incomplete$"
    ):
        files = plots.plot_sweep(copy)
    assert copy / "figures" / "phase_diagram.png" in files


def test_plot_says_how_many_runs_it_draws_and_removes_stale_figures(grid_sweep, tmp_path, capsys):
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(grid_sweep, copy)
    records = sorted((copy / "runs").glob("p*.json"))
    for p in records[:5]:
        p.unlink()
    (copy / ".incomplete").write_text("")
    # figures an earlier plot drew that this one does not (a grid sweep has no Sobol indices
    # and is not a run folder), and a file of the user's
    figs = copy / "figures"
    figs.mkdir(exist_ok=True)
    stale = [figs / "sobol_indices.png", figs / "sobol_indices.svg", figs / "price_paths.png"]
    for path in stale:
        path.write_bytes(PNG_MAGIC)
    (copy / "sobol_indices.csv").write_text("parameter,S1\n")
    (figs / "notes.txt").write_text("mine\n")
    assert main(["plot", str(copy)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "contagion: warning: drawing 11 of 16 runs: the sweep is incomplete\n"
    drawn = [Path(line) for line in captured.out.splitlines()]
    assert figs / "phase_diagram.png" in drawn
    assert all(p.exists() for p in drawn)
    assert not any(p.exists() for p in stale) and not (copy / "sobol_indices.csv").exists()
    assert (figs / "notes.txt").read_text() == "mine\n"
    # every figure file left is one this plot drew, or the user's file
    left = {p.name for p in figs.iterdir()}
    assert left == {p.name for p in drawn} | {"notes.txt"}
    # a finished sweep whose runs all succeeded draws without a warning
    assert main(["plot", str(grid_sweep)]) == 0
    assert capsys.readouterr().err == ""


def test_price_paths_shows_one_step_of_liquidations_on_a_long_run():
    """A single step of liquidations on a 1,000-step axis is drawn (a bar one step wide would
    be under a pixel): the pixels at that step of the notional panel are the stem's colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    steps = np.arange(1, 1001)
    market = pd.DataFrame(
        {
            "step": np.repeat(steps, 2),
            "asset": pd.Categorical(np.tile(["BTC", "ETH"], 1000)),
            "price": np.tile([60000.0, 3000.0], 1000),
            "fundamental": np.tile([60000.0, 3000.0], 1000),
        }
    )
    liq = pd.DataFrame(
        {
            "step": [500, 20],
            "round": [1, 1],
            "trader_id": [1, 2],
            "asset": pd.Categorical(["BTC", "BTC"]),
            "notional": [32e6, 1e5],
            "kind": pd.Categorical(["full", "partial"]),
        }
    )
    fig = plots.price_paths(market, liq, name="baseline", step_minutes=60)
    assert fig.get_suptitle() == "baseline: prices and liquidations"
    stems = fig.axes[1]
    assert stems.get_ylabel() == "closed per step ($M)" and "60 minutes" in stems.get_xlabel()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    height = img.shape[0]

    def red(row, col) -> bool:
        return np.abs(img[row, col] - [192, 57, 43]).sum() < 60

    # the $32M step: its stem is a red line from the axis to 32 ($M), every pixel of it
    x, y0 = stems.transData.transform((500, 0.0))
    _, y1 = stems.transData.transform((500, 32.0))
    rows = range(int(height - y1) + 3, int(height - y0) - 2)
    assert len(rows) > 50
    col = int(round(x))
    assert all(any(red(r, c) for c in (col - 1, col, col + 1)) for r in rows)
    # the $0.1M step: too short for a line, but its dot is there
    x, y = stems.transData.transform((20, 0.1))
    r0, c0 = int(round(height - y)), int(round(x))
    assert any(red(r, c) for r in range(r0 - 3, r0 + 4) for c in range(c0 - 3, c0 + 4))


def test_coinciding_depth_lines_are_drawn_once_with_every_asset_named():
    """On the static book every asset's depth is 100% of calm: one line would hide the other,
    so the assets share one line labelled with both; lines that differ stay one per asset."""
    from matplotlib.figure import Figure

    from experiments.depth_drawing import coinciding_assets, draw_depth_by_step

    series = np.array([[1.0, 2.0, 1.0, 3.0], [1.0, 2.5, 1.0, 3.0], [2.0, 2.0, 2.0, 3.0]])
    assert coinciding_assets(series) == [[0, 2], [1], [3]]
    ax = Figure().subplots()
    calm = np.array([1e6, 5e5])
    static = np.tile(calm, (5, 1))  # both at their calm depth every step
    draw_depth_by_step(ax, static, calm, ["BTC", "ETH"], label="static", style="--")
    makers = static * np.array([[1.0, 1.0], [0.6, 0.8], [0.8, 0.9], [0.9, 0.95], [1.0, 1.0]])
    draw_depth_by_step(ax, makers, calm, ["BTC", "ETH"], label="makers")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["BTC, ETH static", "BTC makers", "ETH makers"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 100.0)
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [100, 60, 80, 90, 100])
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), [100, 80, 90, 95, 100])
