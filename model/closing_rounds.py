"""A step's rounds of whole closes, run by one compiled call until one needs the engine.

When every round of a step closes whole cross books (the engine's
:meth:`model.liquidation.LiquidationEngine._closes_cross_books_only`), the screen queries a
compiled book, and the mark is the market price, a round is a few compiled steps: the close
(the book's reads, the market's walk, the fee and write-off), the fund, the fill log and the
counts, then the next round's query at the price after it. :func:`model.kernels.closing_rounds`
runs them one after the other in one call, from the rows the engine found for the first, and
stops when a query finds nobody or the next step is the engine's own: the screen's numpy query
(a rebuild, a lane to extend, many changed rows), the round limit, bad debt beyond the fund
with ADL on, or no room left for a round's fills (:class:`ClosingRounds` then makes room and
calls again). The engine then books the rounds done as its own rounds are booked (their rows
as one write) and reports them to ``on_round`` in order, or all at once to a listener that
takes them so, as the contagion recorder does
(:meth:`model.liquidation.LiquidationEngine._run_closing_rounds`).

This module keeps the call's buffers and hands the rounds back, copied out at once, as
:class:`ClosedRounds` (one of them, for the engine's cover of its bad debt, as a
:class:`ClosedRound`);
the rules stay where they are written (:mod:`model.liquidation`, :mod:`model.screen`,
:mod:`agents.market`), and the kernel is their twin, equal to the bit (tests/test_kernels.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model import kernels
from model.accounts import RoundSums
from model.screen import MarginScreen

__all__ = ["ClosedRound", "ClosedRounds", "ClosingRounds"]

# The fill log's room asked for a call (the open block holds more; a round needing more is
# given room of its own by the next call)
_FILL_ROOM = 512


@dataclass
class ClosedRound(RoundSums):
    """One round the compiled call did: what :meth:`AccountBook.close_cross_books` would
    have returned for it (:class:`model.accounts.RoundSums`), and what the engine books and
    reports besides.

    Attributes:
        rows: (k,) book rows liquidated.
        depth: (A,) the depth the round's flow walked.
        traded, paid, debt, any_debt, net: the book's sums of the close
            (:meth:`model.accounts.AccountBook.book_close`).
    """

    rows: np.ndarray
    depth: np.ndarray
    traded: float
    paid: float
    debt: float
    any_debt: bool
    net: np.ndarray


@dataclass
class ClosedRounds:
    """The rounds the compiled call did, copied out of its buffers at once: per row, round
    after round, and per round (:meth:`ClosingRounds.rounds`).

    Attributes:
        rows: (m,) book rows liquidated, round ``i``'s ``rows[bounds[i]:bounds[i + 1]]``,
            as for ``qty`` (m, A) the positions closed and ``row_notional`` (m,).
        bounds: where each round's rows start, then where the last ends.
        prices: (n, 3, A) each round's price before and after its flow, the depth walked.
        net: (n, A) each round's fill's column sums.
        notional, fee, bad: (m, A) per position (views of the call's buffers, read before
            the next call).
        fees .. first_in_step: per round, the round's sums: fees, bad debt and notional,
            the fund after it and the debt nobody paid, the close's sums (as in
            :class:`ClosedRound`), the fills logged and the accounts counted.
    """

    rows: np.ndarray
    bounds: list[int]
    qty: np.ndarray
    row_notional: np.ndarray
    prices: np.ndarray
    net: np.ndarray
    notional: np.ndarray
    fee: np.ndarray
    bad: np.ndarray
    fees: list[float]
    bad_debt: list[float]
    liquidated: list[float]
    fund: list[float]
    unfunded: list[float]
    traded: list[float]
    paid: list[float]
    debt: list[float]
    any_debt: list[float]
    fills: list[float]
    first_ever: list[float]
    first_in_step: list[float]

    def round(self, i: int) -> ClosedRound:
        """Round ``i`` as one :class:`ClosedRound` (its arrays views of these)."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        p = self.prices[i]
        return ClosedRound(
            qty=self.qty[lo:hi], price_before=p[0], price=p[1], notional=self.notional[lo:hi],
            fee=self.fee[lo:hi], bad=self.bad[lo:hi], row_notional=self.row_notional[lo:hi],
            fees=self.fees[i], bad_debt=self.bad_debt[i], liquidated=self.liquidated[i],
            rows=self.rows[lo:hi], depth=p[2], traded=self.traded[i], paid=self.paid[i],
            debt=self.debt[i], any_debt=self.any_debt[i] != 0.0, net=self.net[i],
        )  # fmt: skip


