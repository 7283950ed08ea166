"""End-to-end: a small run writes a run folder that pandas and networkx open."""

import json

import networkx as nx
import pandas as pd

from model import ContagionModel


def test_small_run_writes_folder(small_cfg, tmp_path):
    m = ContagionModel(small_cfg).run()
    out = m.write_results(tmp_path / "run")
    for name in ("market", "steps", "liquidations", "accounts"):
        assert len(pd.read_parquet(out / f"{name}.parquet").columns) > 3
    steps = pd.read_parquet(out / "steps.parquet")
    assert list(steps["step"]) == list(range(1, small_cfg.steps + 1))
    g = nx.read_graphml(out / "contagion.graphml.gz")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounts_liquidated"] > 0  # the -8% shock at 15x must liquidate someone
    assert g.number_of_nodes() == summary["accounts_liquidated"] + len(
        [n for n in g if str(n).startswith(("step:", "others:"))]
    )
    assert not (out / ".incomplete").exists()
