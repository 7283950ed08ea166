"""The calibration checked on itself: a coverage study (docs/calibration.md).

Truths are drawn from the prior; each truth's targets are the metrics of one run of the model
at the truth (observed data as the model would make it, with its noise); the calibration is
run on those targets and each parameter's nominal 90% interval is checked for the truth. A
calibrated method covers the truth in about 90% of the truths; fewer means overconfident
intervals, more means conservative ones. Run it with::

    python -c "from experiments.calibration_study import coverage_study; \\
               coverage_study('results/coverage', truths=20)"
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

from model import storage

__all__ = ["POPULATION", "STUDY_BASE", "coverage_study", "draw_truths"]

# A cheap base for studies of the method: one asset, 150 traders, 20 one-hour steps, a -10%
# BTC jump at step 5 (about 0.1 s a run).
STUDY_BASE = {
    "name": "coverage",
    "seed": 1,
    "steps": 20,
    "market": {"volatility": 0.6, "impact_exponent": 0.5, "resilience": 0.1},
    "assets": [{"symbol": "BTC", "price": 60000.0, "depth": 2.0e5, "max_leverage": 100}],
    "traders": {
        "count": 150,
        "leverage": 10.0,
        "leverage_dispersion": 0.6,
        "collateral": 2000.0,
        "long_fraction": 0.65,
        "assets_per_trader": 1,
    },
    "margin": {"mode": "cross", "maintenance": 0.005, "fee": 0.002, "insurance_fund": 2.0e4},
    "shocks": [{"step": 5, "asset": "BTC", "return": -0.10}],
}
PARAMETERS = {"traders.leverage": [2.0, 50.0, "log"], "assets.BTC.depth": [5.0e4, 2.0e6, "log"]}
TARGETS = ("fraction_liquidated", "liquidated_share", "max_drawdown_BTC")
POPULATION = 50  # ABC-SMC particles per generation of every truth's calibration


def draw_truths(truths: int, seed: int) -> list[tuple[dict[str, float], int]]:
    """The study's truths, drawn from the (log-uniform) prior, each with the seed of the one run
    that makes its observed targets; the same ``seed`` draws the same truths, so a finished
    study's table can be checked against them."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    out = []
    for _ in range(truths):
        u = rng.random(len(PARAMETERS))
        truth = {}
        for j, (key, (lo, hi, _)) in enumerate(PARAMETERS.items()):
            truth[key] = float(np.exp(np.log(lo) + u[j] * (np.log(hi) - np.log(lo))))
        out.append((truth, int(rng.integers(2**62))))
    return out


def coverage_study(
    out: str | Path,
    *,
    truths: int = 20,
    method: str = "abc-smc",
    budget: int = 400,
    seed: int = 11,
    workers: int | None = None,
    only: list[int] | None = None,
) -> pd.DataFrame:
    """Run ``truths`` calibrations on targets made at truths drawn from the prior; write
    coverage.parquet (one row per truth and parameter, with the posterior's effective sample
    size) and coverage.json (the rates) into ``out``; resumable (each calibration is a
    resumable folder of its own). ``only``: run just these truths (for several processes
    sharing the study); no summary is written."""
    from experiments.calibrate import load_calibration, run_calibration
    from experiments.calibration_report import identifiability
    from experiments.sweep import RunTask, run_one

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage.write_text(out / "base.toml", tomli_w.dumps(STUDY_BASE))
    rows = []
    for i, (truth, data_seed) in enumerate(draw_truths(truths, seed)):
        rec = run_one(RunTask(i, 0, data_seed, truth), STUDY_BASE, str(out))
        targets = {m: float(rec["metrics"][m]) for m in TARGETS}
        cal = {
            "base": "base.toml",
            "method": method,
            "budget": budget,
            "population": POPULATION if method == "abc-smc" else None,
            "seed": seed + i,
            "predictive": 0,
            "parameters": PARAMETERS,
            "targets": targets,
        }
        cal = {k: v for k, v in cal.items() if v is not None}
        path = out / f"truth{i:02d}.toml"
        storage.write_text(path, tomli_w.dumps({"calibrate": cal}))
        folder = out / f"truth{i:02d}"
        if only is not None and i not in only:
            continue
        run_calibration(path, out=folder, workers=workers, resume=True, progress=False)
        spec = load_calibration(path)
        posterior = pd.read_parquet(folder / "posterior.parquet")
        ident = identifiability(spec, posterior)
        ess = _effective_sample_size(posterior)
        for _, r in ident.iterrows():
            t = truth[r["parameter"]]
            rows.append(
                {
                    "truth_index": i,
                    "parameter": r["parameter"],
                    "truth": t,
                    "q05": r["q05"],
                    "q95": r["q95"],
                    "width_ratio": r["width_ratio"],
                    "covered": bool(r["q05"] <= t <= r["q95"]),
                    "ess": ess,
                }
            )
    table = pd.DataFrame(rows)
    if only is not None:
        return table
    storage.write_parquet(out / f"coverage-{method}.parquet", table)
    summary = {
        "method": method,
        "truths": truths,
        "budget": budget,
        "population": POPULATION if method == "abc-smc" else None,
        "seed": seed,
        "coverage": table.groupby("parameter")["covered"].mean().to_dict(),
        "coverage_all": float(table["covered"].mean()),
        "mean_width_ratio": table.groupby("parameter")["width_ratio"].mean().to_dict(),
    }
    storage.write_text(out / f"coverage-{method}.json", json.dumps(summary, indent=1))
    return table


def _effective_sample_size(posterior: pd.DataFrame) -> float:
    """Kish's effective sample size of a weighted posterior, 1 / sum(w^2) for weights that sum
    to 1 (as the methods report it); the draws' count for an unweighted one."""
    if "weight" not in posterior:
        return float(len(posterior))
    w = posterior["weight"].to_numpy(dtype=float)
    w = w / w.sum()
    return float(1.0 / np.sum(w**2))
