"""Partial liquidation: the smallest common fraction of a unit's positions that restores it.

A liquidation unit (an account's cross book or one isolated position) with equity ``E`` at the
mark and position notionals ``N_a`` is liquidated partially by closing the same fraction ``f``
of each of its positions. Closing pays the fee ``c f N`` (``N = sum_a N_a``) and leaves
notionals ``(1 - f) N_a``; the unit is restored when its *slack*

    S(f) = E - c f N - (1 + b) sum_a mm((1 - f) N_a)

is non-negative (``b`` the buffer). The fraction wanted is the smallest ``f`` in [0, 1] with
``S(f) >= 0``; when there is none the unit is closed whole (``f = 1``).

The shape of ``S``. ``mm(n) = max(n r_t - cum_t, 0)`` for ``n`` in tier ``t`` is continuous
and piecewise linear in ``n``, with kinks at the tier caps (and, were a rate negative, where
the clip at 0 bites inside a tier; with rates >= 0, ``mm`` rises from ``mm(0) = 0`` and the
clip never bites). So ``S`` is piecewise linear in ``f`` with breakpoints at
``f = 1 - k / N_a`` for every kink ``k`` of asset ``a`` strictly between 0 and ``N_a``.

``S`` need not be monotone. On a piece where the notional left is in a tier whose rate times
``1 + b`` is below the fee rate, closing more costs more in fees than it frees in margin, so
``S`` falls as ``f`` grows. With Binance's BTC tiers (0.4% up to 50k, 0.5%, 1%, ...), a 0.5%
fee and a 10% buffer, ``S`` rises while the notional left is above 50k and falls below it
(1.1 x 0.4% < 0.5%): ``S(1) = E - c N`` can be negative while ``S`` is positive in between.
With non-decreasing rates ``mm`` is convex and ``S`` concave, so the restoring fractions form
one interval, but it need not reach 1: "negative at 1, hence close everything" is wrong, and
so is any search that assumes ``S`` crosses zero once on its way up. Nothing below needs
convexity.

The solution is exact piece by piece. Sort a unit's breakpoints together with 0 and 1 into
``0 = f_0 <= f_1 <= ... <= f_m = 1`` and evaluate ``S`` at each. If ``S(f_0) >= 0`` the answer
is 0 (nothing needs closing; the engine only asks for units below maintenance, where
``S(0) < 0``). Otherwise let ``j`` be the first index with ``S(f_j) >= 0``: on every earlier
piece ``S`` is linear with both ends negative, hence negative throughout, and on
``[f_{j-1}, f_j]`` it is linear from negative to non-negative, so the smallest root is

    f = f_{j-1} + (f_j - f_{j-1}) S(f_{j-1}) / (S(f_{j-1}) - S(f_j)).

That root is nudged up by a few units of rounding where needed so that ``S(f) >= 0`` holds as
evaluated in floating point (falling back to ``f_j``, where it holds by construction). No such
``j`` means no fraction restores the unit: ``f = 1``.

Cost: with ``A`` assets and ``T`` tiers there are at most ``2 + A (T - 1)`` points per unit
(breakpoints beyond every unit's notional are dropped), each one evaluation of ``mm`` over
the ``(k, A)`` notionals; everything is vectorised over the ``k`` units.
"""

from __future__ import annotations

import numpy as np

from model import kernels
from model.accounts import TierTable, maintenance_margin, row_sum

__all__ = ["partial_fraction"]

_EPS = np.finfo(float).eps
# The nudge of a root (_nudge): steps from one rounding unit, growing this much, this often.
_NUDGE_GROWTH = 16.0
_NUDGE_TRIES = 13


def partial_fraction(
    equity, notional, tiers: TierTable, fee: float, buffer: float, *, compiled: bool = False
) -> np.ndarray:
    """Smallest fraction ``f`` in [0, 1] of a unit's positions whose closing restores the unit.

    Restored means ``equity - fee f N >= (1 + buffer) sum_a mm((1 - f) N_a)`` at the current
    mark. The solution is exact on each linear piece of that inequality (module docstring), so
    it holds for any tier table, fee and buffer, including those for which closing more of a
    small position costs more in fees than it frees in margin.

    Args:
        equity: (k,) equity of each unit at the current mark.
        notional: (k, A) notional of the unit's positions (0 for positions not in the unit).
        tiers: maintenance tiers per asset.
        fee: liquidation fee rate.
        buffer: the margin buffer above maintenance that a partial liquidation restores.
        compiled: solve each unit in one compiled loop (:func:`model.kernels.partial_fractions`,
            the same fractions to the bit) instead of numpy's columns of breakpoints, which
            pass over the round's units a few dozen times; for a compiled book's rounds
            (:meth:`model.accounts.AccountBook.compiled`).

    Returns:
        (k,) the smallest restoring fraction; 0 for a unit already restored (``S(0) >= 0``),
        1 for a unit that no fraction restores (it is closed whole).
    """
    equity = np.asarray(equity, dtype=float)
    notional = np.asarray(notional, dtype=float)
    if compiled:
        out = np.empty(equity.shape[0])
        kernels.partial_fractions(
            kernels.writable(equity), kernels.writable(notional), row_sum(notional),
            _kinks(tiers), tiers.caps, tiers.rates, tiers.cums, float(fee), float(buffer),
            float(_EPS), _NUDGE_GROWTH, _NUDGE_TRIES, out,
        )  # fmt: skip
        return out
    unit = _Unit(equity, notional, row_sum(notional), tiers, float(fee), float(buffer))
    points = _breakpoints(notional, tiers)
    slack = np.empty_like(points)
    for j in range(points.shape[1]):  # loop over breakpoints, not units
        slack[:, j] = unit.slack(points[:, j])
    return _first_root(points, slack, unit)


