"""Liquidation: detection, execution rounds, fees, insurance fund, bad debt.

One step's cascade is a sequence of rounds. In each round every account below maintenance is
liquidated at once: its forced orders are summed into one net flow per asset, that flow walks
the market's book (moving the price), and every fill of the round happens at the price after
it. The moved prices can push more accounts under, which the next round liquidates; rounds stop
when one liquidates nobody (or at ``margin.max_rounds``). Round numbers are the cascade's
generations.

A *liquidation unit* is an account's cross book (all its cross positions together) or one
isolated position. ``full`` closes the unit; ``partial`` closes the smallest common fraction of
its positions that restores ``equity - fee >= (1 + buffer) x maintenance`` at the current
mark, or everything if no fraction does. Venue rules bound that fraction (partial only beyond
the first tiers, Hyperliquid's chunks, dYdX's per-block limits: :mod:`model.limits`), and with
``margin.vault`` a unit far below maintenance is taken over by the liquidator vault at the mark
instead of being sold into the book (:mod:`model.vault`).

With collateral assets (:mod:`model.collateral`), after the round's positions are sold and its
fees charged, every account whose cross book was liquidated and whose wallet is below zero sells
collateral pro rata through the collateral assets' own markets until the wallet is covered or
the holdings are gone (Binance's auto-exchange); what is still negative is bad debt as below.

Fee: ``fee rate x closed notional``, paid from what equity remains, into the insurance fund;
with ``margin.takeover`` a unit closed whole gives the fund all the equity it has left (taken
over at its bankruptcy price). Bad debt (negative equity of a unit once it is closed) is paid by
the insurance fund; what the fund cannot pay goes to auto-deleveraging (:mod:`model.adl`, when
``margin.adl`` is on) and is otherwise recorded as unfunded.

Every fill goes to the engine's :class:`model.fills.FillLog`; every round is reported as a
:class:`RoundRecord` (to the contagion graph, and to anyone else listening on ``on_round``),
in order. When a step's rounds close whole cross books, a run of them is one compiled call
(:mod:`model.closing_rounds`) and its rounds are reported when the call returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from model import kernels
from model.accounts import AccountBook, RoundSums, column_sum, row_any, row_sum, take_rows
from model.adl import Deleveraging, auto_deleverage
from model.closing_rounds import ClosedRounds, ClosingRounds
from model.collateral import Sale, auto_exchange
from model.config import MarginConfig
from model.fills import FillLog, Kind
from model.limits import RoundLimits
from model.partial import partial_fraction
from model.screen import BLOCK_ROWS, MarginScreen
from model.vault import LiquidatorVault

if TYPE_CHECKING:
    from agents.market import Market

__all__ = ["LiquidationEngine", "RoundRecord", "StepTotals"]

# the code of a full liquidation's fills as an int (an IntEnum passed to a compiled call costs
# about ten microseconds more to dispatch than the int)
_FULL = int(Kind.FULL)


@dataclass
class RoundRecord:
    """What one liquidation round did, for the contagion graph, the narration and the tables.

    Attributes:
        step, round: when.
        rows: (k,) book rows of the accounts liquidated in the round.
        closed: (k, A) quantity sold into the book per position, signed as the position was
            (in a collateral asset's column: the units of it the account's auto-exchange sold).
        exposure: (k, A) their positions when the round began (in a collateral asset's
            column: the account's holdings of it, a long exposure).
        price_before, price_after: (A,) market prices around the round's execution.
        notional: (k,) notional closed per account.
        full: (k,) whether the account's liquidated unit(s) closed completely (else in part).
        fees: fees the round's accounts paid into the insurance fund.
        bad_debt: bad debt the round's closed units left.
        fund: the insurance fund after the round (after paying that bad debt).
        adl_notional: notional closed by auto-deleveraging to cover the round's bad debt.
        socialized: loss taken from paper profits when ADL could not cover it.
        unfunded: the part of the round's bad debt nobody paid.
        taken: (k, A) quantity the liquidator vault took over at the mark (not sold into the
            book, so it moved no price); None when the round had no vault.
        depth: (A,) the book's 1% depth the round's forced flow walked (quote notional at the
            initial price, after the detected accounts' quotes were cancelled).
        absorbed: who took the other side of the round's forced flow, per asset (makers,
            resting orders, market agent: :class:`model.liquidity.RoundLiquidity`); None on
            the static book without resting orders (the market agent took it all).
    """

    step: int
    round: int
    rows: np.ndarray
    closed: np.ndarray
    exposure: np.ndarray
    price_before: np.ndarray
    price_after: np.ndarray
    notional: np.ndarray
    full: np.ndarray
    fees: float
    bad_debt: float
    fund: float
    adl_notional: float
    socialized: float
    unfunded: float
    taken: np.ndarray | None = None
    depth: np.ndarray | None = None
    absorbed: object = None


@dataclass
class StepTotals:
    """Per-step liquidation counters (one row of steps.parquet)."""

    liquidations: int = 0
    rounds: int = 0
    liquidated_notional: float = 0.0
    bad_debt: float = 0.0
    fees: float = 0.0
    adl_notional: float = 0.0
    vault_notional: float = 0.0
    collateral_notional: float = 0.0
    accounts: int = 0
    round_limit_hit: bool = False
    per_round_accounts: list = field(default_factory=list)


@dataclass
class _Units:
    """The liquidation units of a round's accounts (see the module docstring).

    Attributes:
        cross: (k,) whether each account's cross book is liquidated.
        cross_pos: (k, A) the open positions of the liquidated cross books.
        iso_pos: (k, A) the isolated positions being liquidated.
    """

    cross: np.ndarray
    cross_pos: np.ndarray
    iso_pos: np.ndarray


@dataclass
class _Cover:
    """How the round's bad debt was paid: by the fund, by ADL, by a haircut, or not at all."""

    adl: Deleveraging | None = None
    unfunded: float = 0.0

    @property
    def adl_notional(self) -> float:
        return 0.0 if self.adl is None else self.adl.adl_notional

    @property
    def socialized(self) -> float:
        return 0.0 if self.adl is None else self.adl.socialized

    def amounts(self) -> tuple[float, float, float]:
        """``(adl_notional, socialized, unfunded)`` as :class:`RoundRecord` holds them."""
        return self.adl_notional, self.socialized, self.unfunded


@dataclass
class _Closing:
    """What a round closes and at which prices.

    Attributes:
        frac: (k, A) fraction of each position closed; 1.0 when every position closes
            whole.
        closed: (k, A) closed quantity, signed as the position was (book and vault together).
        taken: (k, A) whether the vault took the position over (else it was sold into the
            book); None without a vault.
        cross_taken: (k,) whether the vault took the account's cross book (None without one).
        price: (A,) the round's market price after its forced flow.
        fill_price: (k, A) each position's fill price (the mark for the vault's); (A,) when
            every position filled at the round's price.
        took: whether the vault took anything.
    """

    frac: np.ndarray | float
    closed: np.ndarray
    taken: np.ndarray | None
    cross_taken: np.ndarray | None
    price: np.ndarray
    fill_price: np.ndarray
    took: bool = False


@dataclass
class _Done:
    """What a round did to its accounts, for :meth:`LiquidationEngine._settle`.

    Attributes:
        exposure: (k, A) the round's exposure (:class:`RoundRecord`).
        price_before: (A,) market prices before the round's execution.
        notional: (k, A) notional closed per position.
        fee_pos, bad_pos: (k, A) fees paid and bad debt left, per position.
        full: (k,) whether each account's liquidated units closed completely.
        sales: the collateral sales of the round's accounts.
        row_notional: (k,) notional closed per account (``row_sum(notional)``).
        fees, bad_debt, liquidated: the round's fees, bad debt and closed notional (the
            sums of ``fee_pos``, ``bad_pos`` and ``notional``).
    """

    exposure: np.ndarray
    price_before: np.ndarray
    notional: np.ndarray
    fee_pos: np.ndarray
    bad_pos: np.ndarray
    full: np.ndarray
    sales: list
    row_notional: np.ndarray
    fees: float
    bad_debt: float
    liquidated: float

    @classmethod
    def summed(cls, exposure, price_before, notional, fee_pos, bad_pos, full, sales) -> _Done:
        """The round's record with its sums taken here (numpy)."""
        return cls(
            exposure, price_before, notional, fee_pos, bad_pos, full, sales, row_sum(notional),
            float(fee_pos.sum()), float(bad_pos.sum()), float(notional.sum()),
        )  # fmt: skip


class LiquidationEngine:
    """Runs a step's liquidation rounds over an :class:`AccountBook` against a market.

    Args:
        book, market: the account book and the market agent.
        margin: the ``[margin]`` section (liquidation mode, fee, buffer, insurance fund,
            round limit, ADL and its ranking, venue rules, vault).
        on_round: called with every :class:`RoundRecord`, in order (the contagion graph
            listens; rounds run by one compiled call are reported when it returns, and all
            at once to a listener with a ``record_closed_rounds`` method, as
            :meth:`model.contagion.ContagionRecorder.record_closed_rounds`).
        screen: skip accounts provably far from maintenance (:mod:`model.screen`); False
            checks every account every round (same results).
        rng: the random stream of the ``random`` ADL ranking (the model's ``rng``).

    Attributes:
        insurance_fund: current balance of the fund.
        unfunded_bad_debt: losses nobody has paid (fund empty, no ADL).
        socialized_loss: losses beyond ADL taken pro rata from paper profits.
        fund_paid: bad debt the fund has paid so far.
        fills: every forced fill so far (:class:`model.fills.FillLog`).
        liquidation_count: (n,) how many rounds liquidated each account so far.
        liquidation_total: accounts counted in ``liquidation_count`` so far, a number that
            grows with every write of it (a reader that saw the same total has no count to
            read again).
        vault: the liquidator vault (:class:`model.vault.LiquidatorVault`), or None.
    """

    def __init__(
        self,
        book: AccountBook,
        market: Market,
        margin: MarginConfig,
        *,
        on_round: Callable[[RoundRecord], None] | None = None,
        screen: bool = True,
        rng=None,
    ):
        self.book = book
        self.market = market
        self.mode = margin.liquidation
        self.fee = float(margin.fee)
        self.buffer = float(margin.buffer)
        self.insurance_fund = float(margin.insurance_fund)
        self.unfunded_bad_debt = 0.0
        self.socialized_loss = 0.0
        self.fund_paid = 0.0
        self.max_rounds = int(margin.max_rounds)
        self.adl_enabled = bool(margin.adl)
        self.adl_ranking = margin.adl_ranking
        self.adl_profit_cap = bool(margin.adl_profit_cap)
        self.rng = rng
        self.takeover = bool(margin.takeover)
        self.limits = RoundLimits(margin, book.tiers, book.n_traders)
        self.vault = (
            LiquidatorVault(book.n_assets, margin.vault_threshold) if margin.vault else None
        )
        self.on_round = on_round  # callback(RoundRecord), e.g. the contagion graph
        # Skip accounts provably far from their boundary (identical results, less work).
        self.screen = MarginScreen(book) if screen else None
        self.fills = FillLog(book.ids)
        self.liquidation_count = np.zeros(book.n_traders, dtype=np.int64)
        self.liquidation_total = 0
        self.accounts_ever = 0  # accounts liquidated at least once
        # per row: the number of the last step (run_step call) that liquidated it, so that a
        # step counts its distinct accounts in O(liquidated) (int32: 4 bytes a trader)
        self._stamp = 0
        self._last_stamp = np.zeros(book.n_traders, dtype=np.int32)
        self.totals = StepTotals()
        # resting orders and quotes inside the rounds (model.liquidity; None: the static book)
        self.liquidity = None
        self._walked_depth = None  # the depth the last round's flow walked
        self._closing: ClosingRounds | None = None  # (rounds in compiled calls: when used)
        self._flag_buffers = (np.ones(0, bool), np.zeros((0, book.n_assets), bool))

    # ---- detection ------------------------------------------------------------------------
    def candidates(self, mark) -> np.ndarray | None:
        """Sorted rows that could be below maintenance at ``mark`` (None: all of them).

        With the margin screen (:mod:`model.screen`) these are the accounts whose headroom the
        prices have reached; every other account is provably above maintenance.
        """
        return None if self.screen is None else self.screen.candidates(mark)

    def detect(self, mark) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows with a unit below maintenance, and which units.

        Returns:
            ``(rows, cross, iso)``: rows (k,), whether each row's cross book is liquidatable
            (k,), and which of its isolated positions are (k, A).
        """
        book = self.book
        if self.screen is not None and self._checks_cross_books_only():  # (compiled calls)
            rows = self.screen.cross_liquidatable(mark)
            return rows, *self._flags(rows.size)
        cand = self.candidates(mark)
        total = book.n_traders if cand is None else cand.size
        found = []
        # Blocks of rows keep the temporaries of the check small (peak memory).
        for lo in range(0, total, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, total)
            block = slice(lo, hi) if cand is None else cand[lo:hi]
            cross, iso = book.liquidatable(mark, block)
            if book.any_isolated:
                local = np.flatnonzero(cross | row_any(iso))
                cross, iso = cross[local], iso[local]
            else:  # only cross books: those found are liquidatable, no position is isolated
                local = np.flatnonzero(cross)
                cross, iso = np.ones(local.size, bool), np.zeros((local.size, iso.shape[1]), bool)
            rows = lo + local if cand is None else block[local]
            found.append((rows, cross, iso))
        if len(found) == 1:
            return found[0]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, book.n_assets), bool)
        return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))

    def _checks_cross_books_only(self) -> bool:
        """Whether detection is the cross books' check alone, read from the book by one
        compiled call (:meth:`model.accounts.AccountBook.cross_liquidatable_rows`): a
        compiled book with no isolated position and no collateral asset."""
        book = self.book
        return not book.any_isolated and book.collateral is None and book.compiled()

    # ---- one step's rounds ----------------------------------------------------------------
    def run_step(self, step: int) -> StepTotals:
        """Liquidate until a round liquidates nobody, or the round limit."""
        self.totals = StepTotals()
        self.limits.new_step()
        self._stamp += 1
        rnd = 1
        while rnd <= self.max_rounds:
            mark = self.market.observe_mark()
            rows, cross, iso = self.detect(mark)
            if rows.size == 0:
                return self.totals
            if self._runs_closing_rounds():  # this round and the next in compiled calls
                rnd, over = self._run_closing_rounds(step, rnd, rows)
                if over:
                    return self.totals
                continue
            self._report(rnd, self._liquidate_round(step, rnd, rows, cross, iso, mark))
            rnd += 1
        rows, _, _ = self.detect(self.market.mark)
        self.totals.round_limit_hit = rows.size > 0
        return self.totals

    def _runs_closing_rounds(self) -> bool:
        """Whether the step's rounds go to compiled calls (:mod:`model.closing_rounds`):
        rounds of whole closes (:meth:`_closes_cross_books_only`) queried by the screen, and
        the mark is the market price."""
        return (
            self.screen is not None
            and self.market.mark_lag == 0
            and self._closes_cross_books_only()
        )

    def _run_closing_rounds(self, step, rnd, rows) -> tuple[int, bool]:
        """Round ``rnd`` (its accounts ``rows``) and the rounds after it in compiled calls
        (:class:`model.closing_rounds.ClosingRounds`), each booked and reported as
        :meth:`_close_cross_books` books and reports its round. Returns the next round and
        whether the step's rounds are over (a query found nobody)."""
        if self._closing is None:
            self._closing = ClosingRounds(self.book.n_assets)
        runner, market = self._closing, self.market
        fund = np.array([self.insurance_fund, self.fund_paid, self.unfunded_bad_debt])
        rules = (self.max_rounds, self._stamp, _FULL, self.fee, self.adl_enabled)
        counts = (self.liquidation_count, self._last_stamp)
        while True:
            stop = runner.run(
                rows, step, rnd, rules=rules, book=self.book, walk=(*market.walk_state(),
                market.depth), screen=self.screen, fills=self.fills, fund=fund, counts=counts,
            )  # fmt: skip
            self.insurance_fund, self.fund_paid, self.unfunded_bad_debt = fund.tolist()
            done = runner.done - (stop == kernels.ROUNDS_COVER)
            self._book_closed_rounds(step, rnd, runner, done)
            rnd += done
            if stop != kernels.ROUNDS_ROOM:
                break
            rows = runner.pending(rows, self.screen)
            runner.make_room(rows.size)
        if stop == kernels.ROUNDS_COVER:  # the round's cover (ADL) and the rest of it here
            r = runner.round(done)
            self.book.book_close(r.rows, r.traded, r.paid, r.debt, r.any_debt, r.net)
            self._walked_depth = r.depth
            self._report(rnd, self._closed_round(step, rnd, r.rows, r))
            rnd += 1
        market.observe_mark()  # (without a lag: the mark of the last query)
        return rnd, stop == kernels.ROUNDS_DONE

    def _book_closed_rounds(self, step, rnd, runner: ClosingRounds, done: int) -> None:
        """Book and report the first ``done`` rounds of the last compiled call, from round
        ``rnd`` (:meth:`_run_closing_rounds`), as :meth:`_close_cross_books` and
        :meth:`_log_closed_books` book and report each of theirs: the book's aggregates
        round by round and the rows of all as one write (those the call's queries read, as
        seen by the screen), then round by round the counts and the step's counters, then the
        report to ``on_round`` (the fund paid what it could; no ADL in the call)."""
        if not done:
            return
        r = runner.rounds(done)
        closes = zip(r.traded, r.paid, r.debt, r.any_debt, r.net, strict=True)
        seen = r.bounds[min(runner.queries, done)]
        self.book.book_closes(r.rows, closes, seen=seen, seen_by="screen")
        for i in range(done):
            lo, hi = r.bounds[i], r.bounds[i + 1]
            self._add_counts(hi - lo, int(r.first_ever[i]), int(r.first_in_step[i]))
            self.totals.liquidations += int(r.fills[i])
            self._add_round(hi - lo, r.liquidated[i], r.bad_debt[i], r.fees[i])
        self._walked_depth = r.prices[done - 1, 2]
        self._report_closed_rounds(step, rnd, r)

    def _report_closed_rounds(self, step, rnd, r: ClosedRounds) -> None:
        """Count the rounds of ``r`` (from round ``rnd``) done and tell ``on_round``: all at
        once to a listener that takes a compiled call's rounds so (its
        ``record_closed_rounds``, as the contagion recorder's
        :meth:`model.contagion.ContagionRecorder.record_closed_rounds`), else round by
        round."""
        n = len(r.bounds) - 1
        at_once = getattr(self.on_round, "record_closed_rounds", None)
        if at_once is not None:
            self.totals.rounds = rnd + n - 1
            at_once(step, rnd, r, lambda i: self._closed_rounds_record(step, rnd, r, i))
            return
        for i in range(n):
            record = None
            if self.on_round is not None:
                record = self._closed_rounds_record(step, rnd, r, i)
            self._report(rnd + i, record)

    def _closed_rounds_record(self, step, rnd, r: ClosedRounds, i: int) -> RoundRecord:
        """The :class:`RoundRecord` of round ``i`` of ``r`` (round ``rnd + i`` of ``step``)."""
        lo, hi, p = r.bounds[i], r.bounds[i + 1], r.prices[i]
        return self._whole_close_record(
            step, rnd + i, r.rows[lo:hi], r.qty[lo:hi], p[:2], r.row_notional[lo:hi],
            (r.fees[i], r.bad_debt[i]), r.fund[i], (0.0, 0.0, r.unfunded[i]), p[2],
        )  # fmt: skip

    def _report(self, rnd: int, record: RoundRecord | None) -> None:
        """Count round ``rnd`` done and tell ``on_round`` (``record``: the round's)."""
        self.totals.rounds = rnd
        if self.on_round is not None:
            self.on_round(record)

    def _liquidate_round(self, step, rnd, rows, cross, iso, mark) -> RoundRecord:
        """One round: close the units, charge fees, cover bad debt, record the fills."""
        if self._closes_cross_books_only():
            return self._close_cross_books(step, rnd, rows)
        q = take_rows(self.book.qty, rows)
        exposure = self._with_holdings(q, rows)
        units = self._units(rows, cross, iso, q)
        price_before = self.market.price
        c = self._close(rows, units, q, mark)
        closed_notional = np.abs(c.closed) * c.fill_price
        sold, sold_notional = units, closed_notional
        if c.took:  # the vault's part was not sold: no fee
            sold = _Units(
                units.cross & ~c.cross_taken, units.cross_pos & ~c.taken, units.iso_pos & ~c.taken
            )
            sold_notional = np.where(c.taken, 0.0, closed_notional)
        open_after = take_rows(self.book.qty, rows) != 0
        fee_pos = self._charge_fees(rows, sold, sold_notional, c.price, open_after)
        sales = []
        if self.book.collateral is not None:  # negative wallets sell collateral
            sales = auto_exchange(self.book, self.market, rows[units.cross])
        if c.took:
            self.vault.take_equity(self.book, rows, c.cross_taken, c.taken & units.iso_pos)
        bad_pos, full = self._write_off(rows, units, closed_notional, open_after)
        done = _Done.summed(exposure, price_before, closed_notional, fee_pos, bad_pos, full, sales)
        return self._settle(step, rnd, rows, c, done)

    def _closes_cross_books_only(self) -> bool:
        """Whether every round closes whole cross books into the market agent's book and
        nothing else happens in it: ``full`` liquidation, no isolated position, no vault,
        collateral asset, resting order or venue limit, no takeover; and the book's arithmetic
        is compiled (:mod:`model.kernels`): the book that :meth:`_checks_cross_books_only`
        checks, closed whole. :meth:`_close_cross_books` then does the round."""
        return (
            self.mode == "full"
            and self.vault is None
            and self.liquidity is None
            and self.limits.bounds_nothing
            and not self.takeover
            and self.market.walks_static_book()
            and self._checks_cross_books_only()
        )

    def _close_cross_books(self, step, rnd, rows) -> RoundRecord:
        """:meth:`_liquidate_round` when :meth:`_closes_cross_books_only`: the same rules (every
        position of the accounts sold at the price after the round's flow, the fee from what
        equity is left, negative wallets written off as bad debt), and the same records, in
        two compiled calls: the book's reads, the market's walk of the round's flow, the
        book's arithmetic and writes (:meth:`model.accounts.AccountBook.close_cross_books`),
        then the counts and the fill log (:meth:`_log_closed_books`). Equal to the bit to the
        general path (tests/test_kernels.py)."""
        self._walked_depth = self.market.depth_now
        s = self.book.close_cross_books(rows, self.fee, self.market.walk_state())
        self.insurance_fund += s.fees
        return self._closed_round(step, rnd, rows, s)

    def _closed_round(self, step, rnd, rows, s: RoundSums) -> RoundRecord:
        """The rest of a round of whole closes once the books are closed (``s``) and the fund
        has the fees: the bad debt covered, the fills logged, the round added up."""
        q, price = s.qty, s.price
        cover = self._cover_round(step, rnd, s.bad, q, price) if s.bad_debt > 0 else _Cover()
        self._log_closed_books(step, rnd, rows, q, price, s)
        self._add_round(len(rows), s.liquidated, s.bad_debt, s.fees)
        return self._whole_close_record(
            step, rnd, rows, q, (s.price_before, price), s.row_notional, (s.fees, s.bad_debt),
            self.insurance_fund, cover.amounts(), self._walked_depth,
        )  # fmt: skip

    def _whole_close_record(
        self, step, rnd, rows, qty, prices, notional, losses, fund, amounts, depth
    ) -> RoundRecord:
        """The :class:`RoundRecord` of a round of whole closes: every position (``qty``)
        closed whole at the round's price (``prices``: before and after), ``notional`` per
        row, ``losses`` its fees and bad debt; ``fund`` after it, ``amounts`` its ADL
        notional, socialised and unfunded loss, ``depth`` walked."""
        full, _ = self._flags(len(rows))
        return RoundRecord(
            step, rnd, rows, qty, qty, *prices, notional, full, *losses, fund, *amounts, None,
            depth,
        )  # fmt: skip

    def _flags(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only (k,) all True and (k, A) all False: a round's flags when every unit is
        a cross book closed whole, views of buffers kept between rounds (grown by
        doubling)."""
        true, false = self._flag_buffers
        if true.size < k:
            size = max(k, 2 * true.size)
            true, false = np.ones(size, bool), np.zeros((size, self.book.n_assets), bool)
            true.flags.writeable = false.flags.writeable = False
            self._flag_buffers = true, false
        return true[:k], false[:k]

    def _log_closed_books(self, step, rnd, rows, q, price, s) -> None:
        """:meth:`_record_fills` of a round of whole closes in one compiled call
        (:func:`model.kernels.log_closed_books`): the accounts counted, and every position's
        fill written into the fill log's room (:meth:`model.fills.FillLog.reserve`)."""
        columns, at = self.fills.reserve(q.size)
        counts = np.empty(2, dtype=np.int64)
        written = kernels.log_closed_books(
            rows, q, price, s.notional, s.fee, s.bad, step, rnd, _FULL, self.liquidation_count,
            self._last_stamp, self._stamp, *columns, at, counts,
        )  # fmt: skip
        self.fills.commit(written)
        self._add_counts(len(rows), *counts.tolist())
        self.totals.liquidations += written

    def _settle(self, step, rnd, rows, c: _Closing, done: _Done) -> RoundRecord:
        """The end of a round: pay its fees into the fund and its bad debt from it, log its
        fills and collateral sales, and report it."""
        fees, bad_debt = done.fees, done.bad_debt
        self.insurance_fund += fees
        cover = _Cover()
        if bad_debt > 0:
            cover = self._cover_round(step, rnd, done.bad_pos, c.closed, c.price)
        self._record_fills(step, rnd, rows, c, done.notional, done.fee_pos, done.bad_pos)
        self._add_to_totals(rows, c, done)
        closed, price_after = self._record_sales(step, rnd, rows, done.sales, c)
        return RoundRecord(
            step=step,
            round=rnd,
            rows=rows,
            closed=closed,
            exposure=done.exposure,
            price_before=done.price_before,
            price_after=price_after,
            notional=done.row_notional,
            full=done.full,
            fees=fees,
            bad_debt=bad_debt,
            fund=self.insurance_fund,
            adl_notional=cover.adl_notional,
            socialized=cover.socialized,
            unfunded=cover.unfunded,
            taken=None if c.taken is None else np.where(c.taken, c.closed, 0.0),
            depth=self._walked_depth,
            absorbed=None if self.liquidity is None else self.liquidity.last,
        )

    def _cover_round(self, step, rnd, bad_pos, closed, price) -> _Cover:
        """Cover a round's bad debt (``bad_pos`` (k, A), left by the positions ``closed``):
        :meth:`_cover`, and the ADL fills logged (before the round's own, as the ADL rows of
        the fill log have always come)."""
        bankrupt_qty = column_sum(np.where(bad_pos > 0, closed, 0.0))
        cover = self._cover(column_sum(bad_pos), price, bankrupt_qty)
        if cover.adl is not None:
            self._record_adl(step, rnd, cover.adl)
        return cover

    # ---- the steps of a round -------------------------------------------------------------
    def _units(self, rows, cross, iso, q) -> _Units:
        """Which positions of the round's accounts belong to a liquidated unit."""
        cross_pos = cross[:, None] & (q != 0)
        if self.book.any_isolated:
            cross_pos &= ~take_rows(self.book.isolated, rows)
        return _Units(cross, cross_pos, iso)

    def _close(self, rows, units: _Units, q, mark) -> _Closing:
        """Hand the vault the units below its threshold (if there is a vault), decide the
        fractions of the others, sell them into the book, and give the vault its part at the
        mark."""
        if self.vault is None:  # everything is sold into the book
            frac = self._fractions(rows, units, q, mark)
            closed = frac * q  # signed as the position was; > 0 closes a long, i.e. sells
            price = self._execute(rows, closed)
            return _Closing(frac, closed, None, None, price, price)
        cross_taken, iso_taken = self.vault.select(
            self.book, rows, units.cross, units.cross_pos, units.iso_pos, mark
        )
        taken = (cross_taken[:, None] & units.cross_pos) | iso_taken
        sold = _Units(units.cross & ~cross_taken, units.cross_pos & ~taken, units.iso_pos & ~taken)
        frac = np.where(taken, 1.0, self._fractions(rows, sold, q, mark))
        closed = frac * q
        price = self._execute(rows, np.where(taken, 0.0, closed))
        took = bool(taken.any())
        if took:
            self.vault.take_positions(self.book, rows, np.where(taken, q, 0.0), mark)
        fill_price = np.where(taken, mark, price)
        return _Closing(frac, closed, taken, cross_taken, price, fill_price, took)

    def _fractions(self, rows, units: _Units, q, mark) -> np.ndarray:
        """(k, A) fraction of each position to close: 1 in a liquidated unit under ``full``;
        under ``partial`` one common fraction per cross book and one per isolated position;
        then bounded by the venue rules (:mod:`model.limits`)."""
        frac = np.zeros(q.shape)
        notional = np.abs(q) * mark
        if self.mode == "full":
            frac[units.cross_pos | units.iso_pos] = 1.0
        else:
            self._partial_fractions(frac, rows, units, notional, mark)
        return self.limits.bound(rows, frac, notional)

    def _partial_fractions(self, frac, rows, units: _Units, notional, mark) -> None:
        """Write into ``frac`` the smallest restoring fraction of each unit (:mod:`model.partial`),
        or 1 for units the tier rule closes whole."""
        book = self.book
        if units.cross.any():  # cross books: one fraction per account
            c_rows = np.flatnonzero(units.cross)
            eq = book.cross_equity(mark, rows[c_rows])
            n_c = np.where(units.cross_pos[c_rows], notional[c_rows], 0.0)
            f = partial_fraction(
                eq, n_c, book.tiers, self.fee, self.buffer, compiled=book.compiled()
            )
            f = np.where(self.limits.partial_allowed(n_c), f, 1.0)
            frac[c_rows] = np.where(units.cross_pos[c_rows], f[:, None], 0.0)
        if units.iso_pos.any():  # isolated positions: one fraction per position
            r_i, a_i = np.nonzero(units.iso_pos)
            eq = book.isolated_equity(mark, rows)[r_i, a_i]
            n_i = np.zeros((r_i.size, book.n_assets))
            n_i[np.arange(r_i.size), a_i] = notional[r_i, a_i]
            f = partial_fraction(
                eq, n_i, book.tiers, self.fee, self.buffer, compiled=book.compiled()
            )
            frac[r_i, a_i] = np.where(self.limits.partial_allowed(n_i), f, 1.0)

    def _execute(self, rows, closed) -> np.ndarray:
        """Send the round's net forced flow through the market and fill every position at the
        price after it (:meth:`_walk_book`); return that price."""
        price = self._walk_book(rows, closed)
        self.book.fill(rows, -closed, price)
        return price

    def _walk_book(self, rows, closed) -> np.ndarray:
        """Send the net flow of the round's ``closed`` quantities through the market (the
        market agent takes the other side) and return the price after it, at which every
        position of the round fills.

        With resting orders or market makers (``self.liquidity``), the detected accounts'
        resting orders and quotes are cancelled and the makers requote before the walk.
        """
        flow = column_sum(closed)
        if self.liquidity is not None:
            self.liquidity.before_walk(rows)
        self._walked_depth = self.market.depth_now
        price = self.market.execute(flow, forced=True)
        self.market.take_other_side(-flow, price)
        return price

    def _charge_fees(self, rows, units: _Units, closed_notional, price, open_after) -> np.ndarray:
        """Charge ``fee x closed notional`` to each unit, capped at what equity it has left
        (with ``margin.takeover``, a unit closed whole gives all it has left); return the fees
        per position (a cross book's fee spread over its closed notional). ``open_after``:
        (k, A) which positions are still open."""
        book = self.book
        fee_pos = np.zeros(closed_notional.shape)
        if units.cross.any():
            cross_notional = np.where(units.cross_pos, closed_notional, 0.0)
            eq_after = book.cross_equity(price, rows)
            due = self.fee * row_sum(cross_notional)
            if self.takeover:
                whole = units.cross & ~(open_after & units.cross_pos).any(axis=1)
                due = np.where(whole, eq_after, due)
            paid = np.where(units.cross, np.clip(due, 0.0, np.maximum(eq_after, 0.0)), 0.0)
            book.charge(rows, wallet=paid)
            fee_pos += _spread(paid, cross_notional)
        if book.any_isolated and units.iso_pos.any():
            eq_after = book.isolated_equity(price, rows)
            due = self.fee * np.where(units.iso_pos, closed_notional, 0.0)
            if self.takeover:
                due = np.where(units.iso_pos & ~open_after, eq_after, due)
            paid = np.where(units.iso_pos, np.clip(due, 0.0, np.maximum(eq_after, 0.0)), 0.0)
            book.charge(rows, margin=paid)
            fee_pos += paid
        return fee_pos

    def _write_off(self, rows, units: _Units, closed_notional, open_after):
        """Bring the negative balance of every unit now closed back to zero: that is bad debt,
        for the fund to pay. Return the bad debt per position and which accounts' liquidated
        units closed completely (``open_after``: (k, A) which positions are still open)."""
        book = self.book
        bad_pos = np.zeros(closed_notional.shape)
        open_cross = open_after
        if book.any_isolated:
            open_cross = open_after & ~take_rows(book.isolated, rows)
        cross_closed = units.cross & ~row_any(open_cross)
        cross_debt = np.where(cross_closed, np.maximum(-take_rows(book.wallet, rows), 0.0), 0.0)
        if cross_debt.any():
            book.credit(rows, wallet=cross_debt)
            bad_pos += _spread(cross_debt, np.where(units.cross_pos, closed_notional, 0.0))
        if book.any_isolated:
            iso_closed = units.iso_pos & ~open_after
            iso_debt = np.where(iso_closed, np.maximum(-book.margin[rows], 0.0), 0.0)
            if iso_debt.any():
                book.credit(rows, margin=iso_debt)
                bad_pos += iso_debt
        book.release_closed_isolated(rows)
        full = ~row_any(open_after & (units.cross_pos | units.iso_pos))
        return bad_pos, full

    def _record_fills(self, step, rnd, rows, c: _Closing, notional, fee, bad) -> None:
        """Log the round's fills and count the accounts liquidated (ever, and in this step:
        a row stamped with an earlier step is new to this one)."""
        self._count_liquidations(rows)
        if isinstance(c.frac, np.ndarray):
            kind = np.where(c.frac >= 1.0, Kind.FULL, Kind.PARTIAL)
            if c.took:
                kind = np.where(c.taken, Kind.VAULT, kind)
        else:  # every position closed whole
            kind = Kind.FULL
        traders, asset, pick = self._fills_of(rows, c.closed)
        price = c.fill_price  # (A,), or (k, A) with the vault's fills at the mark
        self.fills.append(
            step, rnd, traders, asset, pick(c.closed),
            price[asset] if price.ndim == 1 else pick(price), pick(notional), pick(fee),
            pick(bad), pick(kind) if isinstance(kind, np.ndarray) else kind,
        )  # fmt: skip
        self.totals.liquidations += traders.size

    @staticmethod
    def _fills_of(rows, closed):
        """The round's fills, its positions closed in row-major order: their accounts, their
        assets (one index when every fill is of asset 0) and a function that picks their
        values out of a (k, A) array."""
        if closed.shape[1] == 1 and np.count_nonzero(closed) == rows.size:
            return rows, 0, np.ravel  # one asset, every position closed: the rows in order
        at = np.flatnonzero(closed)
        r_idx = at // closed.shape[1]
        a_idx = at - r_idx * closed.shape[1]
        if at.size == closed.size:  # every position closed: the (k, A) arrays in order
            return rows.take(r_idx), a_idx, np.ravel
        # (np.take of the flat positions: faster than two index arrays)
        return rows.take(r_idx), a_idx, lambda x: np.ravel(x).take(at)

    def _count_liquidations(self, rows) -> None:
        """Count the round's accounts: liquidated ever, and in this step (a row stamped with
        an earlier step is new to this one); for a large book in one compiled call."""
        if self.book.compiled():
            ever, in_step = kernels.count_liquidations(
                rows, self.liquidation_count, self._last_stamp, self._stamp
            )
            self._add_counts(rows.size, ever, in_step)
            return
        count = self.liquidation_count[rows]
        ever = int(np.count_nonzero(count == 0))
        self.liquidation_count[rows] = count + 1
        in_step = int(np.count_nonzero(self._last_stamp[rows] != self._stamp))
        self._last_stamp[rows] = self._stamp
        self._add_counts(rows.size, ever, in_step)

    def _add_counts(self, k: int, ever: int, in_step: int) -> None:
        """Add a round's ``k`` accounts to the running total, ``ever`` of them liquidated for
        the first time and ``in_step`` for the first time in this step."""
        self.liquidation_total += k
        self.accounts_ever += ever
        self.totals.accounts += in_step

    def _add_to_totals(self, rows, c: _Closing, done: _Done) -> None:
        """Add the round to the step's counters."""
        if c.took:
            self.totals.vault_notional += float(done.notional[c.taken].sum())
        self._add_round(len(rows), done.liquidated, done.bad_debt, done.fees)

    def _add_round(self, k: int, liquidated: float, bad_debt: float, fees: float) -> None:
        """Add a round of ``k`` accounts, its closed notional, bad debt and fees to the step's
        counters."""
        t = self.totals
        t.liquidated_notional += liquidated
        t.bad_debt += bad_debt
        t.fees += fees
        t.per_round_accounts.append(int(k))

    # ---- collateral --------------------------------------------------------------------------
    def _with_holdings(self, q, rows) -> np.ndarray:
        """The round's exposure: positions, and in each collateral asset's column the holdings
        (``q`` itself without collateral assets)."""
        coll = self.book.collateral
        if coll is None:
            return q
        exposure = q.copy()
        exposure[:, coll.cols] = self.book.holdings[rows]
        return exposure

    def _record_sales(self, step, rnd, rows, sales: list[Sale], c: _Closing):
        """Log the round's collateral sales (kind ``collateral``) and add their notional to the
        step's; return what the round sold into the books per account and asset (positions,
        and the collateral in its assets' columns) and the prices after it."""
        closed = c.closed if c.taken is None else np.where(c.taken, 0.0, c.closed)
        if not sales:
            return closed, c.price
        closed = closed.copy() if closed is c.closed else closed  # (written below)
        cols = self.book.collateral.cols
        price = c.price.copy()
        order = np.argsort(rows, kind="stable")
        for sale in sales:
            at = order[np.searchsorted(rows, sale.rows, sorter=order)]
            r_idx, c_idx = np.nonzero(sale.sold)
            qty = sale.sold[r_idx, c_idx]
            fill_price = sale.price[c_idx]
            notional = qty * fill_price
            self.fills.append(
                step, rnd, sale.rows[r_idx], cols[c_idx], qty, fill_price, notional, 0.0, 0.0,
                Kind.COLLATERAL,
            )  # fmt: skip
            self.totals.collateral_notional += float(notional.sum())
            closed[at[:, None], cols[None, :]] += sale.sold
            price[cols] = sale.price
        return closed, price

    # ---- losses beyond the fund -------------------------------------------------------------
    def _cover(self, bad_by_asset, price, bankrupt_qty) -> _Cover:
        """Pay bad debt from the fund; what it cannot pay goes to ADL, then stays unfunded.

        Args:
            bad_by_asset: (A,) the round's bad debt per asset.
            price: (A,) the round's execution price.
            bankrupt_qty: (A,) closed quantity of the positions that left the debt, signed as
                they were (sets the side to deleverage and the bankruptcy price).
        """
        need = float(bad_by_asset.sum())
        paid = min(need, self.insurance_fund)
        self.insurance_fund -= paid
        self.fund_paid += paid
        short = need - paid
        if short <= 0:
            return _Cover()
        by_asset = bad_by_asset * (short / need)
        adl = None
        if self.adl_enabled:
            # the part of the bankrupt positions left to ADL
            bankrupt_qty = bankrupt_qty * (short / need)
            adl = auto_deleverage(
                self.book,
                self.market,
                by_asset,
                price,
                bankrupt_qty,
                ranking=self.adl_ranking,
                profit_cap=self.adl_profit_cap,
                rng=self._rng(),
            )
            self.socialized_loss += adl.socialized
            by_asset = adl.unfunded
        unfunded = float(np.sum(by_asset))
        self.unfunded_bad_debt += unfunded
        return _Cover(adl, unfunded)

    def _rng(self):
        """The random stream of the ``random`` ADL ranking: the one given, else the model's."""
        if self.rng is not None:
            return self.rng
        return getattr(getattr(self.market, "model", None), "rng", None)

    def _record_adl(self, step, rnd, adl: Deleveraging) -> None:
        """Log the ADL fills (no fee, no bad debt) and add their notional to the step's."""
        self.fills.append(
            step,
            rnd,
            adl.rows,
            adl.asset,
            adl.quantity,
            adl.price,
            adl.notional,
            0.0,
            0.0,
            Kind.ADL,
        )
        for notional in adl.notional_by_asset:  # asset by asset, in the order they were closed
            self.totals.adl_notional += float(notional)


def _spread(amount, weights):
    """Split each row's ``amount`` (k,) over its positions in proportion to ``weights`` (k, A)."""
    total = row_sum(weights)[:, None]
    share = np.zeros(np.shape(weights))
    np.divide(weights, total, out=share, where=total > 0)  # (0 where the total is not > 0)
    # rows whose units closed no notional put the whole amount on their first position
    empty = (total[:, 0] <= 0) & (amount != 0)
    if empty.any():
        share[empty, 0] = 1.0
    return amount[:, None] * share
