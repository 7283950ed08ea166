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
mark, or everything if no fraction does.

Fee: ``fee rate x closed notional``, paid from what equity remains, into the insurance fund.
Bad debt (negative equity of a unit once it is closed) is paid by the insurance fund; what the
fund cannot pay goes to auto-deleveraging (when enabled and implemented by a subclass or hook)
and is otherwise recorded as unfunded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.accounts import AccountBook
from model.partial import partial_fraction
from model.screen import BLOCK_ROWS, MarginScreen

__all__ = ["LiquidationEngine", "RoundRecord"]

KIND_FULL, KIND_PARTIAL, KIND_ADL = 0, 1, 2
KINDS = ("full", "partial", "adl")


@dataclass
class RoundRecord:
    """What one liquidation round did, for the contagion graph and the output tables.

    Attributes:
        step, round: when.
        rows: (k,) book rows of the accounts liquidated in the round.
        closed: (k, A) closed quantity per position, signed as the position was.
        exposure: (k, A) their positions when the round began.
        price_before, price_after: (A,) market prices around the round's execution.
        notional: (k,) notional closed per account.
    """

    step: int
    round: int
    rows: np.ndarray
    closed: np.ndarray
    exposure: np.ndarray
    price_before: np.ndarray
    price_after: np.ndarray
    notional: np.ndarray


@dataclass
class StepTotals:
    """Per-step liquidation counters (one row of steps.parquet)."""

    liquidations: int = 0
    rounds: int = 0
    liquidated_notional: float = 0.0
    bad_debt: float = 0.0
    fees: float = 0.0
    adl_notional: float = 0.0
    accounts: int = 0
    round_limit_hit: bool = False
    per_round_accounts: list = field(default_factory=list)


