"""What a calibration says, in words and figures: ``report.md``, the posterior pair plot, the
posterior predictive against the observed values, and stress predictions over the posterior
(``contagion calibrate --predict STRESS.toml``).

Conventions (docs/calibration.md):

* Intervals are central 90% intervals of the (weighted) posterior: 5% and 95% quantiles.
* Identifiability: a parameter's 90% interval as a fraction of its prior's 90% interval, both
  on the scale its prior is uniform on (log for log priors). Below 0.5 the targets pin it
  down, above 0.8 they leave it free, in between they constrain it partly.
* Correlations: weighted Pearson correlations of the posterior on the same scales; a strong
  one (|r| >= 0.5) is a trade-off the targets cannot resolve (a ridge of equally good values).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.calibrate import CalibrationSpec, RunStore, posterior_predictive
from model import storage
from model.config import apply_overrides, build_config, build_section, read_toml
from model.config import spec as setting
from model.errors import ConfigError

__all__ = [
    "StressTable",
    "identifiability",
    "load_stress",
    "predictive_summary",
    "run_stress",
    "stress_summary",
    "weighted_quantile",
    "write_report",
]

STRESS_METRICS = (
    "fraction_liquidated",
    "liquidated_share",
    "max_drawdown",
    "bad_debt",
    "unfunded_bad_debt",
    "adl_notional",
    "adl_share",
    "insurance_fund_change",
)


def weighted_quantile(x: np.ndarray, q, w: np.ndarray | None = None) -> np.ndarray:
    """Quantiles of ``x`` under weights ``w`` (the inverse of the weighted empirical CDF with
    midpoint interpolation; equal weights give numpy's 'hazen' quantiles)."""
    x = np.asarray(x, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    keep = np.isfinite(x)
    x, w = x[keep], w[keep]
    if x.size == 0:
        return np.full(np.shape(q), np.nan)
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, cdf, x)


def _weights(posterior: pd.DataFrame) -> np.ndarray:
    if "weight" in posterior:
        return posterior["weight"].to_numpy(dtype=float)
    return np.ones(len(posterior))


def identifiability(spec: CalibrationSpec, posterior: pd.DataFrame) -> pd.DataFrame:
    """Per parameter: median, 90% interval, interval / prior interval, verdict."""
    w = _weights(posterior)
    rows = []
    for p in spec.priors:
        x = posterior[p.key].to_numpy(dtype=float)
        lo, med, hi = weighted_quantile(x, [0.05, 0.5, 0.95], w)
        u_lo, u_hi = p.unit(np.array([lo, hi]))
        ratio = float((u_hi - u_lo) / 0.9)
        verdict = "pinned down" if ratio < 0.5 else "left free" if ratio > 0.8 else "partly"
        rows.append(
            {
                "parameter": p.key,
                "prior": f"[{p.low:g}, {p.high:g}]" + (" log" if p.log else ""),
                "median": med,
                "q05": lo,
                "q95": hi,
                "width_ratio": ratio,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def correlations(spec: CalibrationSpec, posterior: pd.DataFrame) -> pd.DataFrame:
    """Weighted correlation matrix of the posterior on the priors' uniform scales."""
    w = _weights(posterior)
    u = np.column_stack([p.unit(posterior[p.key].to_numpy(dtype=float)) for p in spec.priors])
    keys = spec.keys
    if len(keys) < 2:
        return pd.DataFrame(np.ones((1, 1)), index=keys, columns=keys)
    c = np.cov(u.T, aweights=w)
    sd = np.sqrt(np.maximum(np.diag(c), 1e-300))
    return pd.DataFrame(c / np.outer(sd, sd), index=keys, columns=keys)


def predictive_summary(spec: CalibrationSpec, predictive: pd.DataFrame) -> pd.DataFrame:
    """Per target: observed, predictive median and 90% interval, and whether the observed
    value (or band) meets the interval."""
    rows = []
    for t in spec.targets:
        x = (
            predictive[t.metric].to_numpy(dtype=float)
            if t.metric in predictive
            else np.array([np.nan])
        )
        lo, med, hi = weighted_quantile(x, [0.05, 0.5, 0.95])
        rows.append(
            {
                "target": t.metric,
                "observed": t.shown(),
                "median": med,
                "q05": lo,
                "q95": hi,
                "consistent": bool(hi >= t.low and lo <= t.high),
            }
        )
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def _table(df: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for _, row in df.iterrows():
        cells = [_fmt(v) if isinstance(v, float) else str(v) for v in row[columns]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(
    out: Path, spec: CalibrationSpec, posterior: pd.DataFrame, predictive: pd.DataFrame, info: dict
) -> Path:
    """report.md, pairs.png and predictive.png of a finished calibration."""
    ident = identifiability(spec, posterior)
    pred = predictive_summary(spec, predictive)
    corr = correlations(spec, posterior)
    lines = [
        f"# Calibration {spec.name}",
        "",
        f"Method: {info.get('method', spec.method)}. Seed {spec.seed}; {info.get('runs', 0)} "
        f"model runs of a budget of {spec.budget}, then {len(predictive)} posterior-predictive "
        f"runs. Posterior: {len(posterior)} draws (effective sample size "
        f"{info.get('ess', float('nan')):.0f}).",
    ]
    if "generations" in info:
        eps = ", ".join(f"{e:.3g}" for e in info.get("epsilons", []))
        lines.append(f"Generations: {info['generations']}; epsilon by generation: {eps}.")
    lines += ["", "## Parameters: 90% intervals and what the targets pin down", ""]
    lines += _table(ident, list(ident.columns))
    lines += [
        "",
        "width_ratio: the 90% interval over the prior's 90% interval on the prior's scale "
        "(log for log priors); below 0.5 the targets pin the parameter down, above 0.8 they "
        "leave it free.",
        "",
        "## Correlations (posterior, prior scales)",
        "",
    ]
    strong = [
        f"- {a} and {b}: r = {corr.loc[a, b]:+.2f} (a trade-off the targets do not resolve)"
        for i, a in enumerate(corr.index)
        for b in corr.index[i + 1 :]
        if abs(corr.loc[a, b]) >= 0.5
    ]
    lines += strong or ["No pair with |r| >= 0.5."]
    lines += ["", "## Posterior predictive against the targets", ""]
    lines += _table(pred, list(pred.columns))
    lines += ["", "Figures: pairs.png (posterior), predictive.png (predictive against observed)."]
    if "driver_cpu_seconds" in info:
        drv, wrk = info["driver_cpu_seconds"], info["worker_cpu_seconds"]
        n = max(info.get("runs_computed", info.get("runs", 0) + len(predictive)), 1)
        share = drv / max(drv + wrk, 1e-9)
        lines += [
            "",
            "## Time",
            "",
            f"{info['wall_seconds']:.0f} s wall on {info['workers']} worker(s). CPU: {wrk:.0f} s "
            f"in worker processes, {drv:.0f} s in the driver (the method and the records; the "
            f"runs too when it is the only worker); {(drv + wrk) / n:.2f} s per run computed "
            f"({n}; runs read back from disk on --resume cost nothing)."
            + (
                f" With workers, the driver's share is the method's: {100 * share:.0f}%; "
                f"{'the model runs' if share < 0.5 else 'the method'} dominated."
                if wrk > 0
                else ""
            ),
        ]
    elif "wall_seconds" in info:
        wall, runs, workers = info["wall_seconds"], info.get("run_seconds", 0.0), info["workers"]
        lines += [
            "",
            "## Time",
            "",
            f"{wall:.0f} s wall on {workers} worker(s); the model runs took {runs:.0f} s of "
            f"compute ({runs / max(workers, 1):.0f} s of wall at full use of the workers), so "
            f"{'the model runs' if runs / max(workers, 1) > 0.5 * wall else 'the method'} "
            "dominated.",
        ]
    storage.write_text(out / "report.md", "\n".join(lines) + "\n")
    _draw(out, spec, posterior, predictive)
    return out / "report.md"


def _draw(out: Path, spec: CalibrationSpec, posterior: pd.DataFrame, predictive: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    d = len(spec.priors)
    fig, axes = plt.subplots(d, d, figsize=(2.6 * d + 1, 2.6 * d + 1), squeeze=False)
    w = _weights(posterior)
    for i, pi in enumerate(spec.priors):
        for j, pj in enumerate(spec.priors):
            ax = axes[i, j]
            xi = posterior[pi.key].to_numpy(dtype=float)
            xj = posterior[pj.key].to_numpy(dtype=float)
            if i == j:
                bins = (
                    np.geomspace(pi.low, pi.high, 30)
                    if pi.log
                    else np.linspace(pi.low, pi.high, 30)
                )
                ax.hist(xi, bins=bins, weights=w, color="tab:blue")
            elif i > j:
                ax.scatter(xj, xi, s=4, alpha=0.4, c="tab:blue")
                ax.set_ylim(pi.low, pi.high)
            else:
                ax.axis("off")
                continue
            ax.set_xlim(pj.low, pj.high)
            if pj.log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            if pi.log and i != j:
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=7)
            if i == d - 1:
                ax.set_xlabel(pj.key, fontsize=8)
            if j == 0 and i != j:
                ax.set_ylabel(pi.key, fontsize=8)
    fig.suptitle(f"{spec.name}: posterior (axes span the prior)")
    fig.tight_layout()
    storage.atomic_write(out / "pairs.png", lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)
    k = len(spec.targets)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    for ax, t in zip(axes.flat, spec.targets, strict=False):
        if t.metric in predictive:
            ax.hist(predictive[t.metric].dropna(), bins=25, color="tab:gray")
        if t.is_band:
            ax.axvspan(t.low, t.high, color="tab:red", alpha=0.3, label="observed band")
        else:
            ax.axvline(t.low, color="tab:red", lw=2, label="observed")
        ax.set_title(t.metric, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{spec.name}: posterior predictive against observed")
    fig.tight_layout()
    storage.atomic_write(out / "predictive.png", lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Stress prediction
# --------------------------------------------------------------------------------------------


@dataclass
class StressTable:
    """The ``[stress]`` table of a stress file: a new shock (or any overrides) run over
    posterior draws."""

    name: str | None = setting(None, doc="the stress's name (default: the file's)", min_len=1)
    draws: int = setting(200, doc="posterior draws to run it at", ge=1, le=1_000_000)
    set: dict[str, Any] = setting(
        factory=dict, doc="overrides applied on top of each draw, e.g. shocks = [...]"
    )


def load_stress(path: str | Path, spec: CalibrationSpec) -> StressTable:
    """Read and validate a stress file against the calibration's base config."""
    from experiments.sweep import _flatten

    path = Path(path)
    data = read_toml(path)
    if not isinstance(data.get("stress"), dict):
        raise ConfigError(f"{path}: no [stress] table")
    extra = sorted(set(data) - {"stress"})
    if extra:
        raise ConfigError(f"{extra[0]}: unknown top-level key in a stress file (only [stress])")
    st = build_section(StressTable, data["stress"], "stress")
    st.name = st.name or path.stem
    flat = {k: v for k, v in _flatten(st.set).items() if k != "shocks"}
    if "shocks" in st.set:
        flat["shocks"] = st.set["shocks"]
    st.set = flat
    try:
        build_config(apply_overrides(spec.base, flat), base_dir=spec.base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: stress.set: {exc}") from None
    return st


def stress_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per stress metric of a stress table (stress.parquet): 5%, 50% and 95% quantiles over
    the runs and the share of runs above zero (above rounding: a millionth of quote), the
    table of stress.md. Quantiles, not means: a run whose price hit its floor can have
    absurd amounts."""
    rows = []
    for m in STRESS_METRICS:
        if m not in table:
            continue
        x = table[m].to_numpy(dtype=float)
        q05, q50, q95 = weighted_quantile(x, [0.05, 0.5, 0.95])
        rows.append(
            {"metric": m, "q05": q05, "median": q50, "q95": q95, "P(> 0)": float(np.mean(x > 1e-6))}
        )
    return pd.DataFrame(rows)


def run_stress(
    spec: CalibrationSpec, stress: StressTable, store: RunStore, posterior: pd.DataFrame, out: Path
) -> Path:
    """Run the stress at posterior draws; write stress-<name>/ (table, report, figure)."""
    tag = 10_000 + zlib.crc32(stress.name.encode()) % 1_000_000
    table = posterior_predictive(
        spec, store, posterior, stress.draws, f"stress-{stress.name}", stress.set, tag
    )
    folder = out / f"stress-{stress.name}"
    folder.mkdir(exist_ok=True)
    storage.write_parquet(folder / "stress.parquet", table)
    summary = stress_summary(table)
    shown = ", ".join(f"{k} = {v!r}" for k, v in stress.set.items())
    warned = int((table.get("n_warnings", pd.Series(0, index=table.index)) > 0).sum())
    lines = [
        f"# Stress {stress.name} over the posterior of {spec.name}",
        "",
        f"Overrides: {shown}. {len(table)} runs at posterior draws (resampled by weight), each "
        f"with its own seed; {int((table['status'] != 'ok').sum())} failed, {warned} ended with "
        "engine warnings (a price at its floor or ceiling: the book too thin for the forced "
        "flow; their amounts can be absurd, so the table shows quantiles, not means).",
        "",
        *_table(summary, list(summary.columns)),
        "",
        "The spread combines parameter uncertainty (the posterior) and the run-to-run noise of "
        "the model at fixed parameters. Figure: stress.png.",
    ]
    storage.write_text(folder / "stress.md", "\n".join(lines) + "\n")
    _draw_stress(folder, stress, table)
    return folder


def _draw_stress(folder: Path, stress: StressTable, table: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        m for m in ("fraction_liquidated", "max_drawdown", "bad_debt", "adl_notional") if m in table
    ]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.0), squeeze=False)
    for ax, m in zip(axes[0], shown, strict=True):
        ax.hist(table[m].dropna(), bins=25, color="tab:purple")
        ax.set_title(m, fontsize=9)
    fig.suptitle(f"stress {stress.name}: distribution over posterior draws")
    fig.tight_layout()
    storage.atomic_write(folder / "stress.png", lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)
