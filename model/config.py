"""Typed, validated run configuration.

Every parameter of a run lives in one tree of dataclasses. Each field declares its type and
its constraints in one place (``spec(...)``), so the whole configuration is introspectable
(``describe()``), validated the same way whether it came from a TOML file, a ``--set``
override or a sweep, and addressable by dotted keys (``market.volatility``,
``assets.BTC.depth``).

Errors are :class:`ConfigError` (defined in :mod:`model.errors`, re-exported here): one line
that names the key (or the file) and what is wrong. The command line turns them into exit
status 2. Values that are legal but almost surely a slip of units (a shock return of 10, a
volatility of 60) are not errors: :func:`config_warnings` names them, and the model reports them
when it is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import operator
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.params import spec
from agents.strategies import STRATEGIES
from model import venues
from model.errors import ConfigError

__all__ = [
    "BOUNDS",
    "AssetConfig",
    "Config",
    "ConfigError",
    "ContagionConfig",
    "LiquidityConfig",
    "MarginConfig",
    "MarketConfig",
    "MOVED_KEYS",
    "GRAPH_FORMATS",
    "OutputConfig",
    "ScenarioConfig",
    "Sections",
    "ShockConfig",
    "TierConfig",
    "TradersConfig",
    "apply_overrides",
    "bound_violation",
    "build_config",
    "build_section",
    "config_warnings",
    "correlation_matrix",
    "describe",
    "describe_sections",
    "did_you_mean",
    "field_choices",
    "load_config",
    "parse_value",
    "spec",
    "to_dict",
]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key_part(name: Any) -> str:
    """A key as TOML would write it: bare when it can be, quoted otherwise."""
    text = str(name)
    return text if _BARE_KEY.fullmatch(text) else json.dumps(text)


@dataclass(frozen=True)
class Sections:
    """A table whose keys are registered names, each with its own section of parameters.

    ``[traders.rules.momentum]`` is the section of the trading rule ``momentum``: its keys are
    the fields of the rule's parameter dataclass, validated like every other key. The names are
    looked up when a config is built, so a rule registered after this module was imported (a
    user's own, in their own file) has its section too.

    Attributes:
        what: what the names name, for messages ("trading rule").
        schemas: returns the registered name -> section dataclass.
    """

    what: str
    schemas: Callable[[], dict[str, type]]

    def schema(self, name: str, key: str) -> type:
        """The section dataclass of ``name``; ConfigError naming ``key`` when unknown."""
        known = self.schemas()
        if name not in known:
            raise ConfigError(f"{key}: unknown {self.what}{_suggest(name, known)}")
        return known[name]


def sections(what: str, schemas: Callable[[], dict[str, type]], *, doc: str = ""):
    """A dataclass field holding named :class:`Sections` (a dict: name -> section)."""
    return field(
        default_factory=dict,
        metadata={"doc": doc, "checks": {}, "sections": Sections(what, schemas)},
    )


def _rule_schemas() -> dict[str, type]:
    return {name: rule.Params for name, rule in STRATEGIES.items()}


# Keys that moved, with where they live now (an old config gets a pointer, not a guess).
MOVED_KEYS = {
    "traders.target_leverage": "traders.rules.target_leverage.target",
    "traders.rebalance": (
        "traders.rules.target_leverage.rebalance (and traders.rules.noise.decay for the noise rule)"
    ),
    "traders.momentum_lookback": "traders.rules.momentum.lookback",
    "traders.momentum_leverage": "traders.rules.momentum.leverage",
    "traders.value_leverage": "traders.rules.value.leverage",
    "traders.value_scale": "traders.rules.value.scale",
    "traders.noise_size": "traders.rules.noise.size",
}


def _unknown_key(key: str, name: Any, known) -> ConfigError:
    """The error for an unknown key: where it moved to, or the closest known key."""
    if key in MOVED_KEYS:
        return ConfigError(f"{key}: moved to {MOVED_KEYS[key]}")
    return ConfigError(f"{key}: unknown key{_suggest(name, known)}")


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------


@dataclass
class TierConfig:
    """One maintenance tier: positions with notional up to ``cap`` pay ``rate``."""

    cap: float = spec(
        doc="upper notional bound of the tier (quote currency)",
        unit="quote currency (position notional)",
        gt=0,
    )
    rate: float = spec(
        doc="maintenance rate inside the tier", unit="fraction of notional", ge=0, lt=1
    )


@dataclass
class AssetConfig:
    """One asset: a traded perpetual contract, or a collateral asset that accounts hold
    (:mod:`model.collateral`)."""

    symbol: str = spec(doc="asset name used in shocks and population files", min_len=1)
    price: float = spec(
        doc="initial price (quote currency)",
        unit="quote currency per unit of the asset",
        ge=1e-12,
        le=1e12,
    )
    depth: float = spec(
        doc="quote notional, at the initial price, whose sale moves it 1%",
        unit="quote currency (notional at the initial price)",
        ge=1.0,
        le=1e15,
    )
    volatility: float | None = spec(
        None,
        doc="annualised volatility (default: market.volatility)",
        unit="annualised, fraction per sqrt(year)",
        ge=0,
        le=50,
    )
    max_leverage: float = spec(
        50.0,
        doc="largest initial leverage the venue allows",
        unit="x (notional / initial margin)",
        ge=1,
        le=1000,
    )
    tiers: list[TierConfig] | None = spec(
        None, doc="maintenance tiers for this asset (overrides margin.tiers)"
    )
    kind: Literal["perpetual", "collateral"] = spec(
        "perpetual",
        doc="perpetual: traded; collateral: held, counted at price x (1 - haircut) toward the "
        "cross margin and sold through its own market when a liquidated wallet goes negative",
    )
    haircut: float | None = spec(
        None,
        doc="share of a collateral asset's value the margin does not count (collateral assets "
        "only; default: the venue preset's, if it has one)",
        unit="fraction of the asset's value",
        ge=0,
        lt=1,
    )


@dataclass
class MarketConfig:
    """The fundamental price process and the price-impact law."""

    volatility: float = spec(
        0.6,
        doc="annualised volatility for assets that do not set their own",
        unit="annualised, fraction per sqrt(year)",
        ge=0,
        le=50,
    )
    correlation: float | list[list[float]] = spec(
        0.0, doc="one correlation for every pair, or a full matrix", unit="dimensionless, -1 to 1"
    )
    impact_exponent: float = spec(
        0.5,
        doc="beta: 1 linear in log price, 0.5 square-root law",
        unit="dimensionless",
        gt=0,
        le=2,
    )
    resilience: float = spec(
        0.1,
        doc="fraction of the impact that decays between steps",
        unit="fraction per step",
        ge=0,
        le=1,
    )
    step_minutes: float = spec(
        60.0,
        doc="length of one step in minutes (markets trade 24/7)",
        unit="minutes",
        gt=0,
        le=525_600,
    )
    jump_intensity: float = spec(
        0.0, doc="Poisson jumps per year in each fundamental", unit="jumps per year", ge=0, le=1e6
    )
    jump_mean: float = spec(0.0, doc="mean log size of a jump", unit="log return", ge=-5, le=5)
    jump_volatility: float = spec(
        0.0, doc="standard deviation of a jump's log size", unit="log return", ge=0, le=5
    )
    garch_alpha: float = spec(
        0.0,
        doc="GARCH(1,1) weight of the last squared innovation in the fundamental's next-step "
        "variance (0: constant volatility)",
        unit="dimensionless",
        ge=0,
        lt=1,
    )
    garch_beta: float = spec(
        0.0,
        doc="GARCH(1,1) weight of the last variance (persistence garch_alpha + garch_beta < 1; "
        "the unconditional variance stays volatility^2 dt)",
        unit="dimensionless",
        ge=0,
        lt=1,
    )
    innovation_dof: float | None = spec(
        None,
        doc="degrees of freedom of Student-t innovations of the fundamental, scaled to unit "
        "variance (default: normal innovations)",
        unit="degrees of freedom",
        gt=2,
        le=1e6,
    )
    depth_stress: float = spec(
        0.0,
        doc="how strongly forced flow and outsized moves thin the book (0: depth never thins)",
        unit="per percent of price",
        ge=0,
        le=1e3,
    )
    depth_recovery: float = spec(
        0.2,
        doc="fraction of the accumulated liquidity stress that fades each step",
        unit="fraction per step",
        ge=0,
        le=1,
    )
    mark_lag: float = spec(
        0.0,
        doc="weight of the previous mark each time the mark follows the price (0: mark = price)",
        unit="dimensionless weight",
        ge=0,
        lt=1,
    )
    funding_interval: int = spec(
        0,
        doc="steps between funding payments of the perpetuals (0: no funding)",
        unit="steps",
        ge=0,
    )
    funding_cap: float = spec(
        0.0075,
        doc="largest funding rate of one interval, either way",
        unit="fraction of notional per funding interval",
        ge=0,
        le=1,
    )
    funding_interest: float = spec(
        1.0e-4,
        doc="interest part of the funding rate (the rate of funding_basis intervals)",
        unit="fraction of notional per funding_basis intervals",
        ge=-0.01,
        le=0.01,
    )
    funding_basis: float = spec(
        1.0,
        doc="intervals the funding formula's rate is for: each interval pays 1/funding_basis of "
        "it (8 for hourly payments of an 8-hour rate, as Hyperliquid and dYdX)",
        unit="funding intervals",
        gt=0,
        le=1e6,
    )

    def correlation_matrix(self, n_assets: int):
        """The (n, n) correlation matrix of ``n_assets`` assets (one number expands to every
        pair), checked: shape, symmetry, unit diagonal, entries in [-1, 1], positive
        semi-definite."""
        n = n_assets
        c = self.correlation
        if isinstance(c, (int, float)):
            if not -1 <= c <= 1:
                raise ConfigError(f"market.correlation: must be between -1 and 1, got {c:g}")
            m = np.full((n, n), float(c))
            np.fill_diagonal(m, 1.0)
        else:
            if any(len(row) != len(c) for row in c):
                raise ConfigError(
                    f"market.correlation: expected a {n}x{n} matrix for {n} assets, "
                    "got rows of different lengths"
                )
            m = np.asarray(c, dtype=float).reshape(len(c), len(c))
            if m.shape != (n, n):
                raise ConfigError(
                    f"market.correlation: expected a {n}x{n} matrix for {n} assets, got shape "
                    f"{'x'.join(map(str, m.shape)) if m.ndim == 2 else 'ragged'}"
                )
            if not np.allclose(m, m.T, atol=1e-12):
                raise ConfigError("market.correlation: matrix must be symmetric")
            if not np.allclose(np.diag(m), 1.0, atol=1e-12):
                raise ConfigError("market.correlation: diagonal must be all 1")
            if np.any(np.abs(m) > 1):
                raise ConfigError("market.correlation: entries must be between -1 and 1")
        if np.linalg.eigvalsh(m).min() < -1e-10:
            raise ConfigError("market.correlation: matrix must be positive semi-definite")
        return m


@dataclass
class TradersConfig:
    """The population: generated accounts, or an explicit population file."""

    count: int = spec(
        1000, doc="number of generated accounts", unit="accounts", ge=0, le=100_000_000
    )
    leverage: float = spec(
        10.0,
        doc="mean initial leverage of generated accounts",
        unit="x (notional / collateral)",
        ge=1,
        le=1000,
    )
    leverage_dispersion: float = spec(
        0.5,
        doc="sigma of the lognormal spread of leverage",
        unit="log leverage (sigma of its logarithm)",
        ge=0,
        le=5,
    )
    collateral: float = spec(
        1000.0,
        doc="median collateral of a generated account (quote)",
        unit="quote currency",
        gt=0,
        le=1e12,
    )
    collateral_tail: float = spec(
        1.5,
        doc="Pareto tail index of collateral (smaller: heavier)",
        unit="dimensionless (Pareto index)",
        gt=0.1,
        le=100,
    )
    long_fraction: float = spec(
        0.6, doc="probability that a generated position is long", unit="probability", ge=0, le=1
    )
    assets_per_trader: int = spec(
        1, doc="largest number of assets one generated account holds", unit="assets", ge=1
    )
    population: str | None = spec(
        None, doc="CSV or parquet of explicit accounts (relative to the config)", unit="path"
    )
    collateral_assets: dict[str, float] = spec(
        factory=dict,
        doc="share of generated accounts' collateral value held in each collateral asset, on "
        "average (the rest is cash): {USDe = 0.3}",
        unit="fraction of collateral value",
    )
    collateral_concentration: float = spec(
        1.0,
        doc="Dirichlet concentration of each generated account's collateral mix around those "
        "shares (large: every account holds them; small: most hold one asset or cash)",
        unit="dimensionless",
        gt=0,
        le=1e6,
    )
    strategies: dict[str, float] = spec(
        factory=lambda: {"hold": 1.0},
        doc="share of traders per trading rule",
        unit="relative shares (normalised to sum to 1)",
    )
    reentry_steps: int = spec(
        0, doc="steps after which a liquidated trader re-enters (0: never)", unit="steps", ge=0
    )
    rules: dict[str, Any] = sections(
        "trading rule",
        _rule_schemas,
        doc="parameters of each trading rule, one table per rule: [traders.rules.momentum]",
    )


@dataclass
class MarginConfig:
    """How the venue margins, liquidates and covers losses."""

    mode: Literal["cross", "isolated"] = spec(
        "cross",
        doc="how collateral backs positions",
        choices={
            "cross": "one balance backs every position of the account",
            "isolated": "each position has its own margin; a loss in one never touches another",
        },
    )
    maintenance: float | None = spec(
        None,
        doc="flat maintenance rate (default: 1 / (2 x max leverage))",
        unit="fraction of notional",
        ge=0,
        lt=1,
    )
    tiers: list[TierConfig] | None = spec(None, doc="maintenance tiers for every asset (cap, rate)")
    liquidation: Literal["full", "partial"] = spec(
        "partial",
        doc="how much of a liquidated unit (a cross book, an isolated position) is closed",
        choices={
            "full": "close the whole unit",
            "partial": "close the smallest fraction that restores equity >= maintenance x "
            "(1 + buffer), or everything when no fraction does",
        },
    )
    buffer: float = spec(
        0.1,
        doc="partial liquidation restores equity >= maintenance x (1 + buffer)",
        unit="fraction of the maintenance margin",
        ge=0,
        le=10,
    )
    fee: float = spec(
        0.005,
        doc="liquidation fee rate on closed notional, into the insurance fund",
        unit="fraction of the closed notional",
        ge=0,
        lt=1,
    )
    insurance_fund: float = spec(
        1.0e6, doc="initial insurance fund (quote)", unit="quote currency", ge=0, le=1e15
    )
    max_rounds: int = spec(
        100, doc="most liquidation rounds in one step", unit="rounds", ge=1, le=100_000
    )
    adl: bool = spec(True, doc="auto-deleverage when the insurance fund cannot cover bad debt")
    venue: Literal["binance", "bybit", "okx", "hyperliquid", "dydx"] | None = spec(
        None,
        doc="a venue's published rules as defaults for the margin, tier and funding keys the file "
        "does not set (model/venues.py; default: none)",
        choices=lambda: venues.CHOICES["margin.venue"],
    )
    adl_ranking: Literal["bitmex", "binance", "hyperliquid", "pro_rata", "random"] = spec(
        "bitmex",
        doc="order in which ADL closes opposite positions (model/adl.py)",
        choices=lambda: venues.CHOICES["margin.adl_ranking"],
    )
    adl_profit_cap: bool = spec(
        False,
        doc="ADL takes no more from a position than its paper profit (default: fill at the "
        "bankruptcy price, capped only at the unit's equity)",
    )
    takeover: bool = spec(
        False,
        doc="a unit closed whole is taken over at its bankruptcy price: the insurance fund keeps "
        "the equity it had left (Binance, Bybit, OKX)",
    )
    partial_from_tier: int = spec(
        1,
        doc="partial liquidation only for units with a position in this maintenance tier or "
        "beyond; others close whole (Bybit 2, OKX 3)",
        unit="tier number (from 1)",
        ge=1,
        le=1000,
    )
    chunk_notional: float | None = spec(
        None,
        doc="positions above this notional close at most chunk_share per liquidation, then "
        "whole for the rest of the step (Hyperliquid: 100,000; default: no chunks)",
        unit="quote currency (position notional)",
        ge=0,
        le=1e15,
    )
    chunk_share: float = spec(
        0.2,
        doc="share of a position above chunk_notional one liquidation closes",
        unit="fraction of the position",
        gt=0,
        le=1,
    )
    round_share: float = spec(
        1.0,
        doc="largest share of a position one liquidation round closes (dYdX: 0.1)",
        unit="fraction of the position per round",
        gt=0,
        le=1,
    )
    round_min_notional: float = spec(
        0.0,
        doc="notional of a position one round may always close, above round_share (dYdX: 1,000)",
        unit="quote currency (position notional) per round",
        ge=0,
        le=1e15,
    )
    round_max_notional: float | None = spec(
        None,
        doc="largest notional one round closes of one account (dYdX: 100,000; default: no limit)",
        unit="quote currency (account notional) per round",
        gt=0,
        le=1e15,
    )
    vault: bool = spec(
        False,
        doc="a liquidator vault takes over units whose equity is below vault_threshold x "
        "maintenance, at the mark, instead of selling them (Hyperliquid)",
    )
    vault_threshold: float = spec(
        2.0 / 3.0,
        doc="equity over maintenance below which the vault takes a unit over",
        unit="x maintenance (equity / maintenance margin)",
        gt=0,
        le=1,
    )


@dataclass
class LiquidityConfig:
    """Where the book's liquidity comes from (docs/market-realism.md, "Liquidity").

    ``static``: every asset's book holds ``assets.depth`` per 1% in every step, thinned by
    ``market.depth_stress``, and impact fades by ``market.resilience`` a step. ``market_makers``:
    the book is the quotes of market-maker accounts (margin accounts of the book, after the
    traders) plus a small backstop of the market agent; they quote ``assets.depth`` in a calm
    market and withdraw as their inventory, the volatility, their margin and auto-deleveraging
    of their hedges stress them. The keys after ``refill_time`` apply to ``market_makers``.
    """

    model: Literal["static", "market_makers"] = spec(
        "static", doc="static: the book is assets.depth; market_makers: the makers' quotes"
    )
    value_orders: Literal["before_rounds", "in_rounds", "resting"] = spec(
        "before_rounds",
        doc="in_rounds: value traders rest buy and sell orders along their target curve that "
        "trade inside the liquidation rounds; before_rounds: they trade once a step, before them; "
        "resting: they send no market orders, their whole target curve rests as limit orders "
        "from the step's start, priced so they never buy above (or sell below) the price at "
        "which the target equals what they hold (model/ladders.py)",
    )
    kernel: Literal["power", "exponential"] = spec(
        "power",
        doc="how the makers' book refills between steps: power, impact decays as "
        "(1 + t / refill_time)^-1/2; exponential, by market.resilience a step",
    )
    refill_time: float = spec(
        0.25, unit="steps", doc="tau0 of the power-law refill, in steps", gt=0, le=1e6
    )
    kernel_terms: int = spec(
        10,
        unit="exponentials",
        doc="exponentials summed to approximate the power-law refill",
        ge=1,
        le=40,
    )
    kernel_horizon: int = spec(
        10_000,
        unit="steps",
        doc="steps over which that approximation is fitted",
        ge=10,
        le=10_000_000,
    )
    makers: int = spec(5, unit="accounts", doc="number of market-maker accounts", ge=0, le=100)
    backstop: float = spec(
        0.05,
        unit="fraction of assets.depth",
        doc="share of assets.depth the market agent quotes whatever happens (off-venue "
        "arbitrage); the makers quote the rest in a calm market",
        ge=0,
        le=1,
    )
    capital: float = spec(
        10.0,
        unit="multiple of the calm 1% quote notional",
        doc="a maker's collateral, in units of the notional of its calm 1% quotes",
        gt=0,
        le=1e6,
    )
    inventory_limit: float = spec(
        20.0,
        unit="multiple of the calm 1% depth (quantity)",
        doc="a maker's net inventory (venue plus hedge) at which it stops quoting that side, in "
        "units of its calm 1% depth",
        gt=0,
        le=1e12,
    )
    basis_share: float = spec(
        0.3,
        unit="fraction of the market agent's position",
        doc="share of the market agent's initial position the makers hold on the venue, "
        "hedged off-venue",
        ge=0,
        le=1,
    )
    hedge_ratio: float = spec(
        0.9,
        unit="fraction of the venue position",
        doc="fraction of its venue position a maker hedges off-venue",
        ge=0,
        le=1,
    )
    hedge_speed: float = spec(
        0.5,
        unit="fraction of the gap per step",
        doc="fraction of the gap to the hedge target traded each step",
        ge=0,
        le=1,
    )
    hedge_cost: float = spec(
        2.0e-4,
        unit="fraction of the notional hedged",
        doc="cost of hedging, per notional traded off-venue",
        ge=0,
        lt=1,
    )
    vol_halflife: float = spec(
        48.0,
        unit="steps",
        doc="half-life of the makers' short-run volatility estimate, steps",
        gt=0,
        le=1e7,
    )
    vol_memory: float = spec(
        720.0,
        unit="steps",
        doc="half-life of their long-run volatility estimate, steps",
        gt=0,
        le=1e7,
    )
    vol_tolerance: float = spec(
        1.25,
        unit="ratio of volatilities",
        doc="short-run over long-run volatility the makers accept before thinning their quotes",
        ge=1,
        le=100,
    )
    vol_exponent: float = spec(
        2.0,
        unit="dimensionless",
        doc="quotes scale as (tolerance x long / short volatility)^exponent beyond it "
        "(0: volatility never thins them)",
        ge=0,
        le=10,
    )
    margin_pull: list[float] = spec(
        factory=lambda: [0.5, 0.9],
        unit="margin ratio (maintenance / equity)",
        doc="margin ratios (maintenance over equity) at which a maker starts pulling its quotes "
        "and has pulled them all",
    )
    adl_sensitivity: float = spec(
        5.0,
        unit="per deleveraged notional over equity",
        doc="how strongly auto-deleveraging of a maker's venue leg thins its quotes (per "
        "deleveraged notional over its equity)",
        ge=0,
        le=1e6,
    )
    adl_halflife: float = spec(
        24.0,
        unit="steps",
        doc="half-life of a maker's memory of being deleveraged, steps",
        gt=0,
        le=1e7,
    )
    maker_reentry_steps: int = spec(
        0,
        unit="steps",
        doc="steps after a maker's capital is gone (its equity at most 1% of its initial "
        "equity, liquidated or not) until fresh capital, a deposit from outside, tops it up to "
        "its initial equity (0: never)",
        ge=0,
        le=1_000_000,
    )


@dataclass
class ShockConfig:
    """A scheduled jump of one asset's fundamental."""

    step: int = spec(
        doc="step at which the fundamental jumps (steps count from 1)", unit="step number", ge=1
    )
    asset: str = spec(doc="symbol of the shocked asset", min_len=1)
    return_: float = spec(
        doc="the fundamental is multiplied by (1 + return)",
        unit="fraction (simple return: -0.1 is -10%)",
        gt=-1,
        le=100,
    )


@dataclass
class ScenarioConfig:
    """Reported figures of a real event that a stylised replay is compared with."""

    event: str = spec("", doc="the event the run replays, e.g. '10 Oct 2025'")
    price_drop: dict[str, float] = spec(
        factory=dict,
        doc="reported peak-to-trough fall per asset symbol (0.14 for -14%)",
        unit="fraction of the initial price (0.14 is a 14% fall)",
    )
    liquidated_share: float | None = spec(
        None,
        doc="reported liquidated notional over open interest before the event",
        unit="fraction of open interest",
        ge=0,
        le=1,
    )
    low: dict[str, float] = spec(
        factory=dict,
        doc="reported lowest price per asset symbol (a depeg's low, say: USDe = 0.65)",
        unit="quote currency per unit of the asset",
    )
    sources: list[str] = spec(factory=list, doc="where the reported figures come from")


@dataclass
class ContagionConfig:
    """Bounds on the who-liquidated-whom graph."""

    max_edges: int = spec(
        1_000_000,
        doc="record every attribution edge while the edges recorded stay within this many",
        unit="edges",
        ge=0,
    )
    top_contributors: int = spec(
        5,
        doc="rounds past max_edges keep each victim's top contributors (plus one aggregate edge)",
        unit="edges per liquidation",
        ge=1,
    )


GraphFormat = Literal["graphml.gz", "graphml", "json"]
GRAPH_FORMATS = typing.get_args(GraphFormat)


@dataclass
class OutputConfig:
    """What a run folder holds beyond its tables (docs/contagion.md, "Files")."""

    graph: list[GraphFormat] = spec(
        factory=lambda: ["graphml.gz"],
        doc="file formats of the contagion graph: graphml.gz (gzip-compressed GraphML: networkx, "
        "igraph, Gephi), graphml (plain), json (networkx node-link)",
        min_len=1,
    )


@dataclass
class Config:
    """A whole run."""

    name: str = spec("run", doc="name of the run (the default run folder's name)", min_len=1)
    seed: int = spec(
        0, doc="seed of the run's random stream", unit="dimensionless (a seed)", ge=0, le=2**63 - 1
    )
    steps: int = spec(100, doc="number of steps", unit="steps", ge=0, le=100_000_000)
    market: MarketConfig = spec(factory=MarketConfig)
    assets: list[AssetConfig] = spec(
        factory=lambda: [AssetConfig(symbol="BTC", price=60000.0, depth=2.0e7)],
        doc="traded assets",
        min_len=1,
    )
    traders: TradersConfig = spec(factory=TradersConfig)
    margin: MarginConfig = spec(factory=MarginConfig)
    shocks: list[ShockConfig] = spec(factory=list, doc="scheduled fundamental jumps")
    liquidity: LiquidityConfig = spec(factory=LiquidityConfig)
    contagion: ContagionConfig = spec(factory=ContagionConfig)
    scenario: ScenarioConfig | None = spec(
        None, doc="reported figures of the real event a scenario replays (printed by run)"
    )
    output: OutputConfig = spec(factory=OutputConfig)
    base_dir: str = field(default=".", metadata={"internal": True})

    # ---- derived views ----------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        return [a.symbol for a in self.assets]

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


# Fields whose TOML name is a Python keyword.
_TOML_NAMES = {"return_": "return"}
_PY_NAMES = {v: k for k, v in _TOML_NAMES.items()}


# --------------------------------------------------------------------------------------------
# Building and validating
# --------------------------------------------------------------------------------------------


_FIELDS: dict[type, dict[str, dataclasses.Field]] = {}


def _fields(cls) -> dict[str, dataclasses.Field]:
    """The TOML keys of a config dataclass and their fields (internal ones left out), found
    once per class (a sweep builds a config per run): read them, never change them."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = {
            _TOML_NAMES.get(f.name, f.name): f
            for f in dataclasses.fields(cls)
            if not f.metadata.get("internal")
        }
    return fields


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is float:
        return "a number"
    if tp is int:
        return "a whole number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, ...)."""
    if tp is Any:  # checked by the section's own rules (a sweep's grid values, say)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append((a, exc))
        # The alternative of the value's own shape (a list for a list) says best what is wrong.
        same_shape = [exc for a, exc in errors if _shape_of_type(a) == _shape_of_value(value)]
        if len(same_shape) == 1:
            raise same_shape[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
    if value is None:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got nothing")
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            hint = _suggest(value, args) if isinstance(value, str) else ""
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}{hint}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a whole number, got {_show(value)}")
        if abs(value) > 2 * _MAX_INT:
            raise ConfigError(f"{key}: {_show(value)} is too large")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise ConfigError(f"{key}: expected a whole number, got {_show(value)}")
            value = int(value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        if isinstance(value, int) and abs(value) > _MAX_INT:
            raise ConfigError(f"{key}: {_show(value)} is too large")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        (item_tp,) = args
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {_show(value)}")
        _, val_tp = args
        return {str(k): _coerce(v, val_tp, f"{key}.{_key_part(k)}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            value = to_dict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {_show(value)}")
        return _build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _shape_of_type(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "table"
    return "scalar"


def _shape_of_value(value) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict) or dataclasses.is_dataclass(value):
        return "table"
    return "scalar"


# Integers beyond this fit no field (TOML itself stops at 64 bits; a bare int may not).
_MAX_INT = 2**63 - 1


def _show(value: Any) -> str:
    """A short one-line rendering of a bad value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: Any, checks: dict, key: str) -> None:
    if value is None:
        return
    if "min_len" in checks and len(value) < checks["min_len"]:
        what = "empty" if checks["min_len"] == 1 else f"shorter than {checks['min_len']}"
        raise ConfigError(f"{key}: must not be {what}")
    problem = bound_violation(value, checks)
    if problem:
        raise ConfigError(f"{key}: {problem}")


# The bounds spec() takes: name -> (test, word in messages).
BOUNDS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def bound_violation(value: Any, checks: dict) -> str | None:
    """What is wrong with a number under ``spec`` bounds (``"must be >= 0, got -1"``), or None.

    The one phrasing of a bound every validator uses: config keys, sweep files, population rows.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for name, (test, word) in BOUNDS.items():
        if name in checks and not test(value, checks[name]):
            return f"must be {word} {_number(checks[name])}, got {_number(value)}"
    return None


def _number(x: float) -> str:
    """A bound or value as a message shows it: whole numbers in full, others compactly."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _suggest(name: Any, options) -> str:
    """`` (did you mean 'x'?)`` naming the closest valid option, or nothing."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls, data: dict, prefix: str = ""):
    known = _fields(cls)
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{_key_part(name)}" if prefix else _key_part(name)
        if name not in known:
            raise _unknown_key(key, name, known)
        f = known[name]
        if "sections" in f.metadata:
            kwargs[f.name] = _build_sections(f.metadata["sections"], value, key)
            continue
        value = _coerce(value, hints[f.name], key)
        _check(value, f.metadata.get("checks", {}), key)
        _check_choice(value, f, key)
        kwargs[f.name] = value
    for name, f in known.items():
        if (
            f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{key}: required key is missing")
    return cls(**kwargs)


def _build_sections(what: Sections, data: Any, key: str) -> dict[str, Any]:
    """Build each named section of ``data`` (a table of tables) with its own dataclass."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a table, got {_show(data)}")
    out = {}
    for name, section in data.items():
        here = f"{key}.{_key_part(name)}"
        cls = what.schema(str(name), here)
        if isinstance(section, cls):
            section = to_dict(section)
        if not isinstance(section, dict):
            raise ConfigError(f"{here}: expected a table, got {_show(section)}")
        out[str(name)] = _build(cls, section, here)
    return out


def build_config(data: dict, base_dir: str | Path = ".") -> Config:
    """Build and validate a :class:`Config` from a plain dict (TOML-shaped)."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a table at the top level")
    cfg = _build(Config, data)
    if cfg.margin.venue is not None:
        cfg = _build(Config, _with_venue(data, cfg))
    cfg.base_dir = str(base_dir)
    _cross_checks(cfg)
    # the parameters of every rule in use, defaults included, so the resolved config says them
    rules = cfg.traders.rules
    for name in cfg.traders.strategies:
        rules.setdefault(name, STRATEGIES[name].Params())
    return cfg


def _with_venue(data: dict, cfg: Config) -> dict:
    """A copy of ``data`` with the keys of its venue preset that it does not set itself
    (:mod:`model.venues`); ``cfg`` is ``data`` built without them."""
    import copy

    data = copy.deepcopy(data)
    data.setdefault("assets", to_dict(cfg)["assets"])  # the default asset, to give its tiers to
    market = cfg.market
    defaults = venues.venue_defaults(
        data, cfg.symbols, market.step_minutes, market.funding_interval
    )
    for key, value in defaults.items():
        _set_dotted(data, key, value)
    return data


def build_section(cls, data: Any, prefix: str = ""):
    """Build and validate any dataclass whose fields are declared with :func:`spec`.

    The machinery of the run config, for other files with a schema (the ``[sweep]`` table of a
    sweep file): unknown keys with a did-you-mean, types, bounds, required keys, defaults, and
    the same one-line messages, each naming the key under ``prefix``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'file'}: expected a table, got {_show(data)}")
    return _build(cls, data, prefix)


def did_you_mean(name: Any, options) -> str:
    """`` (did you mean 'x'?)`` naming the option closest to ``name``, or nothing: the one
    suggestion every message about an unknown name carries."""
    return _suggest(name, options)


def _cross_checks(cfg: Config) -> None:
    """Constraints that involve more than one field."""
    _check_name(cfg.name)
    symbols = cfg.symbols
    seen = set()
    for i, a in enumerate(cfg.assets):
        if a.symbol in seen:
            raise ConfigError(f"assets[{i}].symbol: duplicate symbol '{a.symbol}'")
        seen.add(a.symbol)
        if a.tiers is not None:
            _check_tiers(a.tiers, f"assets[{i}].tiers")
    if cfg.margin.tiers is not None:
        _check_tiers(cfg.margin.tiers, "margin.tiers")
    for i, s in enumerate(cfg.shocks):
        if s.asset not in symbols:
            raise ConfigError(
                f"shocks[{i}].asset: unknown asset '{s.asset}'{_suggest(s.asset, symbols)}"
            )
    _check_kinds(cfg)
    correlation_matrix(cfg)  # raises on a bad matrix
    persistence = cfg.market.garch_alpha + cfg.market.garch_beta
    if persistence >= 1:
        raise ConfigError(
            f"market.garch_alpha + market.garch_beta: must be below 1 (a finite unconditional "
            f"variance), got {persistence:g}"
        )
    if cfg.scenario is not None:
        for sym, drop in cfg.scenario.price_drop.items():
            if sym not in symbols:
                raise ConfigError(
                    f"scenario.price_drop.{sym}: unknown asset '{sym}'{_suggest(sym, symbols)}"
                )
            if not 0 <= drop < 1:
                raise ConfigError(
                    f"scenario.price_drop.{sym}: must be between 0 and 1 (a fall), got {drop:g}"
                )
    strategies = cfg.traders.strategies
    if not strategies:
        raise ConfigError("traders.strategies: must name at least one trading rule")
    for name, share in strategies.items():
        if name not in STRATEGIES:
            raise ConfigError(
                f"traders.strategies.{_key_part(name)}: unknown trading rule"
                f"{_suggest(name, STRATEGIES)}"
            )
        if share < 0:
            raise ConfigError(f"traders.strategies.{name}: share must be >= 0, got {share:g}")
    if sum(strategies.values()) <= 0:
        raise ConfigError("traders.strategies: shares must add up to more than 0")
    _check_liquidity(cfg)
    repeated = [f for i, f in enumerate(cfg.output.graph) if f in cfg.output.graph[:i]]
    if repeated:
        raise ConfigError(f"output.graph: {repeated[0]!r} is listed twice")
    perpetuals = sum(a.kind == "perpetual" for a in cfg.assets)
    if cfg.traders.assets_per_trader > perpetuals:
        what = "assets" if perpetuals == len(cfg.assets) else "perpetual assets"
        raise ConfigError(
            f"traders.assets_per_trader: {cfg.traders.assets_per_trader} is more than the "
            f"{perpetuals} {what} declared"
        )
    _check_collateral(cfg)
    for i, s in enumerate(cfg.shocks):
        if s.step > cfg.steps:
            raise ConfigError(
                f"shocks[{i}].step: {s.step} is after the last step (the run has steps = "
                f"{cfg.steps}): the shock would never happen"
            )


def _check_kinds(cfg: Config) -> None:
    """Collateral assets have a haircut and no tiers, perpetuals no haircut; one perpetual at
    least (collateral alone trades nothing)."""
    for i, a in enumerate(cfg.assets):
        if a.kind == "collateral":
            if a.haircut is None:
                raise ConfigError(
                    f"assets[{i}].haircut: required for the collateral asset '{a.symbol}' "
                    "(a number in [0, 1); a margin.venue preset gives it for the symbols it "
                    "publishes)"
                )
            if a.tiers is not None:
                raise ConfigError(
                    f"assets[{i}].tiers: the collateral asset '{a.symbol}' holds no "
                    "positions, so it has no maintenance tiers"
                )
        elif a.haircut is not None:
            raise ConfigError(
                f"assets[{i}].haircut: only a collateral asset takes a haircut (assets[{i}].kind "
                f"is '{a.kind}')"
            )
    if all(a.kind == "collateral" for a in cfg.assets):
        raise ConfigError(
            "assets: at least one must be a perpetual: collateral alone trades nothing"
        )


def _check_collateral(cfg: Config) -> None:
    """``traders.collateral_assets`` names collateral assets with shares that add up to at
    most 1, for cross accounts; ``scenario.low`` names assets."""
    symbols = cfg.symbols
    collateral = [a.symbol for a in cfg.assets if a.kind == "collateral"]
    shares = cfg.traders.collateral_assets
    for name, share in shares.items():
        key = f"traders.collateral_assets.{_key_part(name)}"
        if name in symbols and name not in collateral:
            raise ConfigError(f"{key}: '{name}' is a perpetual, not a collateral asset")
        if name not in collateral:
            raise ConfigError(
                f"{key}: unknown collateral asset '{name}'{_suggest(name, collateral or symbols)}"
            )
        if not 0 <= share <= 1:
            raise ConfigError(f"{key}: must be between 0 and 1 (a share), got {share:g}")
    total = sum(shares.values())
    if total > 1 + 1e-12:
        raise ConfigError(f"traders.collateral_assets: shares add up to {total:g}, more than 1")
    if total > 0 and cfg.margin.mode == "isolated" and not cfg.traders.population:
        raise ConfigError(
            "traders.collateral_assets: collateral backs the cross balance only, and the "
            "generated accounts are isolated (margin.mode = 'isolated')"
        )
    if cfg.scenario is not None:
        for sym, low in cfg.scenario.low.items():
            if sym not in symbols:
                raise ConfigError(
                    f"scenario.low.{_key_part(sym)}: unknown asset '{sym}'{_suggest(sym, symbols)}"
                )
            if not low > 0:
                raise ConfigError(f"scenario.low.{_key_part(sym)}: must be > 0, got {low:g}")


# Beyond these, a value is legal but almost surely written in the wrong unit (percent for a
# fraction): a shock return above 100% either way, an annual volatility above 500%.
_UNIT_SLIP_RETURN = 1.0
_UNIT_SLIP_VOLATILITY = 5.0


def config_warnings(cfg: Config) -> list[tuple[str, str]]:
    """``(kind, message)`` for every value that is legal but almost surely a unit slip, each
    message one line naming the key. The model reports them when it is built
    (``ContagionModel.warn``: stderr and summary.json)."""
    out = []
    for i, s in enumerate(cfg.shocks):
        if abs(s.return_) > _UNIT_SLIP_RETURN:
            out.append(
                (
                    "shock_return",
                    f"shocks[{i}].return = {s.return_:g} is a {100 * s.return_:+.0f}% move; "
                    "returns are fractions (0.1 = 10%)",
                )
            )
    vols = [("market.volatility", cfg.market.volatility)]
    vols += [(f"assets.{_key_part(a.symbol)}.volatility", a.volatility) for a in cfg.assets]
    for key, vol in vols:
        if vol is not None and vol > _UNIT_SLIP_VOLATILITY:
            out.append(
                (
                    "volatility",
                    f"{key} = {vol:g} is {100 * vol:.0f}% a year; volatility is an annual "
                    "fraction (0.6 = 60%)",
                )
            )
    return out


def _check_liquidity(cfg: Config) -> None:
    """The ``[liquidity]`` keys that constrain each other or other sections."""
    liq = cfg.liquidity
    pull = liq.margin_pull
    if len(pull) != 2 or not 0 <= pull[0] < pull[1]:
        raise ConfigError(
            f"liquidity.margin_pull: expected two margin ratios 0 <= start < end, got {pull}"
        )
    if liq.model != "market_makers":
        return
    if liq.makers == 0 and liq.backstop == 0:
        raise ConfigError(
            "liquidity.backstop: must be > 0 when liquidity.makers = 0 (the book would be empty)"
        )
    if cfg.market.depth_stress > 0:
        raise ConfigError(
            "market.depth_stress: applies to liquidity.model = 'static'; market makers thin the "
            "book by their own rule (set it to 0)"
        )


def _check_name(name: str) -> None:
    """The name becomes a folder name (``results/<name>``): no separators or control codes."""
    if name.strip() != name or name in (".", ".."):
        raise ConfigError(f"name: {name!r} cannot name a folder")
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ConfigError(f"name: must not contain {bad[0]!r}, got {_show(name)}")


def _check_tiers(tiers: list[TierConfig], key: str) -> None:
    if not tiers:
        raise ConfigError(f"{key}: must list at least one tier")
    caps = [t.cap for t in tiers]
    if any(b <= a for a, b in zip(caps, caps[1:], strict=False)):
        raise ConfigError(f"{key}: caps must increase strictly")
    rates = [t.rate for t in tiers]
    if any(b < a for a, b in zip(rates, rates[1:], strict=False)):
        raise ConfigError(f"{key}: rates must not decrease")


def correlation_matrix(cfg: Config):
    """The assets' correlation matrix, checked (:meth:`MarketConfig.correlation_matrix`)."""
    return cfg.market.correlation_matrix(len(cfg.assets))


# --------------------------------------------------------------------------------------------
# Loading, overrides, output
# --------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as TOML (numbers, booleans, lists, inline tables); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``value`` at dotted ``key`` in the TOML-shaped ``data``.

    List sections (``assets``, ``shocks``) are addressed by index (``assets.0.depth``) or, for
    assets, by symbol (``assets.BTC.depth``).
    """
    parts = key.split(".")
    node: Any = data
    cls: Any = Config
    named: Sections | None = None  # set when the part names a section of a Sections table
    path = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        path.append(part)
        here = ".".join(path)
        if isinstance(node, list):
            idx = None
            if part.lstrip("-").isdigit():
                idx = int(part)
            else:
                for j, item in enumerate(node):
                    if isinstance(item, dict) and item.get("symbol") == part:
                        idx = j
                        break
            if idx is None or not -len(node) <= idx < len(node):
                raise ConfigError(f"{here}: no such entry ({_entries(node, part)})")
            if last:
                node[idx] = value
                return
            node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{here}: cannot set a key inside a non-table value")
        if named is not None:
            tp = cls = named.schema(part, here)
            named = None
        elif cls is not None and dataclasses.is_dataclass(cls):
            known = _fields(cls)
            if part not in known:
                raise _unknown_key(here, part, known)
            f = known[part]
            tp = _hints(cls)[f.name]
            named = f.metadata.get("sections")
            cls = None if named is not None else _inner_dataclass(tp)
        else:
            tp, cls = None, None
        if last:
            node[part] = value
            return
        if part not in node or node[part] is None:
            if tp is not None and list in (
                typing.get_origin(tp),
                *map(typing.get_origin, typing.get_args(tp)),
            ):
                raise ConfigError(f"{here}: no such entry (the config has no {part} list)")
            node[part] = {}
        node = node[part]


def _entries(items: list, part: str) -> str:
    """What a list section can be addressed by, for a "no such entry" message."""
    symbols = [str(x["symbol"]) for x in items if isinstance(x, dict) and "symbol" in x]
    if not items:
        return "the list is empty"
    text = f"indices 0..{len(items) - 1}"
    if symbols:
        text += " or symbols " + ", ".join(symbols) + _suggest(part, symbols)
    return text


def _inner_dataclass(tp):
    """The dataclass inside ``tp`` (``X``, ``list[X]``, ``X | None``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for a in typing.get_args(tp):
        inner = _inner_dataclass(a)
        if inner is not None:
            return inner
    return None


def apply_overrides(data: dict, overrides: dict[str, Any] | None) -> dict:
    """Return a copy of TOML-shaped ``data`` with dotted-key ``overrides`` applied.

    String values (``--set`` text) are parsed by the type of the field they name: see
    :func:`parse_for_key`.
    """
    import copy

    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{key!r}: not a dotted key such as market.volatility")
        if isinstance(value, str):
            value = parse_for_key(key, value)
        _set_dotted(data, key, value)
    return data


def parse_for_key(key: str, text: str) -> Any:
    """Parse ``--set`` text by the type of the field that the dotted ``key`` names.

    * string and choice fields keep the text as it is (``--set name=2024`` is the string
      "2024"); a quoted TOML string is unquoted;
    * optional fields take ``none`` (or nothing) to mean "unset, use the default";
    * everything else is read as a TOML value (numbers, booleans, lists, inline tables), and
      numbers also as Python writes them (``.5``, ``1E3``); text that is none of these is kept,
      so that validation names the key and the expected type.
    """
    tp = _field_type(key)
    if tp is None:  # unknown key, a dict member of unknown type: let validation speak
        return parse_value(text)
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    if optional and text.strip().lower() in ("", "none", "null"):
        return None
    kinds = [a for a in args if a is not type(None)] if optional else [tp]
    if all(k is str or typing.get_origin(k) is Literal for k in kinds):
        stripped = text.strip()
        if stripped[:1] in ('"', "'"):
            parsed = parse_value(stripped)
            if isinstance(parsed, str):
                return parsed
        return text
    if kinds == [bool] and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    parsed = parse_value(text)
    if kinds == [int] and isinstance(parsed, float) and parsed.is_integer():
        return int(parsed)  # 1e3 steps
    if isinstance(parsed, str) and any(k in (int, float) for k in kinds):
        try:
            number = float(parsed.strip().replace("_", ""))
        except ValueError:
            return parsed
        if int in kinds and float not in kinds and math.isfinite(number):
            return int(number) if number == int(number) else number
        return number
    return parsed


def _field_type(key: str) -> Any:
    """The annotation of the field a dotted key names (None when it names no known field).

    List items are addressed by index or symbol (``assets.BTC.depth``), table members by name
    (``traders.strategies.hold``).
    """
    tp: Any = Config
    named: Sections | None = None
    for part in key.split("."):
        tp = _strip_optional(tp)
        if named is not None:
            tp = named.schemas().get(part)
            named = None
            if tp is None:
                return None
        elif dataclasses.is_dataclass(tp):
            known = _fields(tp)
            if part not in known:
                return None
            f = known[part]
            named = f.metadata.get("sections")
            tp = _hints(tp)[f.name]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return tp


def _strip_optional(tp: Any) -> Any:
    """``X`` for ``X | None``; a list or table alternative of a union (``float | list``)."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
        return args[0]
    containers = [a for a in args if typing.get_origin(a) in (list, dict)]
    return containers[0] if containers else tp


def read_toml(path: str | Path) -> dict:
    """Read a TOML file; every failure is a one-line :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal of thousands of digits
        raise ConfigError(f"{path}: invalid TOML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a TOML config, apply dotted-key overrides, validate.

    Args:
        path: the TOML file. Relative paths inside it are relative to its folder.
        overrides: ``{"market.volatility": 0.8, "assets.BTC.depth": 1e7}``; string values are
            parsed by the field's type, as ``--set`` does.
    """
    path = Path(path)
    data = read_toml(path)
    data = apply_overrides(data, overrides)
    return build_config(data, base_dir=path.resolve().parent)


def to_dict(cfg: Any) -> Any:
    """The TOML-shaped dict of a config (None values dropped, as TOML has no null)."""
    if dataclasses.is_dataclass(cfg):
        out = {}
        for name, f in _fields(type(cfg)).items():
            value = to_dict(getattr(cfg, f.name))
            if value is not None:
                out[name] = value
        return out
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def describe(cls=Config, prefix: str = "") -> list[dict]:
    """Every field as a row, for the reference (``contagion config``, docs/configuration.md)
    and for UIs.

    Each row: ``key`` (dotted; ``[]`` marks the items of a list of tables, ``assets[].depth``),
    ``section`` (the table it sits in: ``market``, ``assets[]``, ``traders.rules.momentum``;
    ``""`` for the top level), ``type``, ``default``, ``required``, ``checks`` (bounds),
    ``unit``, ``choices`` (name -> description of each allowed name; empty when any value of
    the type goes) and ``doc``.
    """
    rows = []
    for name, f in _fields(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        tp = _hints(cls)[f.name]
        if "sections" in f.metadata:  # one table of keys per registered name
            for section, schema in f.metadata["sections"].schemas().items():
                rows.extend(describe(schema, f"{key}.{_key_part(section)}"))
            continue
        inner = _inner_dataclass(tp)
        if inner is not None and _strip_optional(tp) is inner:  # a table, perhaps optional
            rows.extend(describe(inner, key))
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = to_dict(f.default_factory())
        else:
            default = None
        rows.append(
            {
                "key": key,
                "section": prefix,
                "type": _type_name(tp),
                "default": default,
                "required": required,
                "checks": f.metadata.get("checks", {}),
                "unit": f.metadata.get("unit", ""),
                "choices": field_choices(f),
                "doc": f.metadata.get("doc", ""),
            }
        )
        if inner is not None:
            rows.extend(describe(inner, key + "[]"))
    return rows


def describe_sections(cls=Config, prefix: str = "") -> list[dict]:
    """Every table of the config, in the order of :func:`describe`'s rows.

    Each row: ``section`` (as in :func:`describe`), ``table`` (as a TOML file writes it:
    ``[market]``, ``[[assets]]``, ``[traders.rules.momentum]``; ``""`` for the top level) and
    ``doc`` (the first paragraph of the declaring class's docstring).
    """
    rows = [{"section": prefix, "table": _table_header(prefix), "doc": _first_line(cls)}]
    for name, f in _fields(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        tp = _hints(cls)[f.name]
        if "sections" in f.metadata:
            for section, schema in f.metadata["sections"].schemas().items():
                rows.extend(describe_sections(schema, f"{key}.{_key_part(section)}"))
            continue
        inner = _inner_dataclass(tp)
        if inner is not None:
            is_table = _strip_optional(tp) is inner
            rows.extend(describe_sections(inner, key if is_table else key + "[]"))
    return rows


def _table_header(section: str) -> str:
    if not section:
        return ""
    if section.endswith("[]"):
        return f"[[{section[:-2].replace('[]', '')}]]"
    return f"[{section.replace('[]', '')}]"


def _first_line(cls) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def field_choices(f: dataclasses.Field) -> dict[str, str]:
    """The names a field allows, each with its one-line description (``{}``: any value of its
    type). Declared with ``spec(choices=...)``: a mapping, or a function returning one (looked
    up now, so names registered after the config was declared are included)."""
    choices = f.metadata.get("choices")
    if choices is None:
        return {}
    return dict(choices() if callable(choices) else choices)


def _check_choice(value: Any, f: dataclasses.Field, key: str) -> None:
    """Refuse a name that is not among the field's declared choices."""
    if not isinstance(value, str) or "choices" not in f.metadata:
        return
    choices = field_choices(f)
    if value not in choices:
        raise ConfigError(
            f"{key}: expected one of {', '.join(map(repr, choices))}, got {_show(value)}"
            f"{_suggest(value, choices)}"
        )
