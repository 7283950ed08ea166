"""Figures of a run folder or a sweep folder (``contagion plot DIR``), drawn with seaborn.

A sweep folder (``sweep.json`` + ``runs.parquet``) gets, depending on what it swept:

* ``phase_diagram``: heatmaps of the fraction of accounts liquidated and of the amplification
  (endogenous over exogenous price fall) over leverage x volatility, one panel per margin mode;
* ``metrics_vs_leverage``: metrics against leverage, mean and 95% bootstrap interval across
  replicates;
* ``cascade_ccdf``: the complementary CDF of cascade sizes (accounts liquidated in one step)
  on log-log axes, per leverage level and margin mode;
* ``cross_vs_isolated``: the two margin modes side by side, including the liquidations in
  assets that were not shocked (cross-asset contagion), and ``cross_minus_isolated``: the paired
  difference (same replicate, same random stream) as a diverging heatmap, to see where it flips;
* ``sobol_indices`` for a ``saltelli`` sweep (needs SALib), and ``metric_scatter`` for the other
  sampled sweeps.

A run folder gets ``price_paths``: each asset's price and fundamental with the liquidations
marked, the liquidated notional per step, and the run's cascade-size CCDF.

Every figure is written as PNG and SVG under ``DIR/figures/``. Figures are built on
``matplotlib.figure.Figure`` objects (no pyplot state), so plotting is safe in any process.
Plotting again removes the figures (of :data:`FIGURE_NAMES`) it no longer draws, so the folder
never shows a figure of an earlier state of the sweep. An unfinished sweep is drawn from the
runs finished so far, with a warning saying how many of how many.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from model import storage
from model.errors import UsageError

__all__ = [
    "FIGURE_NAMES",
    "cascade_ccdf",
    "ccdf",
    "cross_vs_isolated",
    "metrics_vs_leverage",
    "phase_diagram",
    "plot_folder",
    "plot_run",
    "plot_sweep",
    "price_paths",
    "remove_stale_figures",
]

LEVERAGE, VOLATILITY, MODE = "traders.leverage", "market.volatility", "margin.mode"
LABELS = {
    LEVERAGE: "mean initial leverage",
    VOLATILITY: "annualised volatility",
    MODE: "margin mode",
    "fraction_liquidated": "fraction of accounts liquidated",
    "amplification": "amplification (price / fundamental fall)",
    "bad_debt": "bad debt",
    "largest_cascade": "largest cascade (accounts)",
    "liquidated_notional": "liquidated notional",
    "max_drawdown": "worst drawdown",
    "shocks.0.return": "shock to BTC",
    "traders.long_fraction": "fraction of positions long",
    "market.impact_exponent": "impact exponent",
    "market.resilience": "impact resilience",
    "assets.BTC.depth": "BTC 1% depth",
    "margin.buffer": "partial-liquidation buffer",
}
MODE_COLORS = {"cross": "#c0392b", "isolated": "#2471a3"}
# Every figure plot_folder draws (under DIR/figures/, as .png and .svg).
FIGURE_NAMES = (
    "phase_diagram",
    "metrics_vs_leverage",
    "cascade_ccdf",
    "cross_vs_isolated",
    "cross_minus_isolated",
    "sobol_indices",
    "metric_scatter",
    "price_paths",
)
FIGURE_FORMATS = ("png", "svg")


def _label(key: str) -> str:
    return LABELS.get(key, key)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _heatmap(data, **kwargs):
    """seaborn.heatmap, quiet about seaborn's own use of a deprecated matplotlib call."""
    import seaborn as sns

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The set_bad function", category=Warning)
        return sns.heatmap(data, **kwargs)


