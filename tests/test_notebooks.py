"""The notebooks in examples/ run from top to bottom, so they cannot go stale.

Each notebook is executed with nbclient on a fresh kernel in a temporary copy of examples/
(what it writes stays there), importing this checkout's code. Every cell must run without an
error, and the outputs the notebook is about must be there: tables, figures, the dashboard.

Notebooks are committed without outputs (the first test here checks that), so a diff
shows only what changed in the text and the code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def _execute(tmp_path, monkeypatch, name: str):
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "false")
    nb = nbformat.read(folder / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on the first error
    return nb, folder


def _outputs(cell) -> list[dict]:
    return cell.get("outputs", []) if cell["cell_type"] == "code" else []


def _mimes(nb) -> list[set[str]]:
    """Per code cell, the kinds of output it produced."""
    kinds = []
    for cell in nb.cells:
        if cell["cell_type"] != "code":
            continue
        found = set()
        for out in _outputs(cell):
            assert out["output_type"] != "error", out
            found |= set(out.get("data", {}))
            if out["output_type"] == "stream":
                found.add(f"stream:{out['name']}")
        kinds.append(found)
    return kinds


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in _outputs(cell):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_the_notebooks_are_there_and_committed_without_outputs():
    assert {"first_cascade.ipynb", "sweep_analysis.ipynb"} <= set(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), name
        assert sum(c["cell_type"] == "markdown" for c in nb.cells) >= 5, name


@pytest.mark.slow
def test_first_cascade_runs_and_shows_tables_graph_figures_and_the_dashboard(tmp_path, monkeypatch):
    nb, folder = _execute(tmp_path, monkeypatch, "first_cascade.ipynb")
    kinds = _mimes(nb)
    assert sum("text/html" in k for k in kinds) >= 4  # pandas tables
    assert sum("image/png" in k for k in kinds) >= 3  # the cascade, price paths, cascade.png
    assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds)  # the dashboard
    run = folder / "results" / "first_cascade"
    assert (run / "contagion.graphml.gz").is_file() and (run / "summary.json").is_file()
    text = _text(nb)
    assert "liquidated traders" in text and "contagion.graphml.gz" in text


@pytest.mark.slow
def test_sweep_analysis_runs_the_sweep_and_draws_the_phase_diagram(tmp_path, monkeypatch):
    import pandas as pd

    nb, folder = _execute(tmp_path, monkeypatch, "sweep_analysis.ipynb")
    kinds = _mimes(nb)
    assert sum("image/png" in k for k in kinds) >= 3  # seaborn grid, phase diagram, CCDF
    out = folder / "results" / "sweep_analysis" / "out"
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 4 * 3 * 2 and (runs["status"] == "ok").all()
    assert (out / "figures" / "phase_diagram.png").is_file()
    assert "24 runs, 24 ok" in _text(nb)
