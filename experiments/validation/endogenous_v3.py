"""Check 6c: check 6's question with the makers starting flat and depth set on the window.

``experiments/configs/endogenous-v3.toml``: check 6b's venue
(:mod:`experiments.validation.endogenous_v2`: makers that come back with fresh capital after 24
steps, value orders resting) without the two start-up artefacts its diagnosis found: the makers
start flat (``liquidity.basis_share = 0``; under check 6b's share of the traders' net position
they started at many times their capital and were liquidated in the first step), and
``assets.depth`` comes from a rule that measures the impact share of the control over the
evaluation window (steps 1,001-5,000), not over the start-up transient.

Variants: ``F``, ``C1`` (the control at leverage 1), check 6b's ablations ``A2``-``A7`` and
``A8``, the makers' start of check 6b (``basis_share = 0.3``). Statistics, pass criteria and
scoring are check 6's (:func:`endogenous.verdict`, :func:`endogenous.score_ablations`), written
in docs/validation.md before the first run; the predictions are this check's own
(:data:`PREDICTIONS`).
"""

from __future__ import annotations

from pathlib import Path

from experiments.validation import endogenous as six
from experiments.validation import endogenous_v2 as six_b
from experiments.validation.endogenous import ABOUT_ZERO, BURN_IN, SEEDS, seed_table

__all__ = [
    "ABLATIONS",
    "BURN_IN",
    "CONFIG",
    "PREDICTIONS",
    "SEEDS",
    "run_endogenous_v3",
    "seed_table",
]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endogenous-v3.toml"
ABLATIONS = {**six_b.ABLATIONS, "A8": {"liquidity.basis_share": 0.3}}

_K, _C1, _C50, _R1 = "excess kurtosis", "ACF(|r|, 1)", "ACF(|r|, 50)", "ACF(r, 1)"
# variant -> the parts of its prediction (docs/validation.md, check 6c): (text, test on its
# medians x and F's medians f over the same seeds)
PREDICTIONS = {
    "C1": six.PREDICTIONS["C1"],
    "A2": [("lower kurtosis than F", lambda x, f: x[_K] < f[_K])],
    "A3": [("lower ACF(|r|, 50) than F", lambda x, f: x[_C50] < f[_C50])],
    "A4": [("higher kurtosis than F", lambda x, f: x[_K] > f[_K])],
    "A5": [("ACF(r, 1) lower than F's", lambda x, f: x[_R1] < f[_R1])],
    "A6": [("lower kurtosis than F", lambda x, f: x[_K] < f[_K])],
    "A7": [("higher ACF(|r|, 50) than F", lambda x, f: x[_C50] > f[_C50])],
    "A8": [
        (
            f"ACF(|r|, 1) within {ABOUT_ZERO:g} of F's",
            lambda x, f: abs(x[_C1] - f[_C1]) < ABOUT_ZERO,
        ),
        (
            f"ACF(|r|, 50) within {ABOUT_ZERO:g} of F's",
            lambda x, f: abs(x[_C50] - f[_C50]) < ABOUT_ZERO,
        ),
    ],
}


def run_endogenous_v3(quick: bool = False, out_dir=None) -> dict:
    """F and its control over five seeds; in the full variant also the ablations A2-A8, over
    the first three seeds (check 6's plan)."""
    return six.run_variants(
        quick,
        out_dir,
        ablations=ABLATIONS,
        config=CONFIG,
        predictions=PREDICTIONS,
        name="Stylized facts from the engine's own mechanisms, makers starting flat, depth "
        "calibrated on the evaluation window",
        venue="check 6b's venue with the makers starting flat and the depth calibrated on the "
        "evaluation window",
        figure="endogenous_v3.png",
    )