def _save(fig, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in FIGURE_FORMATS:
        path = folder / f"{name}.{ext}"
        dpi = 130 if ext == "png" else None
        storage.atomic_write(path, lambda p, ext=ext, dpi=dpi: fig.savefig(p, dpi=dpi, format=ext))
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------
# Sweep figures
# --------------------------------------------------------------------------------------------


def _numeric_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    return [
        k
        for k in keys
        if pd.api.types.is_numeric_dtype(runs[k]) and not pd.api.types.is_bool_dtype(runs[k])
    ]


def _binned(runs: pd.DataFrame, key: str, bins: int = 8) -> pd.Series:
    """A sampled (continuous) key as bins labelled by their median value; grid keys as is."""
    col = runs[key]
    if col.nunique() <= 12:
        return col
    codes = pd.qcut(col, bins, labels=False, duplicates="drop")
    med = col.groupby(codes).median()
    return codes.map(med).round(3)


def phase_diagram(
    runs: pd.DataFrame,
    x: str = LEVERAGE,
    y: str = VOLATILITY,
    panel: str | None = MODE,
    metrics=("fraction_liquidated", "amplification"),
    stats=("mean", "median"),
):
    """Heatmaps of each metric over x and y, one column per value of ``panel``.

    Each cell pools the replicates and the values of keys other than x, y and panel, with the
    matching statistic of ``stats``: the mean for fractions; the median for amplification, a
    ratio of two falls that explodes in the odd run whose fundamental barely fell.
    """

    ok = runs[runs["status"] == "ok"].copy()
    ok[x], ok[y] = _binned(ok, x), _binned(ok, y)
    panels = list(pd.unique(ok[panel])) if panel else [None]
    fig = _new_figure(4.2 * len(panels) + 0.8, 3.4 * len(metrics))
    axes = fig.subplots(len(metrics), len(panels), squeeze=False)
    for i, (metric, stat) in enumerate(zip(metrics, stats, strict=True)):
        tables = []
        for p in panels:
            sub = ok if p is None else ok[ok[panel] == p]
            table = sub.pivot_table(index=y, columns=x, values=metric, aggfunc=stat)
            tables.append(table.sort_index(ascending=False))
        vmin = min(float(np.nanmin(t.to_numpy())) for t in tables)
        vmax = max(float(np.nanmax(t.to_numpy())) for t in tables)
        for j, (p, table) in enumerate(zip(panels, tables, strict=True)):
            ax = axes[i, j]
            _heatmap(
                table,
                ax=ax,
                vmin=vmin,
                vmax=vmax,
                cmap="rocket_r" if metric != "amplification" else "mako_r",
                annot=table.shape[1] <= 10 and table.shape[0] <= 10,
                fmt=".2f",
                annot_kws={"fontsize": 7},
                cbar=j == len(panels) - 1,
                cbar_kws={"label": f"{stat} {_label(metric)}"},
            )
            ax.set_xlabel(_label(x))
            ax.set_ylabel(_label(y) if j == 0 else "")
            ax.set_xticklabels([_fmt(v) for v in table.columns], rotation=0)
            ax.set_yticklabels([_fmt(v) for v in table.index], rotation=0)
            title = f"{_label(metric)}, {stat}"
            title += f"\n{_label(panel)}: {p}" if p is not None else ""
            ax.set_title(title, fontsize=10)
    return fig


def metrics_vs_leverage(
    runs: pd.DataFrame,
    x: str = LEVERAGE,
    hue: str | None = MODE,
    facet: str | None = VOLATILITY,
    metrics=("fraction_liquidated", "amplification", "largest_cascade", "bad_debt"),
    max_facets: int = 3,
):
    """Each metric against ``x``: mean and 95% bootstrap interval across replicates.

    Columns are up to ``max_facets`` values of ``facet`` (lowest, middle, highest); lines are
    the values of ``hue``.
    """
    import seaborn as sns

    ok = runs[runs["status"] == "ok"].copy()
    ok[x] = _binned(ok, x)
    cols = [None]
    if facet and facet in ok:
        ok[facet] = _binned(ok, facet)
        values = sorted(pd.unique(ok[facet]))
        if len(values) > max_facets:
            values = [values[0], values[len(values) // 2], values[-1]]
        cols = values
    fig = _new_figure(3.6 * len(cols) + 1.2, 2.7 * len(metrics))
    axes = fig.subplots(len(metrics), len(cols), squeeze=False, sharex=True)
    palette = MODE_COLORS if hue == MODE else "viridis"
    for i, metric in enumerate(metrics):
        for j, c in enumerate(cols):
            sub = ok if c is None else ok[ok[facet] == c]
            ax = axes[i, j]
            sns.lineplot(
                data=sub,
                x=x,
                y=metric,
                hue=hue if hue in sub else None,
                palette=palette if hue in sub else None,
                errorbar=("ci", 95),
                n_boot=1000,
                seed=0,
                marker="o",
                markersize=4,
                ax=ax,
                legend=(i == 0 and j == len(cols) - 1),
            )
            if x == LEVERAGE:
                ax.set_xscale("log")
                ticks = sorted(pd.unique(sub[x]))
                ax.set_xticks(ticks, [_fmt(t) for t in ticks])
                ax.minorticks_off()
            ax.set_ylabel(_label(metric) if j == 0 else "")
            ax.set_xlabel(_label(x) if i == len(metrics) - 1 else "")
            if i == 0 and c is not None:
                ax.set_title(f"{_label(facet)} = {_fmt(c)}", fontsize=10)
    fig.suptitle("mean and 95% interval across replicates", fontsize=10)
    return fig


def ccdf(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical complementary CDF: distinct sizes s and P(S >= s)."""
    sizes = np.sort(np.asarray(sizes))
    if sizes.size == 0:
        return np.zeros(0), np.zeros(0)
    values, first = np.unique(sizes, return_index=True)
    return values, 1.0 - first / sizes.size


def cascade_ccdf(
    cascades: pd.DataFrame, runs: pd.DataFrame, hue: str = LEVERAGE, panel: str | None = MODE
):
    """CCDF of cascade sizes on log-log axes, one line per value of ``hue``, one panel per
    value of ``panel``; cascades pooled over the replicates and the other keys."""
    import seaborn as sns

    keys = [k for k in (hue, panel) if k and k in runs]
    merged = cascades.merge(
        runs[["point", "replicate", *keys]].drop_duplicates(), on=["point", "replicate"]
    )
    if hue in merged:
        merged[hue] = _binned(merged, hue)
    panels = list(pd.unique(runs[panel])) if panel and panel in runs else [None]
    fig = _new_figure(4.3 * len(panels) + 0.6, 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    levels = sorted(pd.unique(merged[hue])) if hue in merged else [None]
    colors = sns.color_palette("viridis", len(levels))
    for ax, p in zip(axes, panels, strict=True):
        sub = merged if p is None else merged[merged[panel] == p]
        for color, level in zip(colors, levels, strict=True):
            s = sub["size"] if level is None else sub.loc[sub[hue] == level, "size"]
            xs, ps = ccdf(s.to_numpy())
            if xs.size:
                label = None if level is None else _fmt(level)
                ax.step(xs, ps, where="post", color=color, label=label, lw=1.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cascade size (accounts liquidated in one step)")
        ax.set_title(f"{_label(panel)}: {p}" if p is not None else "", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("P(size >= s)")
    if levels != [None]:
        axes[-1].legend(title=_label(hue), fontsize=7, title_fontsize=8)
    return fig


def _shocked_assets(meta: dict) -> tuple[list[str], list[str]]:
    """(shocked, not shocked) asset symbols of the sweep's base config."""
    symbols = [a["symbol"] for a in meta["base"].get("assets", [])]
    shocked = {s["asset"] for s in meta["base"].get("shocks", [])}
    return [s for s in symbols if s in shocked], [s for s in symbols if s not in shocked]


def cross_vs_isolated(runs: pd.DataFrame, meta: dict, x: str = LEVERAGE, facet: str | None = None):
    """Cross and isolated margin side by side: liquidations, and contagion into the assets
    that were not shocked. Columns: values of ``facet`` (another swept key), if any."""
    _, calm = _shocked_assets(meta)
    metrics = ["fraction_liquidated"]
    ok = runs[runs["status"] == "ok"].copy()
    for s in calm:
        col = f"liquidated_notional_{s}"
        if col in ok:
            ok[f"{s} liquidated notional ($M)"] = ok[col] / 1e6
            metrics.append(f"{s} liquidated notional ($M)")
        if f"amplification_{s}" in ok:
            metrics.append(f"amplification_{s}")
            LABELS.setdefault(f"amplification_{s}", f"{s} amplification")
    return metrics_vs_leverage(ok, x=x, hue=MODE, facet=facet, metrics=metrics, max_facets=4)


def paired_difference(runs: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Cross minus isolated, run by run: same point otherwise and same replicate (so, with
    common random numbers, the same random stream). Returns keys + replicate + difference."""
    ok = runs[runs["status"] == "ok"]
    other = [k for k in keys if k != MODE]
    idx = [*other, "replicate"]
    cross = ok[ok[MODE] == "cross"].set_index(idx)[metric]
    iso = ok[ok[MODE] == "isolated"].set_index(idx)[metric]
    diff = (cross - iso).dropna().rename("difference").reset_index()
    return diff


def cross_minus_isolated(runs: pd.DataFrame, meta: dict, x: str = LEVERAGE, y: str | None = None):
    """Diverging heatmaps of the mean paired difference cross - isolated (red: cross worse)."""

    _, calm = _shocked_assets(meta)
    metrics = ["fraction_liquidated"] + [
        f"liquidated_notional_{s}" for s in calm if f"liquidated_notional_{s}" in runs
    ]
    keys = meta["keys"]
    fig = _new_figure(4.6 * len(metrics), 3.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        d = paired_difference(runs, metric, keys)
        scale = 1e6 if metric.startswith("liquidated_notional") else 1.0
        d["difference"] /= scale
        d[x] = _binned(d, x)
        if y and y in d:
            d[y] = _binned(d, y)
            table = d.pivot_table(index=y, columns=x, values="difference", aggfunc="mean")
            table = table.sort_index(ascending=False)
        else:
            table = d.groupby(x)["difference"].mean().to_frame().T
        lim = float(np.nanmax(np.abs(table.to_numpy()))) or 1.0
        _heatmap(
            table,
            ax=ax,
            cmap="RdBu_r",
            center=0.0,
            vmin=-lim,
            vmax=lim,
            annot=table.shape[1] <= 10,
            fmt=".2f" if scale == 1 else ".1f",
            annot_kws={"fontsize": 7},
            cbar_kws={"label": "cross - isolated" + (" ($M)" if scale != 1 else "")},
        )
        ax.set_xticklabels([_fmt(v) for v in table.columns], rotation=0)
        ax.set_yticklabels([_fmt(v) for v in table.index], rotation=0)
        ax.set_xlabel(_label(x))
        ax.set_ylabel(_label(y) if y else "")
        name = _label(metric).replace("liquidated_notional_", "liquidated notional, ")
        ax.set_title(f"{name}\ncross - isolated (paired runs)", fontsize=10)
    return fig


def metric_scatter(runs: pd.DataFrame, keys: list[str], metric: str = "fraction_liquidated"):
    """Point means of ``metric`` against each sampled key (for lhs/sobol/random sweeps)."""
    import seaborn as sns

    ok = runs[runs["status"] == "ok"]
    means = ok.groupby("point")[[*keys, metric]].mean(numeric_only=True)
    numeric = [k for k in keys if k in means]
    ncol = min(4, len(numeric))
    nrow = -(-len(numeric) // ncol)
    fig = _new_figure(3.2 * ncol, 2.8 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, key in zip(axes, numeric, strict=False):
        sns.scatterplot(data=means, x=key, y=metric, s=10, alpha=0.6, ax=ax, linewidth=0)
        ax.set_xlabel(_label(key))
        ax.set_ylabel(_label(metric))
    for ax in axes[len(numeric) :]:
        ax.set_visible(False)
    return fig


def sobol_bars(table: pd.DataFrame, metrics: list[str] | None = None):
    """First-order and total Sobol indices with 95% intervals, one panel per metric (and per
    grid combination, for a sweep that crosses its design with grid keys).

    Every panel lists the knobs in one order: by total index in the first panel, largest on top.
    """
    value_cols = {"parameter", "S1", "S1_conf", "ST", "ST_conf"}
    group_cols = [c for c in table.columns if c not in value_cols]
    if metrics is not None:
        table = table[table["metric"].isin(metrics)]
    groups = list(table.groupby(group_cols, sort=False))
    first = groups[0][1].set_index("parameter")
    order = list(first["ST"].sort_values().index)  # bottom to top
    fig = _new_figure(4.8 * len(groups), 0.45 * len(order) + 1.6)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    pos = np.arange(len(order))
    for ax, (key, t) in zip(axes, groups, strict=True):
        t = t.set_index("parameter").loc[order]
        ax.barh(pos + 0.2, t["ST"], 0.4, xerr=t["ST_conf"], color="#7f8c8d", label="total ST")
        ax.barh(pos - 0.2, t["S1"], 0.4, xerr=t["S1_conf"], color="#e67e22", label="first S1")
        ax.axvline(0, color="black", lw=0.6)
        key = key if isinstance(key, tuple) else (key,)
        labels = dict(zip(group_cols, key, strict=True))
        title = _label(labels.pop("metric"))
        title += "".join(f"\n{_label(k)}: {_fmt(v)}" for k, v in labels.items())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("Sobol index")
    axes[0].set_yticks(pos, [_label(p) for p in order])
    axes[-1].legend(fontsize=8, loc="lower right")
    return fig


def plot_sweep(sweep_dir: str | Path) -> list[Path]:
    """Draw every figure that fits the sweep's keys; returns the files written."""
    from experiments.sweep import CASCADES_TABLE, SWEEP_FILE, read_runs

    sweep_dir = Path(sweep_dir)
    meta = storage.read_json(sweep_dir / SWEEP_FILE)
    runs = read_runs(sweep_dir)
    if not len(runs) or not (runs["status"] == "ok").any():
        raise UsageError(f"{sweep_dir}: no finished runs to plot")
    _warn_partial(sweep_dir, meta, runs)
    keys = meta["keys"]
    figs = sweep_dir / "figures"
    out: list[Path] = []
    numeric = _numeric_keys(runs, keys)
    x = LEVERAGE if LEVERAGE in numeric else (numeric[0] if numeric else None)
    rest = [k for k in numeric if k != x]
    y = VOLATILITY if VOLATILITY in rest else (rest[0] if rest else None)
    has_modes = MODE in keys and set(runs[MODE]) >= {"cross", "isolated"}
    panel = MODE if MODE in keys else None
    sampled = meta["sampler"] != "grid"

    if meta["sampler"] == "saltelli":
        out += _sobol_figure(sweep_dir, figs)
    if sampled:
        out += _save(metric_scatter(runs, list(meta["ranges"])), figs, "metric_scatter")
    if x and y and not meta["sampler"] == "saltelli":
        out += _save(phase_diagram(runs, x, y, panel), figs, "phase_diagram")
    if x and not meta["sampler"] == "saltelli":
        out += _save(metrics_vs_leverage(runs, x, panel, y), figs, "metrics_vs_leverage")
    cascades_path = sweep_dir / CASCADES_TABLE
    if cascades_path.exists() and x:
        cascades = storage.read_parquet(cascades_path)
        if len(cascades):
            out += _save(cascade_ccdf(cascades, runs, x, panel), figs, "cascade_ccdf")
    if has_modes and x:
        out += _save(cross_vs_isolated(runs, meta, x, y), figs, "cross_vs_isolated")
        out += _save(cross_minus_isolated(runs, meta, x, y), figs, "cross_minus_isolated")
    if "sobol_indices.csv" not in {p.name for p in out}:
        (sweep_dir / "sobol_indices.csv").unlink(missing_ok=True)
    return out


def _warn_partial(sweep_dir: Path, meta: dict, runs: pd.DataFrame) -> None:
    """Warn when the figures draw fewer runs than the sweep plans: it is unfinished, or some
    runs failed (``drawing 7 of 16 runs: the sweep is incomplete``)."""
    from experiments.sweep import INCOMPLETE_MARKER

    total = len(meta["points"]) * int(meta["replicates"])
    drawn = int((runs["status"] == "ok").sum())
    failed = len(runs) - drawn
    why = []
    if len(runs) < total or (sweep_dir / INCOMPLETE_MARKER).exists():
        why.append("the sweep is incomplete")
    if failed:
        why.append(f"{failed} failed")
    if why:
        warnings.warn(f"drawing {drawn} of {total} runs: {', '.join(why)}", stacklevel=3)


def remove_stale_figures(folder: Path, drawn: list[Path]) -> list[Path]:
    """Remove the figures of :data:`FIGURE_NAMES` under ``folder/figures`` that this plot did
    not draw (left by an earlier plot); other files there are the user's and stay."""
    keep = {p.name for p in drawn}
    removed = []
    for name in FIGURE_NAMES:
        for ext in FIGURE_FORMATS:
            path = folder / "figures" / f"{name}.{ext}"
            if path.name not in keep and path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def _sobol_figure(sweep_dir: Path, figs: Path) -> list[Path]:
    from experiments.sensitivity import sobol_table

    try:
        import SALib  # noqa: F401
    except ImportError:
        warnings.warn(
            "Sobol indices skipped: needs the optional package SALib "
            "(pip install 'margin-contagion[sensitivity]')",
            RuntimeWarning,
            stacklevel=2,
        )
        return []
    metrics = ["fraction_liquidated", "largest_cascade", "max_drawdown", "amplification"]
    try:
        table = sobol_table(sweep_dir, metrics)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    storage.atomic_write(sweep_dir / "sobol_indices.csv", lambda p: table.to_csv(p, index=False))
    # amplification is in the table but not the figure: a ratio of two falls, heavy-tailed, its
    # indices need far more samples than the others to settle
    fig = sobol_bars(table, metrics[:3])
    return [sweep_dir / "sobol_indices.csv", *_save(fig, figs, "sobol_indices")]


# --------------------------------------------------------------------------------------------
# Run figures
# --------------------------------------------------------------------------------------------


def price_paths(market: pd.DataFrame, liquidations: pd.DataFrame):
    """Per asset: price and fundamental with liquidations marked (area ~ notional), and the
    liquidated notional per step; plus the run's cascade-size CCDF."""
    symbols = list(pd.unique(market["asset"].astype(str)))
    fig = _new_figure(4.6 * len(symbols) + 3.4, 6.0)
    grid = fig.add_gridspec(
        2, len(symbols) + 1, height_ratios=[2.2, 1], width_ratios=[1] * len(symbols) + [0.75]
    )
    liq = liquidations.copy()
    liq["asset"] = liq["asset"].astype(str)
    per_step = liq.groupby(["asset", "step"])["notional"].sum()
    top = None
    for j, s in enumerate(symbols):
        m = market[market["asset"].astype(str) == s]
        ax = fig.add_subplot(grid[0, j], sharex=top)
        top = top or ax
        ax.plot(m["step"], m["fundamental"], color="#95a5a6", lw=1.0, label="fundamental")
        ax.plot(m["step"], m["price"], color="#2c3e50", lw=1.1, label="price")
        if s in per_step.index.get_level_values(0):
            ps = per_step.loc[s]
            price_at = m.set_index("step")["price"].reindex(ps.index)
            size = 8 + 120 * np.sqrt(ps / ps.max())
            ax.scatter(
                ps.index,
                price_at,
                s=size,
                color="#c0392b",
                alpha=0.55,
                lw=0,
                label="liquidations (area ~ notional)",
            )
        ax.set_title(s, fontsize=10)
        ax.set_ylabel("price")
        if j == 0:
            ax.legend(fontsize=7, loc="best")
        bx = fig.add_subplot(grid[1, j], sharex=top)
        if s in per_step.index.get_level_values(0):
            ps = per_step.loc[s]
            bx.bar(ps.index, ps.to_numpy() / 1e6, width=1.0, color="#c0392b")
        bx.set_xlabel("step")
        bx.set_ylabel("liquidated ($M)")
    cx = fig.add_subplot(grid[:, -1])
    if len(liq):
        kinds = liq["kind"].astype(str) != "adl"
        sizes = liq[kinds].drop_duplicates(["step", "trader_id"]).groupby("step").size()
        xs, ps = ccdf(sizes.to_numpy())
        cx.step(xs, ps, where="post", color="#2c3e50")
        cx.set_xscale("log")
        cx.set_yscale("log")
    cx.set_xlabel("cascade size (accounts in one step)")
    cx.set_ylabel("P(size >= s)")
    cx.set_title("cascade sizes", fontsize=10)
    return fig


def plot_run(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    market = storage.read_parquet(run_dir / "market.parquet")
    liquidations = storage.read_parquet(run_dir / "liquidations.parquet")
    if not len(market):
        raise UsageError(f"{run_dir}: the run has no steps to plot")
    return _save(price_paths(market, liquidations), run_dir / "figures", "price_paths")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def plot_folder(folder: str | Path) -> list[Path]:
    """Draw the figures of a sweep folder or a run folder; returns the files written.

    Raises:
        UsageError: ``folder`` is neither, or is a run folder whose writer was interrupted.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    if (folder / "sweep.json").exists():
        drawn = plot_sweep(folder)
        remove_stale_figures(folder, drawn)
        return drawn
    if (folder / "market.parquet").exists() and (folder / "liquidations.parquet").exists():
        if (folder / ".incomplete").exists():
            raise UsageError(f"{folder}: run folder is incomplete (its writer was interrupted)")
        drawn = plot_run(folder)
        remove_stale_figures(folder, drawn)
        return drawn
    raise UsageError(
        f"{folder}: neither a sweep folder (sweep.json) nor a run folder (market.parquet)"
    )
