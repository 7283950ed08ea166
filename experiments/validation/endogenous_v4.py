"""Check 6d: check 6's question on a leverage cycle whose book is market makers' quotes.

The market of check 4b (:mod:`experiments.validation.thurner_engine`: Thurner, Farmer and
Geanakoplos's leverage cycle in the engine's own concepts) with five market makers quoting in
the book beside the noise trader's demand. The value of the asset is constant and the noise
trader's demand moves with constant-volatility shocks, so nothing outside the venue changes
its volatility; ten leveraged value funds are margin accounts the liquidation engine calls
back to the cap, and the makers thin their quotes as volatility, inventory, margin and ADL
stress them, and come back with fresh capital after losing it. The makers' calm depth is the
noise trader's own at the value; they do not hedge (the asset has no other
market) and start flat.

Variants (:data:`VARIANTS`; seeds as check 6's): ``F`` at cap 20 (check 4b's top cap), ``C1``
at cap 1 (the same market at leverage 1), and the ablations: ``A2`` the makers' withdrawal
factors held at 1 (check 6's A2), ``A3`` no makers (check 4b's market), ``A4`` no margin calls
(a maintenance rate of 0). Statistics, pass criteria and scoring are check 6's
(:func:`endogenous.verdict`, :func:`endogenous.score_ablations`) on check 4b's run length,
written in docs/validation.md before the first evaluation run; the predictions are this
check's own (:data:`PREDICTIONS`). The market is experiments/configs/leverage-cycle.toml (F; C1 is
the file with ``assets.X.max_leverage = 1`` and ``margin.maintenance = 0.999``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.validation import endogenous as six
from experiments.validation import single_threaded_blas
from experiments.validation.endogenous import ABOUT_ZERO, SEEDS
from experiments.validation.stylized_facts import return_stats
from experiments.validation.thurner_engine import tfg_engine_prices

__all__ = [
    "BURN_IN",
    "PREDICTIONS",
    "SEEDS",
    "STEPS",
    "VARIANTS",
    "endogenous_v4_run",
    "run_endogenous_v4",
    "seed_table",
]

STEPS, BURN_IN = 15_000, 1_000  # check 4b's full run
QUICK_STEPS, QUICK_BURN_IN = 3_000, 300  # check 4b's quick run
# (the makers, their calm depth, which is what the noise trader's curve xi / p offers for a 1%
# move at the value, and the rest of the market: experiments/configs/leverage-cycle.toml)
# variant -> (leverage cap, [liquidity] keys over the file's (None: check 4b's market, no
# makers), [margin] keys)
VARIANTS = {
    "F": (20.0, {}, {}),
    "C1": (1.0, {}, {}),
    "A2": (
        20.0,
        {
            "vol_exponent": 0.0,
            "inventory_limit": 1.0e12,
            "margin_pull": [1.0e6, 2.0e6],
            "adl_sensitivity": 0.0,
        },
        {},
    ),
    "A3": (20.0, None, {}),
    "A4": (20.0, {}, {"maintenance": 0.0}),
}

_K, _HILL = "excess kurtosis", "Hill index (top 5%)"
_C1, _C50 = "ACF(|r|, 1)", "ACF(|r|, 50)"
# variant -> the parts of its prediction (docs/validation.md, check 6d): (text, test on its
# medians x and F's medians f over the same seeds)
PREDICTIONS = {
    "C1": six.PREDICTIONS["C1"],
    "A2": six.PREDICTIONS["A2"][1:],  # "ACF(|r|, 50) <= 0 or less than half of F's"
    "A3": [
        (f"ACF(|r|, 50) about 0 (|.| < {ABOUT_ZERO:g})", lambda x, f: abs(x[_C50]) < ABOUT_ZERO),
        ("higher kurtosis than F", lambda x, f: x[_K] > f[_K]),
    ],
    "A4": [
        ("lower kurtosis than F", lambda x, f: x[_K] < f[_K]),
        ("lower ACF(|r|, 1) than F", lambda x, f: x[_C1] < f[_C1]),
    ],
}


def endogenous_v4_run(variant: str, seed: int, steps: int = STEPS, burn_in: int = BURN_IN):
    """One run of a variant: its row (statistics after ``burn_in``, run facts) and its
    returns after ``burn_in``."""
    cap, liquidity, margin = VARIANTS[variant]
    options = {"makers": liquidity is not None, "liquidity": liquidity, "margin": margin}
    with single_threaded_blas():
        prices, market = tfg_engine_prices(cap, steps, seed, **options)
    r = np.diff(np.log(prices))[burn_in:]
    model = market.model
    s = model.summary()
    depth = model.market_history.depth[burn_in:, 0]
    row = {
        "variant": variant,
        "seed": seed,
        **return_stats(r),
        "impact share": 1.0,  # the value never moves: every return is the book's
        "accounts liquidated": s["accounts_liquidated"],
        "makers liquidated": s.get("makers_liquidated", 0),
        "makers reentered": model.liquidity.makers_reentered,
        "margin calls": market.margin_calls,
        "depth low": float(depth.min()),
        "depth median": float(np.median(depth)),
    }
    return row, r


def seed_table(runs: pd.DataFrame, variants=("F", "C1")) -> str:
    """The data rows of docs/validation.md's per-seed table of check 6d: one markdown row per
    run of ``variants`` (steps with a margin call, makers liquidated and re-entered, median
    depth in place of check 6's impact share, which is 1 here: the value never moves)."""
    rows = []
    for _, x in runs[runs["variant"].isin(variants)].iterrows():
        cells = [
            *six.stat_cells(x),
            f"{x['margin calls']}",
            f"{x['makers liquidated']}",
            f"{x['makers reentered']}",
            f"{x['depth median']:.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run_endogenous_v4(quick: bool = False, out_dir=None) -> dict:
    """F and its control over five seeds; in the full variant also the ablations A2-A4, over
    the first three seeds (check 6's plan)."""
    steps, burn_in = (QUICK_STEPS, QUICK_BURN_IN) if quick else (STEPS, BURN_IN)
    plan = six.QUICK_PLAN if quick else six.full_plan(VARIANTS)

    def run_one(name, seed):
        return endogenous_v4_run(name, seed, steps, burn_in)

    runs, figures = six.run_plan(plan, run_one, out_dir, "endogenous_v4.png")
    return six.endogenous_result(
        runs,
        quick=quick,
        figures=figures,
        ablations=VARIANTS,
        predictions=PREDICTIONS,
        run=(plan, steps, burn_in, 1 if quick else 4),
        name="Stylized facts from a leverage cycle with market makers",
        venue="check 4b's leverage cycle (cap 20) with market makers quoting beside the noise "
        "trader",
    )
