"""Liquidity that comes from agents: the makers' accounts, their fills, resting orders.

``[liquidity]`` (docs/market-realism.md, "Liquidity"). Under ``model = "market_makers"`` the
book is the quotes of ``M`` market makers (:mod:`agents.market_maker`) plus a backstop of the
market agent (:mod:`agents.book`). The makers are margin accounts: rows of the
:class:`model.accounts.AccountBook` after the traders (``n_traders .. n_traders + M - 1``), so
margin checks, partial liquidation, fees, bad debt, ADL and funding apply to them as to anyone.
They start with ``basis_share`` of the market agent's initial position, opened at the initial
price and hedged off-venue. Under ``value_orders = "in_rounds"`` value traders rest ladders
that trade inside the liquidation rounds (:mod:`model.ladders`), under either model.

:class:`Liquidity` is the wiring. It is the market's counterparty hook: every walk's makers'
share (pro rata to their quotes on each side) and resting orders' fills are booked here, at the
walk's price, with the market agent on the other side, so the market agent keeps what the
backstop absorbed. The model calls it at the phases of a step:

1. ``begin_step`` (after the fundamentals move): ADL of the makers' venue legs is noted, makers
   whose capital is gone are topped up with fresh capital once ``maker_reentry_steps`` have
   passed, ADL memory fades, makers with equity quote again, hedges trade at the fundamental,
   quotes are set from the makers' state; under ``value_orders = "resting"`` the value
   ladders are posted;
2. the voluntary batch walks the book (the makers absorb their share);
3. each liquidation round, after detection, ``before_walk``: the value ladders are posted (at
   the first round), the detected accounts' ladders and quotes are cancelled, the makers
   requote from their state after the last round (inventory, margin, capital, ADL), and the
   round's forced flow walks the new book and the resting orders;
4. ``end_step``: the step's venue return feeds the makers' volatility estimates; the value
   rule takes its ladder fills into its overlays and the ladders expire.

Money: the makers' off-venue cash and hedges and the market agent's outside book (the other side
of every hedge trade) cancel at any fundamental, and every venue fill has the market agent on
the other side at the same price, so ``traders + makers + insurance fund + market agent -
unfunded bad debt`` is conserved (:meth:`model.model.ContagionModel.money`), plus the fresh
capital of re-entering makers (:attr:`Liquidity.deposits`, part of the model's ``deposits``
as re-entering traders' are).

Maker re-entry (``maker_reentry_steps = k > 0``): a maker whose equity (venue plus off-venue)
is found at most :data:`GONE` of its initial equity at the start or at the end of step ``s``
(the fundamental's move or the step's rounds took it) has lost its capital; if it is still so
at the start of step ``s + k``, fresh capital (a deposit into its wallet) tops its equity up
to its initial equity and its memory of being deleveraged is cleared, so it quotes its calm
depth again from step ``s + k`` (a new desk taking over the
seat: without it the capital factor of a wiped-out maker stays 0 for the rest of the run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from agents.book import Walk
from agents.market_maker import MakerDesk
from model.accounts import AccountBook
from model.config import LiquidityConfig
from model.ids import is_integer_ids
from model.ladders import ValueLadders
from model.population import Population

if TYPE_CHECKING:
    from agents.market import Market

__all__ = ["GONE", "Liquidity", "RoundLiquidity", "maker_ids", "with_makers"]

MAKER_STRATEGY = "market_maker"
# A maker whose equity is at most this share of its initial equity has lost its capital: it
# quotes at most 1% of its calm depth (the capital factor), and is replaced under re-entry.
GONE = 0.01


def with_makers(population: Population, desk: MakerDesk, price0) -> Population:
    """``population`` with the desk's makers appended as cross accounts.

    Each maker deposits its capital and takes its share of ``basis_share`` of the market
    agent's initial position (the traders' net position, reversed), opened at the initial
    price (ids: :func:`maker_ids`).
    """
    m, a = desk.n, population.qty.shape[1]
    net = population.qty.sum(axis=0)
    qty = -desk.basis_share * desk.share[:, None] * net[None, :]
    return Population(
        ids=np.concatenate([population.ids, maker_ids(population.ids, m)]),
        wallet=np.concatenate([population.wallet, desk.capital]),
        qty=np.vstack([population.qty, qty]),
        entry=np.vstack([population.entry, np.where(qty != 0, price0[None, :], 0.0)]),
        isolated=np.vstack([population.isolated, np.zeros((m, a), dtype=bool)]),
        margin=np.vstack([population.margin, np.zeros((m, a))]),
        strategy=np.concatenate([population.strategy, np.full(m, MAKER_STRATEGY, dtype=object)]),
        warnings=list(population.warnings),
    )


def maker_ids(trader_ids: np.ndarray, m: int) -> np.ndarray:
    """Ids for ``m`` makers that no trader has: integers after the largest trader id, or, when
    the traders are named by strings, ``mm:0``, ``mm:1``, ... (with a suffix ``'`` repeated
    until none is taken)."""
    if is_integer_ids(trader_ids):
        first = int(trader_ids.max()) + 1 if trader_ids.size else 0
        return np.arange(first, first + m, dtype=np.int64)
    taken = set(trader_ids.tolist())
    prefix = "mm"
    while any(f"{prefix}:{k}" in taken for k in range(m)):
        prefix += "'"
    return np.array([f"{prefix}:{k}" for k in range(m)], dtype=object)


class RoundLiquidity:
    """Who absorbed one walk, per asset (quantity bought; negative when they sold).

    Attributes:
        makers, resting, market: (A,) the makers, the resting orders, the market agent
            (backstop and anything held at a price limit).
    """

    def __init__(self, makers, resting, market):
        self.makers, self.resting, self.market = makers, resting, market


class Liquidity:
    """The makers' accounts and the resting orders, wired to the book and the market.

    Args:
        cfg: the ``[liquidity]`` section.
        book, market: the account book and the market agent.
        desk: the makers (None under ``static``).
        n_traders: rows of the book before the makers'.
        ladders: the value traders' ladders (None unless ``in_rounds`` with value traders).
        isolated_accounts: (n,) accounts whose new positions are isolated (no ladders).

    Attributes:
        last: what the last walk's sources absorbed (:class:`RoundLiquidity`).
        makers_liquidated: makers liquidated so far (distinct rounds).
        deposits: fresh capital brought in by re-entering makers so far.
        makers_reentered: how many times a maker re-entered so far.
        gone_since: (M,) the step in which each maker's capital was found gone (-1: it is not).
    """

    def __init__(
        self,
        cfg: LiquidityConfig,
        book: AccountBook,
        market: Market,
        desk: MakerDesk | None,
        n_traders: int,
        ladders: ValueLadders | None,
        isolated_accounts: np.ndarray,
    ):
        self.cfg = cfg
        self.book = book
        self.market = market
        self.desk = desk
        self.n_traders = int(n_traders)
        self.ladders = ladders
        self.isolated_accounts = isolated_accounts
        m = 0 if desk is None else desk.n
        self.maker_rows = np.arange(self.n_traders, self.n_traders + m)
        self._makers = slice(self.n_traders, self.n_traders + m)  # the same rows, as views
        self._synced = np.zeros(m, dtype=bool)  # makers liquidated since the desk last looked
        self.makers_liquidated = 0
        self._liquidated_step = 0
        self.reentry_steps = int(cfg.maker_reentry_steps)
        self.gone_since = np.full(m, -1, dtype=np.int64)
        self.deposits = 0.0
        self.makers_reentered = 0
        self._records: list[tuple] = []  # the makers' columns of steps.parquet, step by step
        self._max_rate = book.tiers.max_rate  # (A,) the largest maintenance rate per asset
        self.last_close = market.log_fundamental + market.impact  # log of the last close
        self.last: RoundLiquidity | None = None
        market.counterparty = self
        if ladders is not None:
            market.resting.append(ladders)
        if desk is not None:
            q = book.qty[self.maker_rows]
            desk.expected = q.copy()
            # the basis starts hedged at the target ratio, bought at the initial fundamental
            start = -desk.hedge_ratio * q - desk.hedge
            desk.trade_hedges(start, market.fundamental, cost=False)
            desk.set_initial_equity(self.maker_equity())
            self._requote()

    # ---- views ----------------------------------------------------------------------------
    def maker_equity(self) -> np.ndarray:
        """(M,) each maker's venue equity at the mark plus off-venue equity."""
        m = self.market
        venue = self.book.equity(m.mark, self._makers)
        return venue + self.desk.off_venue_equity(m.fundamental)

    # ---- phases ---------------------------------------------------------------------------
    def begin_step(self, step: int) -> None:
        """Phase 1 of the module docstring (``step``: the step starting, from 1)."""
        if self.ladders is not None and self.ladders.all_step:
            self.ladders.post(self.market.price, self.market.fundamental, self.isolated_accounts)
        desk = self.desk
        if desk is None or desk.n == 0:  # the backstop alone: its quotes never change
            return
        equity = self.maker_equity()
        self._note_deleveraging(equity)
        if self.reentry_steps:
            equity = self._reenter(step, equity)
        self._liquidated_step = 0
        desk.new_step(equity)
        dh = desk.hedge_orders(self.book.qty[self._makers])
        if dh.any():
            desk.trade_hedges(dh, self.market.fundamental)
            equity = self.maker_equity()
        self._requote(equity)

    def _note_gone(self, step: int, equity) -> np.ndarray:
        """Mark the makers whose capital is gone now (``gone_since``: the step it was first
        found gone; -1 again for a maker whose equity came back); return the mask."""
        gone = equity <= GONE * self.desk.initial_equity
        self.gone_since = np.where(gone, self.gone_since, -1)
        self.gone_since = np.where(gone & (self.gone_since < 0), step, self.gone_since)
        return gone

    def _reenter(self, step: int, equity) -> np.ndarray:
        """Fresh capital for the makers gone since ``step - maker_reentry_steps`` or before
        (module docstring); returns their equity after it."""
        desk = self.desk
        gone = self._note_gone(step, equity)
        due = gone & (step - self.gone_since >= self.reentry_steps)
        if not due.any():
            return equity
        top = np.where(due, desk.initial_equity - equity, 0.0)
        self.book.deposit(self.maker_rows[due], top[due])
        self.deposits += float(top.sum())
        self.makers_reentered += int(due.sum())
        self.gone_since[due] = -1
        desk.clear_deleveraging(due)
        return equity + top

    def before_walk(self, rows) -> None:
        """A round's accounts were detected (``rows``): post or cancel ladders, cancel the
        detected makers' quotes and requote the others (phase 3)."""
        m = self.market
        if self.ladders is not None:
            if not self.ladders.posted:
                self.ladders.post(m.price, m.fundamental, self.isolated_accounts)
        for orders in m.resting:  # the value ladders and any rule's resting orders
            orders.cancel(rows)
        if self.desk is not None and self.desk.n:
            self._note_deleveraging()
            makers = np.asarray(rows)[np.asarray(rows) >= self.n_traders] - self.n_traders
            if makers.size:
                self.desk.cancel(makers)
                self._synced[makers] = True
                self.makers_liquidated += int(makers.size)
                self._liquidated_step += int(makers.size)
            self._requote()

    def end_step(self, step: int) -> None:
        """Phase 4 of the module docstring (``step``: the step ending)."""
        log_close = self.market.log_fundamental + self.market.impact  # finite: within limits
        if self.desk is not None and self.desk.n:
            self.desk.observe_return(log_close - self.last_close)
            if self.reentry_steps:
                self._note_gone(step, self.maker_equity())
        self.last_close = log_close
        if self.ladders is not None:
            self.ladders.expire()

    def _note_deleveraging(self, equity=None) -> None:
        """Venue positions of the makers that changed without the desk: auto-deleveraging."""
        q = self.book.qty[self._makers]
        if not np.array_equal(q, self.desk.expected):
            equity = self.maker_equity() if equity is None else equity
            self.desk.note_deleveraging(q, self.market.price, equity, self._synced)
        self._synced[:] = False

    def _requote(self, equity=None) -> None:
        """Quotes from the makers' state now; the book's depth follows them."""
        desk, mark = self.desk, self.market.mark
        equity = self.maker_equity() if equity is None else equity
        q = self.book.qty[self._makers]
        desk.requote(q, equity, self._margin_ratio(q, mark))
        self.market.layered.set_depth(*desk.depth())

    def _margin_ratio(self, q, mark) -> np.ndarray:
        """(M,) the makers' venue margin ratios, or zeros when a bound shows every one below
        the ratio at which they start pulling quotes (the margin factor is then 1 whatever
        the exact ratio): maintenance is at most the largest tier rate times the notional."""
        book = self.book
        venue = book.cross_equity(mark, self._makers)
        bound = (np.abs(q) * (mark * self._max_rate)).sum(axis=1)
        if (bound <= self.desk.mu1 * venue).all():
            return np.zeros(venue.size)
        return book.margin_ratio(mark, self._makers)

    # ---- the counterparty of every walk ---------------------------------------------------
    def settle(self, walk: Walk, price) -> None:
        """Book the makers' share of a walk and the resting orders' fills at ``price``; the
        market agent takes the other side of each (and so keeps the backstop's share)."""
        a = price.size
        makers = np.zeros(a)
        if self.desk is not None and self.desk.n:
            dq = self.desk.fill_shares(walk.bid, walk.ask)
            if dq.any():
                self.book.fill(self.maker_rows, dq, price)
                self.desk.note_fills(dq)
                makers = dq.sum(axis=0)
                self.market.take_other_side(makers, price)
        resting = np.zeros(a)
        for source, quantity in zip(self.market.resting, walk.resting, strict=True):
            if not np.any(quantity):
                continue
            rows, dq = source.allocate(quantity, price)
            if rows.size:
                self.book.fill(rows, dq, price)
                bought = dq.sum(axis=0)
                self.market.take_other_side(bought, price)
                resting = resting + bought
        absorbed = walk.bid + walk.ask + walk.limit + sum(walk.resting, np.zeros(a))
        self.last = RoundLiquidity(makers, resting, absorbed - makers - resting)

    # ---- records --------------------------------------------------------------------------
    def take_record(self) -> None:
        """Keep the makers' row of steps.parquet for the step just ended."""
        desk = self.desk
        equity = self.maker_equity()
        self._records.append(
            (
                self.book.qty[self._makers].sum(axis=0),
                desk.hedge.sum(axis=0),
                equity.sum(),
                desk.initial_equity,
                desk.dbid.sum(),
                desk.dask.sum(),
                self._liquidated_step,
            )
        )

    def steps_columns(self, symbols) -> pd.DataFrame:
        """The makers' columns of steps.parquet: venue inventory and hedge per asset (summed
        over the makers), their equity (venue at the mark, off-venue at the fundamental) and
        PnL against their initial equity, the share of their calm quotes they quote on each
        side, and how many were liquidated in the step."""
        cols: dict[str, list] = {}
        for s in symbols:  # asset by asset, as every per-asset column of the run folder
            cols.update({f"maker_inventory_{s}": [], f"maker_hedge_{s}": []})
        names = ["maker_equity", "maker_pnl", "makers_bid_share", "makers_ask_share"]
        names.append("makers_liquidated")
        cols.update({k: [] for k in names})
        calm = float(self.desk.d0.sum()) if self.desk.n else 0.0
        for venue, hedge, equity, initial, bid, ask, liquidated in self._records:
            for j, s in enumerate(symbols):
                cols[f"maker_inventory_{s}"].append(float(venue[j]))
                cols[f"maker_hedge_{s}"].append(float(hedge[j]))
            rest = (equity, equity - initial.sum(), bid / calm if calm else 0.0)
            rest += (ask / calm if calm else 0.0, liquidated)
            for k, v in zip(names, rest, strict=True):
                cols[k].append(float(v) if k != "makers_liquidated" else v)
        df = pd.DataFrame(cols)
        df["makers_liquidated"] = df["makers_liquidated"].astype(np.int64)
        return df

    def money_parts(self) -> dict[str, float]:
        """The makers' venue equity (their rows, at the mark), their off-venue equity (at the
        fundamental) and the market agent's outside book."""
        if self.desk is None:
            return {"makers_venue": 0.0, "makers_off_venue": 0.0, "outside": 0.0}
        f = self.market.fundamental
        return {
            "makers_venue": float(self.book.equity(self.market.mark, self._makers).sum()),
            "makers_off_venue": float(self.desk.off_venue_equity(f).sum()),
            "outside": self.desk.outside_value(f),
        }
