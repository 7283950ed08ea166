"""Global sensitivity: Sobol indices of a ``sampler = "saltelli"`` sweep (SALib).

The sweep itself needs nothing beyond scipy: :func:`experiments.sweep.unit_samples` builds the
Saltelli design (first-order and total indices, ``N (d + 2)`` points) in the row order SALib's
estimators expect. The analysis here needs the optional extra ``sensitivity`` (SALib).

Each point's output is the mean over its replicates; with common random numbers every point
sees the same replicate streams, so the noise left in the mean is shared across points and
the indices measure the knobs, not the dice. Grid keys crossed with the sampled points (for
example ``margin.mode``) get their own set of indices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["sobol_indices", "sobol_table"]


def sobol_indices(y: np.ndarray, names: list[str], *, seed: int = 0) -> pd.DataFrame:
    """First-order (S1) and total (ST) Sobol indices with 95% bootstrap intervals.

    Args:
        y: outputs in the Saltelli row order (``N (d + 2)`` values).
        names: the ``d`` input names.
        seed: seed of the bootstrap resampling.

    Returns:
        One row per input: ``parameter, S1, S1_conf, ST, ST_conf`` (conf: half-width).
    """
    from SALib.analyze import sobol

    d = len(names)
    y = np.asarray(y, dtype=float)
    if y.size % (d + 2):
        raise ValueError(f"{y.size} outputs is not a multiple of d + 2 = {d + 2}")
    problem = {"num_vars": d, "names": list(names), "bounds": [[0.0, 1.0]] * d}
    res = sobol.analyze(problem, y, calc_second_order=False, seed=seed)
    return pd.DataFrame(
        {
            "parameter": list(names),
            "S1": res["S1"],
            "S1_conf": res["S1_conf"],
            "ST": res["ST"],
            "ST_conf": res["ST_conf"],
        }
    )


def sobol_table(sweep_dir: str | Path, metrics: list[str]) -> pd.DataFrame:
    """Sobol indices of ``metrics`` for a finished saltelli sweep folder.

    Returns one row per (grid combination, metric, parameter); grid keys appear as columns.
    """
    from experiments.sweep import SWEEP_FILE, read_runs

    sweep_dir = Path(sweep_dir)
    meta = json.loads((sweep_dir / SWEEP_FILE).read_text())
    if meta["sampler"] != "saltelli":
        raise ValueError(f"{sweep_dir}: Sobol indices need sampler = 'saltelli'")
    names = list(meta["ranges"])
    grid_keys = list(meta["grid"])
    runs = read_runs(sweep_dir)
    if (runs["status"] != "ok").any():
        bad = int((runs["status"] != "ok").sum())
        raise ValueError(f"{sweep_dir}: {bad} runs failed; the Saltelli design needs every point")
    n_points = len(meta["points"])
    means = runs.groupby("point")[metrics].mean().reindex(range(n_points))
    if means.isna().any().any():
        raise ValueError(f"{sweep_dir}: runs are missing; finish the sweep with --resume")
    n_grid = int(np.prod([len(v) for v in meta["grid"].values()])) if grid_keys else 1
    out = []
    for g in range(n_grid):
        rows = np.arange(g, n_points, n_grid)  # sampled-point-major, grid inner
        labels = {k: meta["points"][g][k] for k in grid_keys}
        for metric in metrics:
            table = sobol_indices(means[metric].to_numpy()[rows], names)
            for k, v in labels.items():
                table.insert(0, k, v)
            table.insert(len(labels), "metric", metric)
            out.append(table)
    return pd.concat(out, ignore_index=True)
