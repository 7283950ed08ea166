"""Check 6: stylized facts from the engine's own mechanisms (a constant-volatility fundamental).

``experiments/configs/endogenous.toml``: one asset whose fundamental is a geometric Brownian
motion (no GARCH, no jumps, no shock), leveraged accounts that are liquidated and come back,
market makers whose quotes are the book and who withdraw, value traders resting orders inside
the cascades, persistent noise flow, leverage targeting and momentum. The question is whether
those mechanisms make the returns cluster and their tails fat, which the baseline's returns owe
to its GARCH-t fundamental (check 5, docs/validation.md).

Variants (each the config with some keys changed; the same seeds for all):

* ``F``: the config as it is;
* ``C1``: ``traders.leverage = 1``, ``traders.leverage_dispersion = 0`` (the control; also
  ablation A1, leverage);
* ``A2`` withdrawal off: the makers' volatility, inventory, margin and ADL factors held at 1;
* ``A3`` refill: the makers' book refills exponentially (``market.resilience``) instead of as
  a power law;
* ``A4`` rules: every rule trader holds except the noise traders;
* ``A5`` buyers in the cascade: ``liquidity.value_orders = "before_rounds"``;
* ``A6`` re-entry: ``traders.reentry_steps = 0``.

Statistics: :func:`experiments.validation.stylized_facts.return_stats` of the per-step log
returns of the market price, after the first ``BURN_IN`` steps. The pass criteria are those
written in docs/validation.md before the check was first run (:func:`verdict`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.validation import check_result, figure_path, single_threaded_blas
from experiments.validation.stylized_facts import acf, return_stats

__all__ = [
    "ABLATIONS",
    "ABOUT_ZERO",
    "QUICK_PLAN",
    "CONFIG",
    "PREDICTIONS",
    "SEEDS",
    "endogenous_result",
    "endogenous_returns",
    "endogenous_run",
    "draw_facts",
    "full_plan",
    "run_endogenous",
    "run_plan",
    "run_variants",
    "score_ablations",
    "seed_table",
    "stat_cells",
    "verdict",
]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endogenous.toml"
SEEDS = (42, 43, 44, 45, 46)
BURN_IN = 1000
CONTROL = {"traders.leverage": 1.0, "traders.leverage_dispersion": 0.0}
ABLATIONS = {
    "F": {},
    "C1": CONTROL,
    "A2": {
        "liquidity.vol_exponent": 0.0,
        "liquidity.inventory_limit": 1.0e12,
        "liquidity.margin_pull": [1.0e6, 2.0e6],
        "liquidity.adl_sensitivity": 0.0,
    },
    "A3": {"liquidity.kernel": "exponential"},
    "A4": {"traders.strategies": {"hold": 0.8, "noise": 0.2}},
    "A5": {"liquidity.value_orders": "before_rounds"},
    "A6": {"traders.reentry_steps": 0},
}
STATS = ("excess kurtosis", "Hill index (top 5%)", "ACF(r, 1)", "ACF(|r|, 1)", "ACF(|r|, 50)")


def endogenous_returns(
    seed: int, overrides: dict | None = None, steps: int | None = None, config=CONFIG
):
    """Per-step log returns of the market price and of the fundamental, and run facts
    (``config``: check 6's file by default; check 6b passes its own)."""
    from model import ContagionModel, load_config

    over = {"seed": seed, **(overrides or {})}
    if steps is not None:
        over["steps"] = steps
    cfg = load_config(config, overrides=over)
    with single_threaded_blas():
        model = ContagionModel(cfg, create_agents=False).run()
    mk = model.market_history
    p0 = cfg.assets[0].price
    r = np.diff(np.log(np.concatenate([[p0], mk.price[:, 0]])))
    rf = np.diff(np.log(np.concatenate([[p0], mk.fundamental[:, 0]])))
    s = model.summary()
    info = {
        "accounts liquidated": s["accounts_liquidated"],
        "makers liquidated": s["makers_liquidated"],
        "adl notional": s["adl_notional"],
        "depth low": float(mk.depth[:, 0].min()),
        "depth median": float(np.median(mk.depth[:, 0])),
    }
    if cfg.liquidity.maker_reentry_steps:  # check 6b's makers come back
        info["makers reentered"] = model.liquidity.makers_reentered
    return r, rf, info


def impact_share(r, rf) -> float:
    """Share of the return variance carried by the impact part ``r - d log F``."""
    return float(np.var(r - rf) / np.var(r))


def _in_band(stats: dict) -> dict:
    return {
        "excess kurtosis": stats["excess kurtosis"] > 3.0,
        "Hill index (top 5%)": 2.0 <= stats["Hill index (top 5%)"] <= 4.0,
        "ACF(|r|, 1)": stats["ACF(|r|, 1)"] > 0.1,
        "ACF(|r|, 50)": stats["ACF(|r|, 50)"] > 0.0,
    }


def verdict(runs: pd.DataFrame, need: int = 4) -> dict:
    """The pre-registered criteria (docs/validation.md, check 6) on a table of runs.

    P1: in at least ``need`` seeds of F every band holds (kurtosis > 3, Hill 2-4,
    ACF(|r|,1) > 0.1, ACF(|r|,50) > 0) and the median over seeds of each is inside its band.
    P2: in at least ``need`` seeds of C1, ACF(|r|,1) <= 0.1 and (kurtosis <= 3 or Hill > 4).
    """
    f = runs[runs["variant"] == "F"]
    c = runs[runs["variant"] == "C1"]
    f_ok = [all(_in_band(row).values()) for _, row in f.iterrows()]
    medians = f[list(STATS)].median()
    median_ok = all(_in_band(medians).values())
    p1 = sum(f_ok) >= need and median_ok
    c_ok = [
        row["ACF(|r|, 1)"] <= 0.1
        and (row["excess kurtosis"] <= 3.0 or row["Hill index (top 5%)"] > 4.0)
        for _, row in c.iterrows()
    ]
    p2 = sum(c_ok) >= need
    return {
        "P1": bool(p1),
        "P2": bool(p2),
        "F seeds in every band": int(sum(f_ok)),
        "F medians in band": bool(median_ok),
        "C1 seeds without the facts": int(sum(c_ok)),
        "passed": bool(p1 and p2),
    }


# How the predictions of docs/validation.md's ablation table are scored (fixed before the full
# variant's results were seen): each ablation's median over its seeds against F's median over
# the same seeds (A1 is C1, over the five seeds); "tails remain" is median excess kurtosis > 3;
# "about 0" is |median| < ABOUT_ZERO, about three standard errors of an autocorrelation over
# 4,000 returns; "closer to 0" compares |ACF(r, 1)|. A prediction with several parts is
# confirmed only when every part holds.
ABOUT_ZERO = 0.05


_K, _HILL = "excess kurtosis", "Hill index (top 5%)"
_C1, _C50, _R1 = "ACF(|r|, 1)", "ACF(|r|, 50)", "ACF(r, 1)"
_TAILS = ("tails remain (kurtosis > 3)", lambda x, f: x[_K] > 3.0)
# variant -> the parts of its prediction: (text, test on its medians x and F's medians f)
PREDICTIONS = {
    "C1": [
        ("kurtosis <= 3 or Hill > 4", lambda x, f: x[_K] <= 3.0 or x[_HILL] > 4.0),
        ("ACF(|r|, 1) <= 0.1", lambda x, f: x[_C1] <= 0.1),
        (f"ACF(|r|, 50) about 0 (|.| < {ABOUT_ZERO:g})", lambda x, f: abs(x[_C50]) < ABOUT_ZERO),
    ],
    "A2": [
        _TAILS,
        ("ACF(|r|, 50) <= 0 or less than half of F's", lambda x, f: x[_C50] <= 0.0 or x[_C50] < 0.5 * f[_C50]),
    ],
    "A3": [
        ("ACF(r, 1) closer to 0 or positive", lambda x, f: abs(x[_R1]) < abs(f[_R1]) or x[_R1] > 0.0),
        _TAILS,
    ],
    "A4": [("lower ACF(|r|, 1) than F", lambda x, f: x[_C1] < f[_C1]), _TAILS],
    "A5": [("higher kurtosis than F", lambda x, f: x[_K] > f[_K])],
    "A6": [("lower kurtosis than F", lambda x, f: x[_K] < f[_K])],
}  # fmt: skip


def score_ablations(runs: pd.DataFrame, predictions: dict | None = None) -> pd.DataFrame:
    """The ablations' predictions (docs/validation.md, check 6; ``predictions``: another
    check's, check 6b's) scored on a table of runs.

    One row per ablation present (C1 standing for A1): its medians over its seeds, F's medians
    over the same seeds (columns ending in " (F)"), the prediction, the parts that fail, and
    ``confirmed`` (every part holds).
    """
    predictions = PREDICTIONS if predictions is None else predictions
    rows = []
    f_runs = runs[runs["variant"] == "F"]
    for name in [v for v in predictions if v in set(runs["variant"])]:
        a = runs[runs["variant"] == name]
        x = a[list(STATS)].median()
        f = f_runs[f_runs["seed"].isin(a["seed"])][list(STATS)].median()
        checks = [(text, bool(test(x, f))) for text, test in predictions[name]]
        rows.append(
            {
                "ablation": "A1 (C1)" if name == "C1" else name,
                "seeds": len(a),
                **{s: x[s] for s in STATS},
                **{f"{s} (F)": f[s] for s in STATS},
                "prediction": "; ".join(t for t, _ in checks),
                "refuted parts": "; ".join(t for t, ok in checks if not ok),
                "confirmed": all(ok for _, ok in checks),
            }
        )
    return pd.DataFrame(rows).set_index("ablation") if rows else pd.DataFrame()


def endogenous_run(variant: str, seed: int, steps=None, burn_in: int = BURN_IN) -> dict:
    """One run's row: its statistics after ``burn_in``, the impact share, and run facts."""
    return _config_run(variant, seed, steps, burn_in)[0]


def _config_run(name, seed, steps, burn_in, ablations=ABLATIONS, config=CONFIG):
    """One run of a config's variant: its row and its returns after ``burn_in``."""
    r, rf, info = endogenous_returns(seed, ablations[name], steps, config)
    stats = return_stats(r[burn_in:])
    share = impact_share(r[burn_in:], rf[burn_in:])
    row = {"variant": name, "seed": seed, **stats, "impact share": share, **info}
    return row, r[burn_in:]


def run_plan(plan, run_one, out_dir, figure: str) -> tuple[pd.DataFrame, list[str]]:
    """The runs of ``plan`` ((variant, seeds) pairs), each ``run_one(variant, seed) -> (row,
    returns)``: their table and the figure of the first seed's returns of each variant
    (``figure``, in ``out_dir`` when one is given; its name listed)."""
    rows, series = [], {}
    for name, seeds in plan:
        for seed in seeds:
            row, r = run_one(name, seed)
            rows.append(row)
            if seed == seeds[0]:
                series[name] = r
    figures = []
    path = figure_path(out_dir, figure)
    if path is not None:
        draw_facts(path, series)
        figures.append(path.name)
    return pd.DataFrame(rows), figures


# the quick variant's runs: F and its control at the first seed
QUICK_PLAN = [("F", SEEDS[:1]), ("C1", SEEDS[:1])]


def _plan(quick: bool, ablations=ABLATIONS):
    """(variant, seeds) pairs, steps (None: the config's), burn-in, seeds needed of five."""
    if quick:
        return QUICK_PLAN, 1500, 300, 1
    return full_plan(ablations), None, BURN_IN, 4


def full_plan(ablations) -> list[tuple[str, tuple[int, ...]]]:
    """The full variant's (variant, seeds) pairs: F and C1 over the five seeds, every other
    variant of ``ablations`` over the first three (their cost)."""
    plan = [("F", SEEDS), ("C1", SEEDS)]
    return plan + [(name, SEEDS[:3]) for name in ablations if name not in ("F", "C1")]


def run_endogenous(quick: bool = False, out_dir=None) -> dict:
    """F and its control over five seeds; in the full variant also the ablations, over the
    first three seeds (their cost)."""
    return run_variants(quick, out_dir)


def run_variants(quick, out_dir, *, ablations=ABLATIONS, config=CONFIG, **result) -> dict:
    """:func:`run_endogenous` for a config and its ablations (check 6's by default; check
    6b's from :mod:`experiments.validation.endogenous_v2`); ``result``: the keywords of
    :func:`endogenous_result` that name the check."""
    plan, steps, burn_in, _ = _plan(quick, ablations)

    def run_one(name, seed):
        return _config_run(name, seed, steps, burn_in, ablations, config)

    runs, figures = run_plan(plan, run_one, out_dir, result.get("figure", "endogenous.png"))
    return endogenous_result(runs, quick=quick, figures=figures, ablations=ablations, **result)


def seed_table(runs: pd.DataFrame, variants=("F", "C1")) -> str:
    """The data rows of docs/validation.md's per-seed table of a check run with this
    machinery (check 6b): one markdown row per run of ``variants``."""
    rows = []
    for _, x in runs[runs["variant"].isin(variants)].iterrows():
        back = x.get("makers reentered", float("nan"))
        cells = [
            *stat_cells(x),
            f"{x['impact share']:.2f}",
            f"{x['makers liquidated']}",
            "-" if pd.isna(back) else f"{int(back)}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stat_cells(x) -> list[str]:
    """The first cells of a per-seed table's row (a run ``x`` of the table of runs): variant,
    seed and the five statistics of the verdict, at the precision the tables quote them."""
    return [
        x["variant"],
        f"{x['seed']}",
        f"{x['excess kurtosis']:.2f}",
        f"{x['Hill index (top 5%)']:.2f}",
        f"{x['ACF(r, 1)']:+.3f}",
        f"{x['ACF(|r|, 1)']:.3f}",
        f"{x['ACF(|r|, 50)']:+.3f}",
    ]


def _medians_text(table, name) -> str:
    row = table.loc[name]
    return (
        f"{name}: kurtosis {row['excess kurtosis']:.2f}, Hill {row['Hill index (top 5%)']:.2f}, "
        f"ACF(r,1) {row['ACF(r, 1)']:+.3f}, ACF(|r|,1) {row['ACF(|r|, 1)']:.3f}, "
        f"ACF(|r|,50) {row['ACF(|r|, 50)']:+.3f}"
    )


def endogenous_result(
    runs: pd.DataFrame,
    *,
    quick: bool,
    figures=(),
    ablations=ABLATIONS,
    predictions=None,
    name="Stylized facts from the engine's own mechanisms",
    venue="a constant-volatility venue with leveraged accounts, withdrawing market makers "
    "and trading rules",
    figure="endogenous.png",
    run=None,
) -> dict:
    """The check's result (:func:`experiments.validation.check_result`) from its table of
    runs: the verdict, the medians by variant and, in the full variant, the ablations' scored
    predictions (``data["ablations"]``, :func:`score_ablations`). The keywords after
    ``figures`` name another check run with this machinery (check 6b; ``figure`` is its
    figure's file name, used by :func:`run_variants`); ``run``: the runs' (plan, steps,
    burn-in, seeds needed) when not check 6's (:func:`_plan`; check 6d's)."""
    plan, steps, burn_in, need = _plan(quick, ablations) if run is None else run
    steps = 5000 if steps is None else steps  # (None: the configs' 5,000 steps)
    last = [k for k in ablations if k not in ("F", "C1")][-1]  # the last ablation's name
    variants = [name for name, _ in plan]
    v = verdict(runs, need)
    cols = [*STATS, "impact share", "accounts liquidated", "depth low", "depth median"]
    table = runs.groupby("variant", sort=False)[cols].median()
    scores = score_ablations(runs, predictions) if not quick else pd.DataFrame()
    ablations = [s for name, s in plan if name not in ("F", "C1")]
    notes = (
        f"F and C1 over seeds {', '.join(map(str, plan[0][1]))}"
        + (f", the ablations over {', '.join(map(str, ablations[0]))}" if ablations else "")
        + f"; {steps:,} steps{' (quick)' if quick else ''}, the first {burn_in:,} "
        f"dropped; medians over seeds. F: {v['F seeds in every band']} seed(s) in every band, "
        f"medians {'inside' if v['F medians in band'] else 'NOT inside'} the bands; C1: "
        f"{v['C1 seeds without the facts']} seed(s) without clustering and fat tails. "
        "|ACF(r, 1)| < 0.1 is reported, not part of the verdict."
    )
    if not scores.empty:
        notes += " Predictions of the ablations (medians against F's over the same seeds): " + (
            "; ".join(
                f"{name} {'confirmed' if row['confirmed'] else 'refuted'}"
                + ("" if row["confirmed"] else f" ({row['refuted parts']})")
                for name, row in scores.iterrows()
            )
            + "."
        )
    return check_result(
        name,
        f"kurtosis, Hill index and ACF(|r|) at lags 1 and 50 of {venue} (F), against the "
        "same venue at leverage 1 (C1)"
        + ("" if quick else f", and with each mechanism switched off (A2-{last})"),
        "; ".join(_medians_text(table, n) for n in variants),
        "F: kurtosis > 3, Hill 2-4, ACF(|r|,1) > 0.1, ACF(|r|,50) > 0 in >= 4 of 5 seeds and "
        "in the medians; C1: ACF(|r|,1) <= 0.1 and (kurtosis <= 3 or Hill > 4) in >= 4 of 5 "
        "seeds",
        v["passed"],
        notes,
        figures=list(figures),
        table=table,
        data={"runs": runs, "verdict": v, "ablations": scores},
    )


def draw_facts(path, series) -> None:
    """The figure of a check run with this machinery: the first returns of F and C1, the
    tails and the ACF of |r| of every variant's first seed (``series``: name -> returns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lags = np.arange(1, 101)
    for i, (name, r) in enumerate(series.items()):
        style = {"color": f"C{i}", "lw": 1.4 if name in ("F", "C1") else 0.8}
        z = (r - r.mean()) / r.std()
        x = np.sort(np.abs(z))[::-1]
        axes[1].loglog(x, np.arange(1, x.size + 1) / x.size, label=name, **style)
        axes[2].plot(lags, [acf(np.abs(r), k) for k in lags], label=name, **style)
    for name in ("F", "C1"):
        if name in series:
            axes[0].plot(series[name][:1000], lw=0.5, label=name)
    axes[0].set_title("log returns, first 1,000 steps after burn-in")
    axes[1].set_title("tails: P(|z| > x)")
    axes[1].set_xlim(0.1, 50)
    axes[2].axhline(0.0, color="k", lw=0.5)
    axes[2].axhline(0.1, color="0.5", ls=":")
    axes[2].set_title("ACF of |r|")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