class ClosingRounds:
    """The buffers of :func:`model.kernels.closing_rounds` and its call.

    Args:
        n_assets: the book's assets.
        rows, rounds: the rows and rounds the buffers hold at first (they grow as needed).
    """

    def __init__(self, n_assets: int, rows: int = 4096, rounds: int = 64):
        self.n_assets = n_assets
        self._grow(rows, rounds)
        self.result = np.zeros(6, dtype=np.int64)

    def _grow(self, rows: int, rounds: int) -> None:
        a = self.n_assets
        self.rows = np.empty(rows, dtype=np.int64)
        self.qty, self.bad, self.pos_notional, self.fee = (np.empty((rows, a)) for _ in range(4))
        self.row_notional = np.empty(rows)
        self.bounds = np.zeros(rounds + 1, dtype=np.int64)
        self.prices = np.empty((rounds, 3, a))
        self.sums = np.empty((rounds, 12))
        self.net = np.empty((rounds, a))

    def make_room(self, rows: int) -> None:
        """Buffers for a round of ``rows`` accounts after the call found no room."""
        if rows > self.rows.size or self.result[1] + 1 >= self.bounds.size:
            self._grow(max(2 * rows, self.rows.size), 2 * (self.bounds.size - 1))

    def run(self, rows, step, rnd, *, rules, book, walk, screen, fills, fund, counts) -> int:
        """One call from round ``rnd`` of ``step`` (``rows``: its accounts); returns the stop
        (``kernels.ROUNDS_*``).

        Args:
            rules: the round limit, the step's stamp, the fills' kind, the fee rate and
                whether ADL is on.
            book: the :class:`model.accounts.AccountBook`.
            walk: the market's :meth:`agents.market.Market.walk_state` and its 1% depth.
            screen, fills: the margin screen and the fill log.
            fund: (3,) the fund, what it paid so far, the unfunded debt so far (written).
            counts: the engine's liquidation counts and step stamps per row (written).
        """
        max_rounds, stamp, kind, fee, adl = rules
        t = book.tiers
        columns, at = fills.reserve(max(_FILL_ROOM, rows.size * self.n_assets))
        counters, query = screen.compiled_query_state()
        kernels.closing_rounds(
            rows, step, rnd, max_rounds, stamp, kind, book.wallet, book.qty, book.entry,
            book.isolated, t.caps, t.rates, t.cums, fee, *walk, *query, fund, adl, *counts,
            *columns, at, columns[0].size, self.rows, self.qty, self.row_notional, self.bad,
            self.pos_notional, self.fee, self.bounds, self.prices, self.sums, self.net,
            self.result,
        )  # fmt: skip
        stop, _, handed, _, written, queries = self.result.tolist()
        fills.commit(written)
        screen.after_compiled_queries(counters, queries, handed)
        return stop

    @property
    def done(self) -> int:
        """Rounds the last call did (the last one not covered when it stopped for ADL)."""
        return int(self.result[1])

    @property
    def queries(self) -> int:
        """Queries the last call made: round ``i``'s rows were the changed rows of query
        ``i``, so the screen has seen the rows of the first ``queries`` rounds."""
        return int(self.result[5])

    def pending(self, rows, screen: MarginScreen) -> np.ndarray:
        """The accounts of the round the last call found no room for: ``rows`` when it did
        none, else those its last query found."""
        return rows if self.done == 0 else screen.below_rows(int(self.result[3]))

    def rounds(self, n: int) -> ClosedRounds:
        """The first ``n`` rounds of the last call, copied out of the buffers at once (but
        the per-position ``notional``, ``fee`` and ``bad``: views of the buffers)."""
        bounds = self.bounds[: n + 1].tolist()
        m = bounds[-1]
        return ClosedRounds(
            self.rows[:m].copy(), bounds, self.qty[:m].copy(), self.row_notional[:m].copy(),
            self.prices[:n].copy(), self.net[:n].copy(), self.pos_notional[:m], self.fee[:m],
            self.bad[:m], *self.sums[:n].T.tolist(),
        )  # fmt: skip

    def round(self, i: int) -> ClosedRound:
        """Round ``i`` of the last call (:meth:`rounds`)."""
        return self.rounds(i + 1).round(i)