class _Unit:
    """The units' data and their slack ``S(f)``, evaluated for all of them or a subset."""

    def __init__(self, equity, notional, total, tiers, fee, buffer):
        self.equity, self.notional, self.total = equity, notional, total
        self.tiers, self.fee, self.buffer = tiers, fee, buffer

    def slack(self, f, rows=slice(None)) -> np.ndarray:
        """``S(f)`` for the units ``rows`` (f has one entry per selected unit)."""
        left = (1.0 - f)[:, None] * self.notional[rows]
        mm = row_sum(maintenance_margin(left, self.tiers))
        return self.equity[rows] - self.fee * f * self.total[rows] - (1.0 + self.buffer) * mm


def _kinks(tiers: TierTable) -> np.ndarray:
    """(A, P) notionals at which ``mm`` can change slope, padded with +inf.

    The finite tier caps, and the point inside a tier where ``n r_t - cum_t`` crosses 0 (the
    clip at 0 bends there; only possible with a negative rate, so normally there is none).
    """
    caps, rates, cums = tiers.caps, tiers.rates, tiers.cums
    lower = np.concatenate([np.zeros((caps.shape[0], 1)), caps[:, :-1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        zero = cums / rates
    inside = (rates != 0) & (zero > lower) & (zero < caps)
    kinks = np.concatenate([caps, np.where(inside, zero, np.inf)], axis=1)
    kinks = np.where(np.isfinite(kinks), kinks, np.inf)
    return kinks[:, np.isfinite(kinks).any(axis=0)]


def _breakpoints(notional: np.ndarray, tiers: TierTable) -> np.ndarray:
    """(k, m) each unit's breakpoints in ``f``, with 0 and 1, sorted along each row.

    Breakpoints outside (0, 1) (kinks above a unit's notional, assets it does not hold) are
    replaced by 0; leading columns that are 0 for every unit are dropped, keeping one.
    """
    k = notional.shape[0]
    kinks = _kinks(tiers)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 1.0 - kinks[None, :, :] / notional[:, :, None]
    f = np.where((f > 0.0) & (f < 1.0), f, 0.0).reshape(k, f.shape[1] * f.shape[2])
    points = np.concatenate([np.zeros((k, 1)), f, np.ones((k, 1))], axis=1)
    points.sort(axis=1)
    if k == 0:
        return points
    # the leading columns that are 0 for every unit (rows sorted: a row's zeros lead it)
    zeros = 1
    while zeros < points.shape[1] and not points[:, zeros].any():
        zeros += 1
    return points[:, zeros - 1 :]


def _first_root(points: np.ndarray, slack: np.ndarray, unit: _Unit) -> np.ndarray:
    """The smallest root on the first piece whose right end has ``S >= 0``; 1 if none."""
    k = points.shape[0]
    rows = np.arange(k)
    ok = slack >= 0.0
    j = np.argmax(ok, axis=1) if k else np.zeros(0, dtype=np.intp)
    found = ok[rows, j]
    jl = np.maximum(j - 1, 0)
    f0, f1 = points[rows, jl], points[rows, j]
    s0, s1 = slack[rows, jl], slack[rows, j]
    inner = found & (j > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = f0 + (f1 - f0) * (s0 / (s0 - s1))
    root = np.where(inner, np.clip(root, f0, f1), f1)
    root[inner] = _nudge(root[inner], f1[inner], np.flatnonzero(inner), unit)
    return np.where(found, root, 1.0)


def _nudge(f: np.ndarray, right: np.ndarray, rows: np.ndarray, unit: _Unit) -> np.ndarray:
    """Move roots up by growing multiples of the rounding unit until ``S(f) >= 0`` as evaluated.

    The exact root is within rounding of ``f``; the few units whose evaluated slack is still
    negative there try ``f + step`` for steps from 1 to 16^12 machine epsilons, and fall back to
    the piece's right end ``right``, where ``S >= 0`` was evaluated.
    """
    f = f.copy()
    bad = np.flatnonzero(unit.slack(f, rows) < 0.0)
    step = _EPS
    for _ in range(_NUDGE_TRIES):  # loop over step sizes, not units
        if bad.size == 0:
            return f
        trial = np.minimum(f[bad] + step, right[bad])
        good = unit.slack(trial, rows[bad]) >= 0.0
        f[bad[good]] = trial[good]
        bad = bad[~good]
        step *= _NUDGE_GROWTH
    f[bad] = right[bad]
    return f
