"""ContagionModel: the Mesa model that orchestrates one run.

One step (docs/design.md, "One step"):

1. Market: fundamentals move (correlated GBM, jumps, scheduled shocks); old impact decays.
2. Strategies: voluntary orders execute through the market.
3. Liquidation rounds until a round liquidates nobody.
4. Record: DataCollector row, market row, liquidation fills and contagion edges.

Trader state lives in :attr:`book` (numpy arrays); :class:`agents.trader.Trader` agents are
views onto its rows. All randomness comes from ``self.rng``, seeded through
``mesa.Model(rng=...)``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import mesa
import numpy as np

from agents.market import Market
from agents.market_maker import MakerDesk, MarketMaker
from agents.strategies import STRATEGIES, Strategy
from agents.trader import Trader
from model.accounts import AccountBook, TierTable
from model.allocation import without_hugepage_advice
from model.collateral import CollateralAssets
from model.config import Config, ConfigError, config_warnings
from model.contagion import ContagionRecorder
from model.funding import Funding
from model.history import AccountHistory, MarketHistory, sample_rows
from model.ids import duplicate_id, find_row, plain_id, show_id
from model.ladders import ValueLadders
from model.liquidation import LiquidationEngine, StepTotals
from model.liquidity import Liquidity, with_makers
from model.orders import collect_orders, trade_voluntarily
from model.population import Population, generate_population, read_population
from model.provenance import utc_now
from model.reentry import Reentry

__all__ = ["AGENT_LIMIT", "ContagionModel", "DivergenceError"]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class DivergenceError(ConfigError):
    """A run whose numbers left floating point: its parameters admit no finite result."""


# Largest book that gets one Trader agent per account by default. A Mesa agent costs about
# 600 bytes and 6 microseconds to create; a million of them would outweigh the whole account
# book (about 220 bytes per trader), so big runs create agents only on request (trader()).
AGENT_LIMIT = 100_000
# Steps between whole-book finiteness checks (in between, only the rows written are checked).
FULL_CHECK_EVERY = 100

WARNINGS_SHOWN = 3  # per kind, on stderr
WARNINGS_KEPT = 20  # per kind, in summary.json


def tier_table(cfg: Config) -> TierTable:
    """Maintenance tiers per asset: the asset's own tiers, else ``margin.tiers``, else a flat
    rate (``margin.maintenance``, or ``1 / (2 x max leverage)`` as Hyperliquid sets it)."""
    lists = []
    for a in cfg.assets:
        tiers = a.tiers if a.tiers is not None else cfg.margin.tiers
        if tiers is not None:
            lists.append([(t.cap, t.rate) for t in tiers])
        else:
            rate = cfg.margin.maintenance
            if rate is None:
                rate = 1.0 / (2.0 * a.max_leverage)
            lists.append([(np.inf, rate)])
    return TierTable.from_lists(lists)


class ContagionModel(mesa.Model):
    """Market contagion through forced liquidations.

    Args:
        config: a validated :class:`model.config.Config` (see :func:`model.config.load_config`).
        rng: seed or generator; defaults to ``config.seed``.
        population: explicit initial accounts; defaults to ``traders.population`` or generated.
        create_agents: create one :class:`Trader` Mesa agent per account (needed by the
            dashboard and by Mesa-style selection; the engine itself works on arrays). None (the default):
            only when there are at most :data:`AGENT_LIMIT` accounts. Without them,
            :meth:`trader` still gives the agent of any account, created on first use.
        screen: skip the exact margin check for accounts provably far from liquidation
            (:mod:`model.screen`); False checks every account every round (same results).
        account_history: steps between snapshots of a sample of accounts
            (:mod:`model.history`); 0 (the default) keeps model-level series only.
        history_sample: how many accounts the history follows (evenly spread over the book),
            or an explicit array of trader ids.
    """

    @without_hugepage_advice  # (a large model's fresh arrays: model/allocation.py)
    def __init__(
        self,
        config: Config,
        *,
        rng=None,
        population: Population | None = None,
        create_agents: bool | None = None,
        screen: bool = True,
        account_history: int = 0,
        history_sample=1000,
    ):
        super().__init__(rng=config.seed if rng is None else rng)
        # for summary.json's provenance: the seed (None for a generator passed in) and when
        # the run started
        self.seed = config.seed if rng is None else (int(rng) if _is_int(rng) else None)
        self.started_at = utc_now()
        self._clock = time.perf_counter()
        self.config = cfg = config
        self.symbols = cfg.symbols
        self.warnings: list[str] = []
        self.warning_counts: dict[str, int] = {}
        self.market = Market(
            self, cfg.market, cfg.assets, shocks=cfg.shocks, liquidity=cfg.liquidity
        )
        self.population = self._initial_population() if population is None else population
        if population is not None and (dup := duplicate_id(population.ids)) is not None:
            raise ConfigError(f"population: trader id {show_id(dup)} names two accounts")
        self.n_traders = int(self.population.ids.size)  # the makers' rows come after
        self.desk = self._maker_desk()
        if self.desk is not None:
            self.population = with_makers(self.population, self.desk, self.market.initial_price)
        self.book = self._open_book(self.population)
        self.recorder = ContagionRecorder(
            self.book.ids,
            self.book.leverage(self.market.price),
            max_edges=cfg.contagion.max_edges,
            top_contributors=cfg.contagion.top_contributors,
        )
        self.engine = LiquidationEngine(
            self.book,
            self.market,
            cfg.margin,
            on_round=self.recorder,
            screen=screen,
            rng=self.rng,
        )
        self._make_rules()
        self._create_trader_agents(create_agents)
        self._add_venue_mechanics()
        self.liquidity = self._wire_liquidity()
        self.initial_money = self.money()["total"]
        self.book.watch("finite")  # check_finite() looks at the rows written since its last call
        for kind, message in config_warnings(cfg) + self.population.warnings:
            self.warn(message, kind=kind)
        self._ever_liquidated = 0
        self.last: StepTotals | None = None  # of the last step
        self.datacollector = self._step_series()
        self.market_history = MarketHistory(self.symbols)
        self.history = self._account_history(account_history, history_sample)

    # ---- construction ---------------------------------------------------------------------
    def _initial_population(self) -> Population:
        """The population file's accounts (``traders.population``), or generated ones."""
        cfg = self.config
        if cfg.traders.population:
            return read_population(cfg.resolve_path(cfg.traders.population), cfg)
        return generate_population(cfg, self.rng)

    def _open_book(self, population: Population) -> AccountBook:
        """The account book of ``population``; the market agent takes the opposite inventory,
        bought at the traders' entry prices, and is short the collateral holdings, sold to the
        traders at the initial prices (:mod:`model.collateral`)."""
        collateral = CollateralAssets.from_assets(self.config.assets)
        holdings = population.holdings
        if collateral is None and holdings is not None and holdings.size:
            raise ConfigError("population: holds collateral but no asset is a collateral asset")
        book = AccountBook(
            population.ids,
            population.wallet,
            population.qty,
            population.entry,
            tier_table(self.config),
            isolated=population.isolated,
            margin=population.margin,
            max_leverage=[x.max_leverage for x in self.config.assets],
            collateral=collateral,
            holdings=holdings if collateral is not None else None,
        )
        self.market.inventory = -book.qty.sum(axis=0)
        self.market.cash = (book.qty * book.entry).sum(axis=0)
        if collateral is not None:
            held = book.holdings.sum(axis=0)
            self.market.inventory[collateral.cols] -= held
            self.market.cash[collateral.cols] += held * self.market.initial_price[collateral.cols]
        return book

    def _maker_desk(self) -> MakerDesk | None:
        """The market makers (``liquidity.model = "market_makers"``), else None."""
        liq = self.config.liquidity
        if liq.model != "market_makers":
            return None
        mk = self.market
        return MakerDesk(liq, mk.depth_qty, mk.initial_price, mk.unconditional_variance)

    def _wire_liquidity(self) -> Liquidity | None:
        """The makers' fills and the resting orders (value ladders, rules whose orders rest in
        the book), wired to the book and the market (None under ``static`` without resting
        orders: today's market agent takes every fill)."""
        liq = self.config.liquidity
        ladders = None
        if liq.value_orders in ("in_rounds", "resting") and "value" in self.strategies:
            ladders = ValueLadders(
                self.book,
                self.strategies["value"],
                self.strategy_rows["value"],
                all_step=liq.value_orders == "resting",
            )
        resting_rules = any(rule.rests_in_book for rule in self.strategies.values())
        if self.desk is None and ladders is None and not resting_rules:
            return None
        wired = Liquidity(
            liq, self.book, self.market, self.desk, self.n_traders, ladders, self.isolated_accounts
        )
        self.engine.liquidity = wired
        return wired

    def _make_rules(self) -> None:
        """One vectorised rule object per trading rule that some trader follows, with its rows
        (in the order the rules were registered) and its ``[traders.rules.<rule>]``."""
        self.strategy_rows: dict[str, np.ndarray] = {}
        self.strategies: dict[str, Strategy] = {}
        names = np.asarray(self.population.strategy, dtype=object)
        for name, rule in STRATEGIES.items():
            # an array owning its memory and read only: the book recognises it by identity
            # without comparing its rows (model.gathers.Gathers.holds; np.flatnonzero gives a
            # view, which a comparison would have to check every time)
            rows = np.flatnonzero(names == name).copy()
            rows.flags.writeable = False
            if rows.size:
                self.strategy_rows[name] = rows
                self.strategies[name] = rule(self, self.config.traders.rules.get(name))

    def _create_trader_agents(self, create_agents: bool | None) -> None:
        """One :class:`Trader` per account when asked, or by default for books of at most
        :data:`AGENT_LIMIT` accounts; :meth:`trader` creates the others on first use."""
        n = self.n_traders
        self.agents_created = bool(
            n and (n <= AGENT_LIMIT if create_agents is None else create_agents)
        )
        self.makers: list[MarketMaker] = []
        if self.desk is not None:  # one agent per maker, always (there are few)
            ids = self.book.ids
            self.makers = [MarketMaker(self, m, n + m, ids[n + m]) for m in range(self.desk.n)]
        self._trader_agents: dict[int, Trader] = {}  # row -> agent, for trader()
        if self.agents_created:
            created = Trader.create_agents(
                self,
                n,
                row=np.arange(n),
                trader_id=self.book.ids[:n],
                strategy=np.asarray(self.population.strategy[:n], dtype=object),
            )
            self._trader_agents = dict(enumerate(created))

    def _add_venue_mechanics(self) -> None:
        """Market realism, off by default: funding, re-entry after liquidation."""
        cfg = self.config
        self.isolated_accounts = self.book.isolated.any(axis=1)  # their new positions too
        self.funding = None
        if cfg.market.funding_interval > 0:
            perpetual = None  # every asset, unless some are collateral (no funding on those)
            if self.book.collateral is not None:
                perpetual = np.array([a.kind == "perpetual" for a in cfg.assets])
            self.funding = Funding(cfg.market, len(self.symbols), perpetual)
        self.reentry = None
        if cfg.traders.reentry_steps > 0:
            self.reentry = Reentry(
                self.population,
                self.book,
                self.market,
                self.liquidation_count,
                lambda: self.liquidation_total,
                cfg.traders.reentry_steps,
                eligible=np.arange(self.book.n_traders) < self.n_traders,
            )

    def _step_series(self) -> mesa.DataCollector:
        """The per-step series (steps.parquet), one reporter per column; the collateral sold
        when there are collateral assets, the liquidator vault's columns when there is one
        (``margin.vault``)."""
        reporters = {
            "liquidations": lambda mdl: mdl.last.liquidations,
            "rounds": lambda mdl: mdl.last.rounds,
            "liquidated_notional": lambda mdl: mdl.last.liquidated_notional,
            "bad_debt": lambda mdl: mdl.last.bad_debt,
            "insurance_fund": lambda mdl: mdl.engine.insurance_fund,
            "adl_notional": lambda mdl: mdl.last.adl_notional,
            "accounts_liquidated_total": lambda mdl: mdl._ever_liquidated,
            "total_equity": lambda mdl: mdl.book.aggregate_equity(mdl.mark),
            "accounts_liquidated": lambda mdl: mdl.last.accounts,
            "fees": lambda mdl: mdl.last.fees,
            "unfunded_bad_debt": lambda mdl: mdl.engine.unfunded_bad_debt,
            "socialized_loss": lambda mdl: mdl.engine.socialized_loss,
            "deposits": lambda mdl: mdl.deposits,
        }
        if self.book.collateral is not None:
            reporters["collateral_sold_notional"] = lambda mdl: mdl.last.collateral_notional
        if self.engine.vault is not None:
            reporters["vault_taken_notional"] = lambda mdl: mdl.last.vault_notional
            reporters["vault_value"] = lambda mdl: mdl.engine.vault.value(mdl.mark)
            reporters["vault_notional"] = lambda mdl: mdl.engine.vault.notional(mdl.mark)
        return mesa.DataCollector(model_reporters=reporters)

    def _account_history(self, every: int, sample) -> AccountHistory | None:
        """Sampled account-level snapshots every ``every`` steps (None when 0: opt-in)."""
        if every <= 0:
            return None
        if np.ndim(sample) == 0:
            rows = sample_rows(self.book.n_traders, int(sample))
        else:
            rows = np.flatnonzero(np.isin(self.book.ids, np.asarray(sample)))
        return AccountHistory(self.book, every, rows, self.symbols, self.engine.liquidation_count)

    # ---- views ----------------------------------------------------------------------------
    @property
    def mark(self) -> np.ndarray:
        """(A,) mark prices: the market price of each asset (lagged when market.mark_lag > 0)."""
        return self.market.mark

    @property
    def deposits(self) -> float:
        """Money brought in from outside (re-entering traders and market makers; a rule's own
        flows, net of withdrawals): money stays initial money + deposits."""
        total = 0.0 if self.reentry is None else self.reentry.deposits
        if self.liquidity is not None:
            total += self.liquidity.deposits
        for rule in self.strategies.values():
            total += getattr(rule, "deposits", 0.0)
        return total

    @property
    def liquidation_count(self) -> np.ndarray:
        """(n,) how many rounds liquidated each account so far."""
        return self.engine.liquidation_count

    @property
    def liquidation_total(self) -> int:
        """Liquidations counted so far: while it is unchanged, :attr:`liquidation_count` is."""
        return self.engine.liquidation_total

    @property
    def contagion_graph(self):
        """The who-liquidated-whom ``networkx.DiGraph`` (built on demand)."""
        return self.recorder.graph()

    def trader(self, trader_id: int | str) -> Trader:
        """The :class:`Trader` agent of the account ``trader_id`` (as in the output tables:
        an integer, or the string a population file gave).

        When the model was built without one agent per account (large books), the agent is
        created on first use and registered with the model, so inspecting a few accounts of a
        million costs a few agents, not a million.

        Raises:
            KeyError: no account has this id.
        """
        ids = self.book.ids
        row = find_row(ids, trader_id)
        if row is None:
            raise KeyError(f"no trader with id {show_id(trader_id)}")
        agent = self._trader_agents.get(row)
        if agent is None:
            strategy = str(self.population.strategy[row])
            agent = Trader(self, row, plain_id(ids[row]), strategy)
            self._trader_agents[row] = agent
        return agent

    def money(self) -> dict[str, float]:
        """Where the money is: traders, insurance fund, market agent, liquidator vault (0 when
        there is none), unfunded bad debt.

        A bankrupt account's negative equity is written off (its wallet set to zero) and paid by
        the insurance fund; what nobody pays is unfunded bad debt, a hole in the system, counted
        here as a negative amount so that ``total`` stays the initial collateral plus the fund.
        """
        mark = self.mark
        parts = {
            "traders": self.book.total_equity(mark),
            "insurance_fund": self.engine.insurance_fund,
            "market": self.market.value(mark),
            "vault": 0.0 if self.engine.vault is None else self.engine.vault.value(mark),
            "unfunded_bad_debt": -self.engine.unfunded_bad_debt,
        }
        if self.desk is not None:  # makers' rows, their hedges, the market's outside book
            extra = self.liquidity.money_parts()
            parts["traders"] -= extra["makers_venue"]
            parts["makers"] = extra["makers_venue"] + extra["makers_off_venue"]
            parts["market"] += extra["outside"]
        parts["total"] = sum(parts.values())
        return parts

    # ---- the step -------------------------------------------------------------------------
    @without_hugepage_advice
    def step(self) -> None:
        """One step: the phases of docs/design.md ("One step"), in order."""
        t = self.steps
        self.begin_rules()  # rules' state at the step's start (a demand curve's shock)
        self.market.move_fundamentals(t)  # 1. market
        if self.liquidity is not None:
            self.liquidity.begin_step(t)  # the makers hedge and quote
        self.trade_voluntarily()  # 2. strategies
        self.pay_funding(t)  # perpetual funding between longs and shorts (when on)
        self.last = self.engine.run_step(t)  # 3. mark to market; liquidation rounds
        if self.liquidity is not None:
            self.liquidity.end_step(t)  # volatility estimates; ladders expire
        self.check_finite(t)
        self.record(t)  # 4. record

    def begin_rules(self) -> None:
        """Each trading rule's hook at the step's start (:meth:`Strategy.begin_step`)."""
        for name, rule in self.strategies.items():
            rule.begin_step(self.strategy_rows[name])

    def pay_funding(self, t: int) -> None:
        """Accrue the funding premium and, on a settlement step, pay funding (if on)."""
        if self.funding is not None:
            self.funding.step(self.book, self.market, t, self.engine.vault)

    def check_finite(self, t: int, *, everything: bool = False) -> None:
        """Stop with a clear error if a price or balance stopped being a finite number.

        Prices are held within their limits, but in a market thin enough that every trade
        drives the price to a limit, trading rules that size orders by equity can compound
        balances beyond floating point within a few steps. The run then stops here, before a
        NaN reaches any output. Sums suffice: a sum is finite only if every term is.

        Balances change only where the book is written, and its write methods log the rows
        they write (:meth:`model.accounts.AccountBook.take_changed`), so a step checks the rows written
        since the last check; every ``FULL_CHECK_EVERY`` steps, and at the end of :meth:`run`,
        the whole book is checked as a safety net. The rows of each write are checked apart
        (merging them would cost more than checking a row twice): the rows of a large fill
        from what the fill kept (:meth:`model.accounts.AccountBook.holds_gathers`), others
        gathered with ``np.take`` (a third of the cost of fancy indexing); when one write
        covers more than a sixteenth of the book and is not kept, reading the whole book in
        order costs less than gathering its rows.
        """
        book, mk = self.book, self.market
        writes = book.take_changed_writes("finite")
        names = book.balance_names
        balances = 0.0
        whole = everything or t % FULL_CHECK_EVERY == 0 or writes is None
        for rows in () if whole else writes:
            if book.holds_gathers(rows):  # (the rows of a large fill: what it wrote, kept)
                balances += sum(a.sum() for a in book.read(rows, *names))
            elif 16 * rows.size <= book.n_traders:
                balances += book.sum_of_balances(rows)
            else:
                whole = True
                break
        if whole:
            balances = sum(a.sum() for a in book.read(None, *names))
        # (4A values; the log price, held within limits, is finite exactly when the price is)
        market = [*mk.log_fundamental.tolist(), *mk.impact.tolist(), *mk.cash.tolist()]
        market += mk.inventory.tolist()
        total = (
            balances
            + sum(market)
            + self.engine.insurance_fund
            + self.engine.unfunded_bad_debt
            + (0.0 if self.engine.vault is None else self.engine.vault.value(mk.price))
        )
        if not math.isfinite(total):
            raise DivergenceError(
                f"step {t}: balances overflowed floating point (prices held at their limits "
                "while traders kept trading: assets.depth is too thin for these orders)"
            )

    def trade_voluntarily(self) -> None:
        """Every active rule's orders and re-entries, capped at the initial margin, executed
        as one batch through the market (:func:`model.orders.trade_voluntarily`)."""
        orders = collect_orders(self.steps, self.strategies, self.strategy_rows, self.reentry)
        if not orders and self.market.resting:  # resting orders still clear their imbalance
            self.market.execute(np.zeros(len(self.symbols)), forced=False)
            return
        trade_voluntarily(self.book, self.market, orders, self.isolated_accounts)

    def record(self, t: int) -> None:
        """Phase 4: warnings of the step, the per-step series, the market and account
        histories."""
        if self.last.liquidations:
            self._ever_liquidated = self.engine.accounts_ever
        self._warn_limits(t)
        if self.desk is not None:  # the makers' columns of steps.parquet
            self.liquidity.take_record()
        # the per-step row: each reporter once, appended as it is (DataCollector.collect()
        # deep-copies every value and re-checks each reporter's kind, about 100 us a step)
        series = self.datacollector
        for name, reporter in series.model_reporters.items():
            series.model_vars[name].append(reporter(self))
        if self.history is not None:
            self.history.record(t, self.mark)
        self.market_history.append(self.market)

    def _warn_limits(self, t: int) -> None:
        """Warn when the round limit stopped a cascade or a price was held at a limit."""
        if self.last.round_limit_hit:
            self.warn(
                f"step {t}: round limit margin.max_rounds={self.engine.max_rounds} hit "
                "with accounts still below maintenance",
                kind="round_limit",
            )
        limit_hit = self.market.limit_hit
        if limit_hit.any():
            for j in np.flatnonzero(limit_hit):
                where = "floor" if limit_hit[j] < 0 else "ceiling"
                self.warn(
                    f"step {t}: {self.symbols[j]} price held at its {where} "
                    f"{self.market.price[j]:.3g} (log price limit)",
                    kind=f"price_{where}",
                )

    def warn(self, message: str, kind: str = "other") -> None:
        """A warning: counted and kept for summary.json, and shown on stderr as one line.

        A long run can repeat a warning every step, so per kind only the first
        ``WARNINGS_SHOWN`` go to stderr and the first ``WARNINGS_KEPT`` are kept; every one is
        counted (``summary.json``: ``warnings`` and ``warning_counts``).
        """
        count = self.warning_counts.get(kind, 0) + 1
        self.warning_counts[kind] = count
        if count <= WARNINGS_KEPT:
            self.warnings.append(message)
        if count <= WARNINGS_SHOWN:
            if count == WARNINGS_SHOWN:
                message += f" (further {kind} warnings are only counted in summary.json)"
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def run(
        self, steps: int | None = None, on_step: Callable[[int], None] | None = None
    ) -> ContagionModel:
        """Run ``steps`` steps (default: ``config.steps``).

        Args:
            steps: how many steps.
            on_step: called with the step number after each step (a progress bar, say; the
                model knows nothing of how progress is shown).
        """
        for _ in range(self.config.steps if steps is None else steps):
            self.step()
            if on_step is not None:
                on_step(self.steps)
        self.check_finite(self.steps, everything=True)
        return self

    def elapsed(self) -> float:
        """Seconds since the model was built (set-up and every step so far)."""
        return time.perf_counter() - self._clock

    # ---- results --------------------------------------------------------------------------
    def tables(self) -> dict:
        """The run's tables as pandas DataFrames (market, steps, liquidations, accounts)."""
        from model.results import build_tables

        return build_tables(self)

    def summary(self) -> dict:
        """Headline metrics (the content of summary.json)."""
        from model.results import summarize

        return summarize(self)

    @without_hugepage_advice
    def write_results(self, out_dir) -> Path:
        """Write the run folder (docs/design.md, "Run folder")."""
        from model.results import write_run

        return write_run(self, out_dir)
