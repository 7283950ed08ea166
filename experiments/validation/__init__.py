"""Validation checks: the engine against analytic results, the literature and real returns.

One module per check. Each exposes a function that runs the check and returns a result dict
(see :func:`check_result`): what was compared, what came out, what was expected and whether it
passed. ``quick=True`` runs a smaller variant (the test suite runs those); the full variants are
what ``contagion validate`` reports. A check that does not come out as the theory or the paper
says is reported as a FAIL with the measured values: no check is tuned to pass.

The checks that run the engine build one-step models with explicit populations
(:class:`model.population.Population`) and configs built in code (:func:`engine_config`), so
they depend only on the documented config keys and the Python API.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check_result",
    "engine_config",
    "figure_path",
    "make_population",
    "single_threaded_blas",
]


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with one BLAS thread, when ``threadpoolctl`` is installed.

    The checks build thousands of small models; each validates a correlation matrix with a
    small eigenvalue problem, which a multi-threaded BLAS on a busy machine runs tens of times
    slower than one thread does. Results are identical either way.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def check_result(
    name: str,
    compared: str,
    measured: str,
    expected: str,
    passed: bool,
    notes: str = "",
    *,
    figures: list[str] | None = None,
    table: Any = None,
    data: dict | None = None,
) -> dict:
    """The result of one check, as the report shows it.

    Args:
        name: short name of the check (one row of report.md).
        compared: what was compared with what.
        measured: the measured values, as text.
        expected: the expected values or bands, as text.
        passed: whether the measured values met the expectation.
        notes: how the check was set up and, for a FAIL, why we think it failed.
        figures: file names of the check's figures (relative to the report folder).
        table: an optional pandas DataFrame shown under the check in the report.
        data: raw numbers for programmatic use (tests, notebooks).
    """
    return {
        "name": name,
        "compared": compared,
        "measured": measured,
        "expected": expected,
        "passed": bool(passed),
        "notes": notes,
        "figures": list(figures or []),
        "table": table,
        "data": dict(data or {}),
    }


def engine_config(
    assets: list[dict],
    *,
    impact_exponent: float,
    maintenance: float,
    shocks: list[dict] | None = None,
    liquidation: str = "full",
    fee: float = 0.0,
    insurance_fund: float = 0.0,
    name: str = "validation",
    seed: int = 0,
):
    """A validated one-step config with deterministic fundamentals (volatility 0).

    Impact does not decay within the step (it never does), the resilience is irrelevant for one
    step, ADL is off so that only forced sales move prices, and the round limit is high enough
    that every cascade runs to its end.
    """
    from model.config import build_config

    return build_config(
        {
            "name": name,
            "seed": seed,
            "steps": 1,
            "market": {
                "volatility": 0.0,
                "correlation": 0.0,
                "impact_exponent": impact_exponent,
                "resilience": 0.0,
            },
            "assets": assets,
            "traders": {"count": 0},
            "margin": {
                "mode": "cross",
                "maintenance": maintenance,
                "liquidation": liquidation,
                "fee": fee,
                "insurance_fund": insurance_fund,
                "adl": False,
                "max_rounds": 100_000,
            },
            "shocks": shocks or [],
        }
    )


def make_population(wallet, qty, entry, strategy: str = "hold"):
    """A cross-margin :class:`model.population.Population` from plain arrays."""
    from model.population import Population

    wallet = np.asarray(wallet, dtype=float)
    qty = np.atleast_2d(np.asarray(qty, dtype=float))
    if qty.shape[0] != wallet.size:
        qty = qty.T
    entry = np.broadcast_to(np.asarray(entry, dtype=float), qty.shape).copy()
    entry = np.where(qty != 0, entry, 0.0)
    n, a = qty.shape
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=wallet.copy(),
        qty=qty.copy(),
        entry=entry,
        isolated=np.zeros((n, a), dtype=bool),
        margin=np.zeros((n, a)),
        strategy=np.full(n, strategy, dtype=object),
    )


def figure_path(out_dir: str | Path | None, name: str) -> Path | None:
    """Where a figure goes (None when the caller wants no figures)."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out / name
