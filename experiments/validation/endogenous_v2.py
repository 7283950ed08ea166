"""Check 6b: check 6's question on a venue whose makers come back and whose value orders rest.

``experiments/configs/endogenous-v2.toml``: check 6's population and market
(:mod:`experiments.validation.endogenous`) with the two changes its diagnosis named: makers whose
capital is gone are topped up with fresh capital after 24 steps
(``liquidity.maker_reentry_steps``), and value traders send no market orders but rest their
target curve all step (``liquidity.value_orders = "resting"``), so none trades past its own
target. Depth from check 6's blind calibration rule on this config's control.

Variants: ``F``, ``C1`` (the control at leverage 1), and the ablations ``A2``-``A6`` of check 6
(``A5`` here brings back check 6's value orders, ``"in_rounds"``) plus ``A7``, maker re-entry
off. Statistics, pass criteria and scoring are check 6's (:func:`endogenous.verdict`,
:func:`endogenous.score_ablations`), written in docs/validation.md before the first run; the
predictions of the ablations are this check's own (:data:`PREDICTIONS`).
"""

from __future__ import annotations

from pathlib import Path

from experiments.validation import endogenous as six
from experiments.validation.endogenous import BURN_IN, SEEDS, seed_table

__all__ = [
    "ABLATIONS",
    "BURN_IN",
    "CONFIG",
    "PREDICTIONS",
    "SEEDS",
    "run_endogenous_v2",
    "seed_table",
]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endogenous-v2.toml"
ABLATIONS = {
    "F": {},
    "C1": six.CONTROL,
    "A2": six.ABLATIONS["A2"],
    "A3": six.ABLATIONS["A3"],
    "A4": six.ABLATIONS["A4"],
    "A5": {"liquidity.value_orders": "in_rounds"},
    "A6": six.ABLATIONS["A6"],
    "A7": {"liquidity.maker_reentry_steps": 0},
}

_K, _C1, _C50, _R1 = "excess kurtosis", "ACF(|r|, 1)", "ACF(|r|, 50)", "ACF(r, 1)"
# variant -> the parts of its prediction (docs/validation.md, check 6b): (text, test on its
# medians x and F's medians f over the same seeds)
PREDICTIONS = {
    "C1": six.PREDICTIONS["C1"],
    "A2": [("lower kurtosis than F", lambda x, f: x[_K] < f[_K])],
    "A3": [("lower ACF(|r|, 50) than F", lambda x, f: x[_C50] < f[_C50])],
    "A4": six.PREDICTIONS["A4"],
    "A5": [("ACF(r, 1) lower than F's", lambda x, f: x[_R1] < f[_R1])],
    "A6": [("lower kurtosis than F", lambda x, f: x[_K] < f[_K])],
    "A7": [("higher ACF(|r|, 50) than F", lambda x, f: x[_C50] > f[_C50])],
}


def run_endogenous_v2(quick: bool = False, out_dir=None) -> dict:
    """F and its control over five seeds; in the full variant also the ablations A2-A7, over
    the first three seeds (check 6's plan)."""
    return six.run_variants(
        quick,
        out_dir,
        ablations=ABLATIONS,
        config=CONFIG,
        predictions=PREDICTIONS,
        name="Stylized facts from the engine's own mechanisms, makers re-entering, value "
        "orders resting",
        venue="the venue of check 6 with makers that come back with fresh capital and value "
        "traders that rest their orders",
        figure="endogenous_v2.png",
    )
