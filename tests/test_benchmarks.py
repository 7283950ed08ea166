"""The per-agent reference of the benchmarks agrees with the engine, event for event.

The reference (benchmarks/reference.py) is written independently of the engine's arrays: one
Mesa agent per account, a Python margin check, a loop over agents per round. Both run the same
accounts and shocks; they must liquidate the same accounts in the same rounds and end at the
same price.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reference import ReferenceModel, engine_events, engine_model, scenario


@pytest.mark.parametrize(("n", "seed"), [(2000, 1), (3000, 2)])
@pytest.mark.parametrize("screen", [True, False])
def test_engine_and_per_agent_reference_liquidate_the_same_accounts(n, seed, screen):
    sc = scenario(n, steps=40, seed=seed)
    eng = engine_model(sc, create_agents=False, screen=screen)
    eng.run()
    ref = ReferenceModel(sc)
    for _ in range(sc.steps):
        ref.step()
    events = engine_events(eng)
    assert len(events) > 100  # real cascades, several rounds deep
    assert max(r for _, r, _ in events) >= 3
    assert events == ref.events
    assert eng.mark[0] == pytest.approx(ref.price, rel=1e-12)
    assert eng.engine.insurance_fund == pytest.approx(ref.insurance_fund, rel=1e-9, abs=1e-6)
    assert eng.engine.unfunded_bad_debt == pytest.approx(ref.unfunded_bad_debt, rel=1e-9, abs=1e-6)
    wallets = np.array([a.wallet for a in ref.agents])
    np.testing.assert_allclose(eng.book.wallet, wallets, rtol=1e-12, atol=1e-9)


def test_benchmark_configs_are_valid_and_tables_render():
    from benchmarks.bench import calm_config, markdown_table
    from model import ContagionModel
    from model.config import build_config

    for assets in (1, 4, 16):
        cfg = build_config(calm_config(50, assets, 3, noise=0.1))
        assert len(cfg.assets) == assets and len(set(cfg.symbols)) == assets
        m = ContagionModel(cfg, create_agents=False).run()
        assert m.summary()["steps"] == 3
    text = markdown_table(
        {
            "title": "t",
            "columns": [("a", "A", "{:,}"), ("b", "B", "{:.1f}")],
            "rows": [{"a": 1000, "b": 2.25}],
            "notes": ["note"],
        }
    )
    assert text.splitlines() == [
        "### t",
        "",
        "| A | B |",
        "| ---: | ---: |",
        "| 1,000 | 2.2 |",
        "",
        "note",
    ]


def test_machine_speed_line_gives_four_positive_rates():
    import re

    from benchmarks.bench import machine_speed

    line = machine_speed(repeats=1)
    rates = [float(x) for x in re.findall(r"([0-9.]+) ns an? ", line)]
    assert len(rates) == 4 and all(0 < r < 1e6 for r in rates), line
    assert line.startswith("Machine speed (least of 1):")


def test_run_folder_section_runs_the_command_and_reads_its_folder():
    """The run folder section in a fresh process: the command's folder read back (its fills
    and edge events as summary.json counts them), a wall time and a peak that are real."""
    from benchmarks.bench import bench_run_folder

    (row,) = bench_run_folder(True, sizes=[2_000])["rows"]
    assert (
        row["traders"] == 2_000 and row["fills"] > 0 and row["edges"] >= row["fills"] / 2
    )  # (an edge per liquidation, two fills at most)
    assert 0 < row["run_s"] < row["wall_s"] and 0.05 < row["peak_gb"] < 8
