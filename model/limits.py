"""How much of a unit one liquidation round may close: venue rules on top of full and partial.

``margin.liquidation`` says what a round aims for: the whole unit (``full``), or the smallest
common fraction of its positions that restores it (``partial``, :mod:`model.partial`). Venues
add rules that bound or override that fraction; this module applies them, position by
position, vectorised over the round's units (sources: docs/reference/venues.md §1.1, §2).

Partial only beyond the first tiers (``margin.partial_from_tier``; 1 by default: every unit).
Bybit liquidates a position of the lowest risk-limit tier whole, at its bankruptcy price, and
steps larger ones down (§2.2, tier 2 and up); OKX reduces positions from tier 3 up and closes
tier 2 and below whole (§2.3). A unit none of whose positions has reached tier
``partial_from_tier`` (its notional at the mark beyond the cap of tier ``partial_from_tier - 1``)
is closed whole. The step-down itself (Bybit: to the lower tier's cap; OKX: two tiers at a time)
is approximated by the engine's partial mode, the smallest fraction restoring
``(1 + buffer) x maintenance``: it closes less than a whole tier step when a little suffices,
and it treats a cross book's positions together where the venues step each position down on its
own.

Chunks (``margin.chunk_notional``, ``margin.chunk_share``; Hyperliquid, §2.4). A position whose
notional is above ``chunk_notional`` closes at most ``chunk_share`` of itself. After a round that
cut any position of an account to a chunk, that account's later liquidations in the same step
close whole positions: Hyperliquid's 30-second cooldown, during which liquidation orders are
full-size. The cooldown ends with the step, which is right for steps of 30 seconds or more
(``market.step_minutes >= 0.5``).

Per-round limits (``margin.round_share``, ``margin.round_min_notional``,
``margin.round_max_notional``; dYdX per block, §2.5). A round closes at most
``max(round_share x N, round_min_notional)`` of a position of notional ``N`` (dYdX: 10% of it but
at least $1,000), and at most ``round_max_notional`` of an account's positions together (dYdX:
$100,000 per subaccount; every position of the account is scaled down in proportion). A round
stands for a block: an account the limits leave below maintenance is liquidated again in the
next round, until it is restored or ``margin.max_rounds`` is reached.

A limited unit is not closed whole, so it neither pays the takeover remainder
(``margin.takeover``) nor counts as fully liquidated.
"""

from __future__ import annotations

import numpy as np

from model.accounts import TierTable

__all__ = ["RoundLimits"]


class RoundLimits:
    """The venue rules that bound the fraction a liquidation round closes.

    Args:
        margin: the ``[margin]`` section (``partial_from_tier``, ``chunk_notional``,
            ``chunk_share``, ``round_share``, ``round_min_notional``, ``round_max_notional``).
        tiers: the maintenance tiers (for ``partial_from_tier``).
        n_traders: the number of accounts (for the chunk cooldown).
    """

    def __init__(self, margin, tiers: TierTable, n_traders: int):
        self.tiers = tiers
        self.from_tier = int(margin.partial_from_tier)
        self.chunk_notional = margin.chunk_notional
        self.chunk_share = float(margin.chunk_share)
        self.round_share = float(margin.round_share)
        self.round_min = float(margin.round_min_notional)
        self.round_max = margin.round_max_notional
        self.cooling = np.zeros(n_traders, dtype=bool)  # cut to a chunk this step
        self._cooling_rows: list[np.ndarray] = []

    def new_step(self) -> None:
        """A new step: every cooldown has ended."""
        for rows in self._cooling_rows:
            self.cooling[rows] = False
        self._cooling_rows = []

    def partial_allowed(self, notional) -> np.ndarray:
        """(k,) whether a unit may be liquidated in part: one of its positions (``notional``,
        (k, A), 0 for positions outside the unit) has reached tier ``partial_from_tier``."""
        notional = np.asarray(notional, dtype=float)
        if self.from_tier <= 1:
            return np.ones(notional.shape[0], dtype=bool)
        tier = np.where(notional > 0, self.tiers.tier_index(notional), -1)
        return (tier >= self.from_tier - 1).any(axis=1)

    @property
    def _chunked(self) -> bool:
        """Whether the chunk rule is on."""
        return self.chunk_notional is not None

    @property
    def _limited_per_round(self) -> bool:
        """Whether a per-round limit is on."""
        return self.round_share < 1 or self.round_min > 0 or self.round_max is not None

    @property
    def bounds_nothing(self) -> bool:
        """Whether :meth:`bound` returns every fraction as it is (no chunk rule, no per-round
        limit)."""
        return not (self._chunked or self._limited_per_round)

    def bound(self, rows, frac, notional) -> np.ndarray:
        """The fractions ``frac`` (k, A) of the round's accounts ``rows`` once the chunk rule and
        the per-round limits have bounded them; ``notional`` (k, A) at the mark."""
        frac = np.asarray(frac, dtype=float)
        if self._chunked:
            frac = self._chunks(rows, frac, notional)
        if self._limited_per_round:
            frac = self._per_round(frac, notional)
        return frac

    def _chunks(self, rows, frac, notional) -> np.ndarray:
        """Positions above ``chunk_notional`` of accounts not cooling down close at most
        ``chunk_share``; the accounts so cut start their cooldown."""
        cut = (notional > self.chunk_notional) & (frac > self.chunk_share)
        cut &= ~self.cooling[rows][:, None]
        if not cut.any():
            return frac
        started = rows[cut.any(axis=1)]
        self.cooling[started] = True
        self._cooling_rows.append(started)
        return np.where(cut, self.chunk_share, frac)

    def _per_round(self, frac, notional) -> np.ndarray:
        """At most ``max(round_share x N, round_min_notional)`` of each position and
        ``round_max_notional`` of each account."""
        limit = np.maximum(self.round_share * notional, self.round_min)
        with np.errstate(divide="ignore", invalid="ignore"):
            most = np.where(notional > 0, np.minimum(limit / notional, 1.0), 1.0)
        frac = np.minimum(frac, most)
        if self.round_max is not None:
            total = (frac * notional).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(total > self.round_max, self.round_max / total, 1.0)
            frac = frac * scale[:, None]
        return frac