class LiquidationEngine:
    """Runs a step's liquidation rounds over an :class:`AccountBook` against a market.

    Attributes:
        insurance_fund: current balance of the fund.
        unfunded_bad_debt: losses nobody has paid (fund empty, no ADL).
        fills: list of per-round column dicts (concatenated by :meth:`fills_table`).
    """

    def __init__(
        self,
        book: AccountBook,
        market,
        *,
        liquidation: str = "partial",
        fee: float = 0.005,
        buffer: float = 0.1,
        insurance_fund: float = 0.0,
        max_rounds: int = 100,
        adl: bool = True,
        on_round=None,
        screen: bool = True,
    ):
        self.book = book
        self.market = market
        self.mode = liquidation
        self.fee = float(fee)
        self.buffer = float(buffer)
        self.insurance_fund = float(insurance_fund)
        self.unfunded_bad_debt = 0.0
        self.socialized_loss = 0.0  # losses beyond ADL taken pro rata from accounts' equity
        self.fund_paid = 0.0  # bad debt the fund has paid so far
        self.max_rounds = int(max_rounds)
        self.adl_enabled = bool(adl)
        self.on_round = on_round  # callback(RoundRecord), e.g. the contagion graph
        # Skip accounts provably far from their boundary (identical results, less work).
        self.screen = MarginScreen(book) if screen else None
        self.fills: list[dict] = []
        self.liquidation_count = np.zeros(book.n_traders, dtype=np.int64)
        self.accounts_ever = 0  # accounts liquidated at least once
        self.totals = StepTotals()

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
        cand = self.candidates(mark)
        book = self.book
        total = book.n_traders if cand is None else cand.size
        found = []
        # Blocks of rows keep the temporaries of the check small (peak memory).
        for lo in range(0, total, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, total)
            block = slice(lo, hi) if cand is None else cand[lo:hi]
            cross = book.cross_liquidatable(mark, block)
            iso = book.isolated_liquidatable(mark, block)
            local = np.flatnonzero(cross | iso.any(axis=1))
            rows = lo + local if cand is None else block[local]
            found.append((rows, cross[local], iso[local]))
        if len(found) == 1:
            return found[0]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, book.n_assets), bool)
        return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))

    # ---- one step's rounds ----------------------------------------------------------------
    def run_step(self, step: int) -> StepTotals:
        """Liquidate until a round liquidates nobody, or the round limit."""
        self.totals = StepTotals()
        liquidated_this_step = []
        for rnd in range(1, self.max_rounds + 1):
            mark = self.market.observe_mark()
            rows, cross, iso = self.detect(mark)
            if rows.size == 0:
                break
            self._liquidate_round(step, rnd, rows, cross, iso, mark)
            liquidated_this_step.append(rows)
            self.totals.rounds = rnd
        else:
            rows, _, _ = self.detect(self.market.mark)
            self.totals.round_limit_hit = rows.size > 0
        if liquidated_this_step:
            self.totals.accounts = int(np.unique(np.concatenate(liquidated_this_step)).size)
        return self.totals

    def _liquidate_round(self, step, rnd, rows, cross, iso, mark) -> None:
        book = self.book
        a = book.n_assets
        q = book.qty[rows]
        iso_pos = book.isolated[rows]
        open_pos = q != 0
        cross_unit = cross[:, None] & ~iso_pos & open_pos  # positions in a liquidated cross book
        iso_unit = iso  # isolated positions being liquidated
        notional = np.abs(q) * mark

        frac = np.zeros(q.shape)
        if self.mode == "full":
            frac[cross_unit | iso_unit] = 1.0
        else:
            # cross books: one fraction per account
            if cross.any():
                c_rows = np.flatnonzero(cross)
                eq = book.cross_equity(mark, rows[c_rows])
                n_c = np.where(cross_unit[c_rows], notional[c_rows], 0.0)
                f = partial_fraction(eq, n_c, book.tiers, self.fee, self.buffer)
                frac[c_rows] = np.where(cross_unit[c_rows], f[:, None], 0.0)
            # isolated positions: one fraction per position
            if iso_unit.any():
                r_i, a_i = np.nonzero(iso_unit)
                eq = book.isolated_equity(mark, rows)[r_i, a_i]
                n_i = np.zeros((r_i.size, a))
                n_i[np.arange(r_i.size), a_i] = notional[r_i, a_i]
                f = partial_fraction(eq, n_i, book.tiers, self.fee, self.buffer)
                frac[r_i, a_i] = f

        closed = frac * q  # signed as the position was; > 0 closes a long, i.e. sells
        flow = closed.sum(axis=0)
        price_before = self.market.price
        price = self.market.execute(flow, forced=True)
        realized, _ = book.fill(rows, -closed, price)
        self.market.take_other_side(-flow, price)
        closed_notional = np.abs(closed) * price

        # Fees, from what equity remains of each unit.
        fee_pos = np.zeros(q.shape)
        if cross.any():
            eq_after = book.cross_equity(price, rows)
            due = self.fee * np.where(cross_unit, closed_notional, 0.0).sum(axis=1)
            paid = np.where(cross, np.clip(due, 0.0, np.maximum(eq_after, 0.0)), 0.0)
            book.wallet[rows] -= paid
            fee_pos += _spread(paid, np.where(cross_unit, closed_notional, 0.0))
        if iso_unit.any():
            eq_after = book.isolated_equity(price, rows)
            due = self.fee * np.where(iso_unit, closed_notional, 0.0)
            paid = np.where(iso_unit, np.clip(due, 0.0, np.maximum(eq_after, 0.0)), 0.0)
            book.margin[rows] -= paid
            fee_pos += paid
        fees = float(fee_pos.sum())
        self.insurance_fund += fees

        # Bad debt of units that are now closed.
        bad_pos = np.zeros(q.shape)
        q_after = book.qty[rows]
        cross_closed = cross & ~((q_after != 0) & ~iso_pos).any(axis=1)
        cross_debt = np.where(cross_closed, np.maximum(-book.wallet[rows], 0.0), 0.0)
        if cross_debt.any():
            book.wallet[rows] += cross_debt
            bad_pos += _spread(cross_debt, np.where(cross_unit, closed_notional, 0.0))
        iso_closed = iso_unit & (q_after == 0)
        iso_debt = np.where(iso_closed, np.maximum(-book.margin[rows], 0.0), 0.0)
        if iso_debt.any():
            book.margin[rows] += iso_debt
            bad_pos += iso_debt
        book.release_closed_isolated(rows)
        # fees and bad debt wrote wallets and margins directly: money in minus money out
        book.mark_changed(rows, cash=float(cross_debt.sum() + iso_debt.sum()) - fees)
        bad_debt = float(bad_pos.sum())
        if bad_debt > 0:
            bankrupt_qty = np.where(bad_pos > 0, closed, 0.0).sum(axis=0)
            self._cover(step, rnd, bad_pos.sum(axis=0), price, bankrupt_qty)

        # Records.
        self.accounts_ever += int((self.liquidation_count[rows] == 0).sum())
        self.liquidation_count[rows] += 1
        kind = np.where(frac >= 1.0, KIND_FULL, KIND_PARTIAL)
        r_idx, a_idx = np.nonzero(closed)
        self.fills.append(
            {
                "step": np.full(r_idx.size, step, dtype=np.int64),
                "round": np.full(r_idx.size, rnd, dtype=np.int64),
                "trader_id": book.ids[rows[r_idx]],
                "asset": a_idx.astype(np.int64),
                "quantity": closed[r_idx, a_idx],
                "price": price[a_idx],
                "notional": closed_notional[r_idx, a_idx],
                "fee": fee_pos[r_idx, a_idx],
                "bad_debt": bad_pos[r_idx, a_idx],
                "kind": kind[r_idx, a_idx].astype(np.int8),
            }
        )
        t = self.totals
        t.liquidations += int(r_idx.size)
        t.liquidated_notional += float(closed_notional.sum())
        t.bad_debt += bad_debt
        t.fees += fees
        t.per_round_accounts.append(int(rows.size))
        if self.on_round is not None:
            self.on_round(
                RoundRecord(
                    step, rnd, rows, closed, q, price_before, price, closed_notional.sum(axis=1)
                )
            )

    # ---- losses beyond the fund -------------------------------------------------------------
    def _cover(self, step, rnd, bad_by_asset, price, bankrupt_qty=None) -> None:
        """Pay bad debt from the fund; what it cannot pay goes to ADL, then stays unfunded."""
        need = float(bad_by_asset.sum())
        paid = min(need, self.insurance_fund)
        self.insurance_fund -= paid
        self.fund_paid += paid
        short = need - paid
        if short <= 0:
            return
        by_asset = bad_by_asset * (short / need)
        if self.adl_enabled:
            if bankrupt_qty is not None:  # the part of the bankrupt positions left to ADL
                bankrupt_qty = bankrupt_qty * (short / need)
            by_asset = self.deleverage(step, rnd, by_asset, price, bankrupt_qty)
        self.unfunded_bad_debt += float(np.sum(by_asset))

    def deleverage(self, step, rnd, shortfall_by_asset, price, bankrupt_qty=None) -> np.ndarray:
        """Auto-deleveraging (:mod:`model.adl`): cover ``shortfall_by_asset`` from opposite-side
        profitable positions, then pro rata from accounts' equity; return what is left.

        Args:
            bankrupt_qty: (A,) closed quantity of the positions that left the debt, signed as
                they were (sets the side to deleverage and the bankruptcy price).
        """
        from model.adl import auto_deleverage

        return auto_deleverage(self, step, rnd, shortfall_by_asset, price, bankrupt_qty)

    # ---- output ---------------------------------------------------------------------------
    def fills_columns(self) -> dict[str, np.ndarray]:
        """Every fill so far as columns (asset and kind as integer codes)."""
        keys = [
            "step",
            "round",
            "trader_id",
            "asset",
            "quantity",
            "price",
            "notional",
            "fee",
            "bad_debt",
            "kind",
        ]
        if not self.fills:
            return {
                k: np.zeros(
                    0,
                    dtype=np.int64
                    if k in ("step", "round", "trader_id", "asset")
                    else np.int8
                    if k == "kind"
                    else float,
                )
                for k in keys
            }
        return {k: np.concatenate([f[k] for f in self.fills]) for k in keys}


def _spread(amount, weights):
    """Split each row's ``amount`` (k,) over its positions in proportion to ``weights`` (k, A)."""
    total = weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)
    # rows whose units closed no notional put the whole amount on their first position
    empty = (total[:, 0] <= 0) & (amount != 0)
    if empty.any():
        share[empty, 0] = 1.0
    return amount[:, None] * share
