"""The outputs' schema: every column of every file a run or a sweep writes, declared once.

Each column (or JSON key, or graph attribute) is a :class:`Column`: its name, its type, its
unit and what it means, with the sign conventions spelt out (``flow``: a quantity, sells
positive). docs/outputs.md is rendered from these declarations
(:func:`experiments.reference.outputs_markdown`), and the tests check every table a run and a
sweep write against them (names, order and types), so the reference cannot drift from the files.

Names may hold placeholders that stand for several columns:

* ``{asset}``: one column (or key) per asset symbol, in the config's order
  (``quantity_{asset}`` is ``quantity_BTC``, ``quantity_ETH``);
* ``{key}``: one column per swept dotted key (``traders.leverage``);
* ``{name}``: any name (``warning_counts.{name}``: one key per kind of warning seen).

Nested JSON keys are dotted (``max_drawdown.worst``); ``[]`` marks the items of a list of
objects (``most_systemic[].trader_id``).

Types are pandas dtypes for tables (``int64``, ``float64``, ``category``, nullable ``Int64``;
``a|b`` when either occurs) and JSON types for JSON files (``number``, ``integer``,
``string``, ``boolean``, ``object``, ``list``, ``null``), GraphML types for graph attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ACCOUNTS",
    "ACCOUNT_HISTORY",
    "CASCADES",
    "CONTAGION_EDGES",
    "GRAPH_ATTRIBUTES",
    "EDGE_ATTRIBUTES",
    "LIQUIDATIONS",
    "MARKET",
    "NODE_ATTRIBUTES",
    "RUN_TABLES",
    "RUNS",
    "STEPS",
    "SUMMARY",
    "SWEEP",
    "SWEEP_TABLES",
    "Column",
    "Table",
    "check_json",
    "check_table",
    "expand",
    "flatten_json",
    "runs_columns",
]


@dataclass(frozen=True)
class Column:
    """One column of a table, one key of a JSON file or one attribute of the graph.

    Attributes:
        name: the name, perhaps with a placeholder (``{asset}``, ``{key}``, ``{name}``).
        dtype: its type (pandas dtype, JSON type or GraphML type; ``a|b`` for either).
        unit: what it is measured in (empty for names, flags and counts of things named in
            ``doc``).
        doc: what it means, with its sign convention.
        when: for a column written only in some runs or files, when (``"written with
            margin.vault on"``); empty for a column written every time.
    """

    name: str
    dtype: str
    unit: str
    doc: str
    when: str = ""


@dataclass(frozen=True)
class Table:
    """A file (or one part of one) and its columns.

    Attributes:
        file: the file's name in its folder (``market.parquet``, ``summary.json``).
        rows: what one row (or the file) holds.
        columns: its columns, in order.
    """

    file: str
    rows: str
    columns: tuple[Column, ...]


def _c(name: str, dtype: str, unit: str, doc: str, when: str = "") -> Column:
    return Column(name, dtype, unit, doc, when)


_VAULT = "written with margin.vault on"
_FILE = "in summary.json, not in model.summary()"
_HELD = 'written when some assets are collateral (assets kind = "collateral")'
_MAKERS = 'written with liquidity.model = "market_makers"'
_TRADED = "for traded assets (not for collateral assets)"


Q = "quote currency"
QTY = "quantity (units of the asset)"
PRICE = "quote currency per unit"

# --------------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------------

MARKET = Table(
    "market.parquet",
    "one row per (step, asset), in step order, assets in the config's order",
    (
        _c("step", "int64", "step number", "the step (steps count from 1)"),
        _c("asset", "category", "", "the asset's symbol"),
        _c("price", "float64", PRICE, "market price at the end of the step"),
        _c("fundamental", "float64", PRICE, "fundamental price at the end of the step"),
        _c(
            "impact",
            "float64",
            "log price, dimensionless",
            "impact state s: price = fundamental x exp(s); negative after net selling",
        ),
        _c(
            "flow",
            "float64",
            QTY,
            "the step's net flow through the book, voluntary and forced: sells positive, "
            "buys negative",
        ),
        _c(
            "forced_flow",
            "float64",
            QTY,
            "the part of flow from liquidations (sells positive); auto-deleveraging does not "
            "go through the book and is not in it",
        ),
        _c(
            "market_inventory",
            "float64",
            QTY,
            "the market agent's position (long positive): the other side of every trade",
        ),
        _c(
            "market_cash",
            "float64",
            Q,
            "the market agent's cash from trading this asset and from its funding payments",
        ),
        _c(
            "depth",
            "float64",
            Q,
            "the book's 1% depth at the step's close: the quote notional at the initial price "
            "that moves the price 1% (assets.depth under static liquidity, thinned by "
            "market.depth_stress; the makers' quotes and resting orders under market_makers)",
        ),
    ),
)

STEPS = Table(
    "steps.parquet",
    "one row per step",
    (
        _c("step", "int64", "step number", "the step (steps count from 1)"),
        _c(
            "liquidations",
            "int64",
            "fills",
            "liquidation fills of the step: one per position closed or cut back, in every "
            "round (auto-deleveraging fills not included)",
        ),
        _c("rounds", "int64", "rounds", "liquidation rounds run in the step (0: none)"),
        _c("liquidated_notional", "float64", Q, "notional closed by the step's liquidations"),
        _c("bad_debt", "float64", Q, "bad debt the step's liquidations left"),
        _c("insurance_fund", "float64", Q, "the insurance fund at the end of the step"),
        _c("adl_notional", "float64", Q, "notional closed by auto-deleveraging in the step"),
        _c(
            "accounts_liquidated_total",
            "int64",
            "accounts",
            "accounts liquidated at least once so far (cumulative)",
        ),
        _c("total_equity", "float64", Q, "traders' equity summed, at the mark, at the end"),
        _c(
            "accounts_liquidated",
            "int64",
            "accounts",
            "distinct accounts liquidated in the step (an account hit in several rounds "
            "counts once)",
        ),
        _c("fees", "float64", Q, "liquidation fees paid into the insurance fund in the step"),
        _c("unfunded_bad_debt", "float64", Q, "bad debt nobody has paid so far (cumulative)"),
        _c(
            "socialized_loss",
            "float64",
            Q,
            "losses taken pro rata from paper profits when auto-deleveraging could not cover "
            "them, so far (cumulative)",
        ),
        _c(
            "deposits",
            "float64",
            Q,
            "deposits of re-entering traders and market makers so far (cumulative)",
        ),
        _c(
            "collateral_sold_notional",
            "float64",
            Q,
            "collateral sold by auto-exchange in the step to cover negative wallets",
            _HELD,
        ),
        _c(
            "vault_taken_notional",
            "float64",
            Q,
            "notional the liquidator vault took over in the step",
            _VAULT,
        ),
        _c("vault_value", "float64", Q, "the vault's cash and positions at the mark", _VAULT),
        _c("vault_notional", "float64", Q, "gross notional of the vault's positions", _VAULT),
        _c(
            "maker_inventory_{asset}",
            "float64",
            QTY,
            "the market makers' venue position, summed over the makers (long positive)",
            _MAKERS,
        ),
        _c(
            "maker_hedge_{asset}",
            "float64",
            QTY,
            "the market makers' off-venue hedge, summed (long positive)",
            _MAKERS,
        ),
        _c(
            "maker_equity",
            "float64",
            Q,
            "the makers' equity: venue accounts at the mark, hedges at the fundamental",
            _MAKERS,
        ),
        _c("maker_pnl", "float64", Q, "maker_equity minus the makers' initial equity", _MAKERS),
        _c(
            "makers_bid_share",
            "float64",
            "fraction",
            "the makers' bid quotes as a share of their calm quotes",
            _MAKERS,
        ),
        _c(
            "makers_ask_share",
            "float64",
            "fraction",
            "the makers' ask quotes as a share of their calm quotes",
            _MAKERS,
        ),
        _c(
            "makers_liquidated",
            "int64",
            "accounts",
            "market makers liquidated in the step",
            _MAKERS,
        ),
    ),
)

LIQUIDATIONS = Table(
    "liquidations.parquet",
    "one row per fill: a position closed wholly or in part by a liquidation round or by "
    "auto-deleveraging, in the order they happened",
    (
        _c("step", "int64", "step number", "the step"),
        _c("round", "int64", "round", "the liquidation round within the step (generation)"),
        _c("trader_id", "int64|string", "", "the account's id, as given"),
        _c("asset", "category", "", "the asset's symbol"),
        _c(
            "quantity",
            "float64",
            QTY,
            "quantity closed, signed as the position was: positive closes a long (a sale), "
            "negative buys back a short",
        ),
        _c(
            "price",
            "float64",
            PRICE,
            "fill price: the price after the round's forced flow (liquidations), or the "
            "bankrupt position's bankruptcy price (adl)",
        ),
        _c("notional", "float64", Q, "|quantity| x price"),
        _c("fee", "float64", Q, "liquidation fee charged on this fill, into the insurance fund"),
        _c("bad_debt", "float64", Q, "bad debt this fill's unit left (0 for partial and adl)"),
        _c(
            "kind",
            "category",
            "",
            "full (the position closed completely), partial (cut back by the smallest "
            "restoring fraction), adl (a position closed by auto-deleveraging), vault (taken "
            "over by the liquidator vault at the mark) or collateral (a collateral holding "
            "sold to cover a negative wallet)",
        ),
    ),
)

ACCOUNTS = Table(
    "accounts.parquet",
    "one row per trader, at the end of the run",
    (
        _c("trader_id", "int64|string", "", "the account's id, as given"),
        _c("strategy", "category", "", "the account's trading rule"),
        _c("initial_collateral", "float64", Q, "collateral at the start"),
        _c(
            "initial_leverage",
            "float64",
            "x (notional / equity)",
            "gross notional over equity at the start (inf for an account that started with "
            "no equity)",
        ),
        _c("wallet", "float64", Q, "cross wallet at the end (isolated margins not included)"),
        _c("equity", "float64", Q, "wallet + isolated margins + unrealised PnL, at the mark"),
        _c(
            "leverage",
            "float64",
            "x (notional / equity)",
            "gross notional over equity at the end (NaN when equity <= 0 with positions open)",
        ),
        _c(
            "margin_ratio",
            "float64",
            "dimensionless",
            "cross maintenance over cross equity (>= 1: liquidatable; 0 without cross "
            "positions; NaN when cross equity <= 0)",
        ),
        _c(
            "liquidations",
            "int64",
            "rounds",
            "liquidation rounds that hit the account (not fills: an account whose two "
            "positions were closed in one round counts once)",
        ),
        _c(
            "first_liquidation_step",
            "int64",
            "step number",
            "the step of its first liquidation; 0 means never liquidated",
        ),
        _c(
            "initial_quantity_{asset}",
            "float64",
            QTY,
            "position at the start (long positive)",
            _TRADED,
        ),
        _c("quantity_{asset}", "float64", QTY, "position at the end (long positive)", _TRADED),
        _c(
            "entry_price_{asset}",
            "float64",
            PRICE,
            "entry price of the position at the end",
            _TRADED,
        ),
        _c(
            "isolated_margin_{asset}",
            "float64",
            Q,
            "the position's own margin under isolated margin (0 for cross positions)",
            _TRADED,
        ),
        _c(
            "liquidation_price_{asset}",
            "float64",
            PRICE,
            "mark at which the position would be liquidated, other prices held (NaN when flat "
            "or when no positive price liquidates it)",
            _TRADED,
        ),
        _c(
            "initial_holding_{asset}",
            "float64",
            QTY,
            "units of a collateral asset held at the start",
            _HELD,
        ),
        _c(
            "holding_{asset}",
            "float64",
            QTY,
            "units held at the end (auto-exchange sells them after a liquidation)",
            _HELD,
        ),
    ),
)

CONTAGION_EDGES = Table(
    "contagion_edges.parquet",
    "one row per attribution (who liquidated whom), repeats not merged",
    (
        _c("step", "int64", "step number", "the step"),
        _c("round", "int64", "round", "the victim's liquidation round"),
        _c(
            "source",
            "Int64|string",
            "",
            "the liquidator's trader id (missing for the step root and aggregate nodes)",
        ),
        _c(
            "source_kind",
            "category",
            "",
            "trader, step (a round-1 liquidation hangs from its step's root) or others (the "
            "aggregate of a bounded round)",
        ),
        _c("target", "int64|string", "", "the victim's trader id"),
        _c(
            "weight",
            "float64",
            "fraction",
            "the source's share of the flow that hurt the target; a target's weights in one "
            "round sum to 1",
        ),
    ),
)

ACCOUNT_HISTORY = Table(
    "account_history.parquet",
    "opt-in (ContagionModel(account_history=N)): one row per (snapshot step, sampled trader)",
    (
        _c("step", "int64", "step number", "the snapshot's step"),
        _c("trader_id", "int64|string", "", "the account's id"),
        _c("wallet", "float64", Q, "cross wallet"),
        _c("equity", "float64", Q, "equity at the mark"),
        _c(
            "leverage", "float64", "x (notional / equity)", "gross notional over equity (NaN: none)"
        ),
        _c("margin_ratio", "float64", "dimensionless", "cross maintenance over cross equity"),
        _c("liquidations", "int64", "rounds", "liquidation rounds so far"),
        _c("quantity_{asset}", "float64", QTY, "position (long positive)"),
    ),
)

SUMMARY = Table(
    "summary.json",
    "the run's headline metrics, one JSON object",
    (
        _c("name", "string", "", "the config's name"),
        _c("seed", "integer", "", "the run's seed"),
        _c("steps", "integer", "steps", "steps run"),
        _c("traders", "integer", "accounts", "accounts in the book"),
        _c(
            "liquidations",
            "integer",
            "fills",
            "liquidation fills (one per position closed or cut back per round; adl not included)",
        ),
        _c("accounts_liquidated", "integer", "accounts", "distinct accounts ever liquidated"),
        _c("fraction_liquidated", "number", "fraction", "accounts_liquidated / traders"),
        _c(
            "liquidated_notional", "number", Q, "notional closed by liquidations (adl not included)"
        ),
        _c("max_drawdown.worst", "number", "fraction", "the largest of the assets' drawdowns"),
        _c("max_drawdown.worst_asset", "string|null", "", "the asset with the largest drawdown"),
        _c(
            "max_drawdown.{asset}",
            "number",
            "fraction of the peak",
            "largest fall of the market price from its running peak (initial price included)",
        ),
        _c(
            "amplification.worst",
            "number",
            "dimensionless",
            "amplification of the asset with the largest drawdown",
        ),
        _c(
            "amplification.{asset}",
            "number",
            "dimensionless",
            "the market price's largest log drawdown over the fundamental's (1: liquidations "
            "added nothing)",
        ),
        _c("bad_debt", "number", Q, "bad debt left by liquidations"),
        _c("insurance_fund_used", "number", Q, "bad debt the insurance fund paid"),
        _c("insurance_fund_final", "number", Q, "the insurance fund at the end"),
        _c("unfunded_bad_debt", "number", Q, "bad debt nobody paid"),
        _c("adl_notional", "number", Q, "notional closed by auto-deleveraging"),
        _c(
            "vault_taken_notional", "number", Q, "notional the liquidator vault took over (0: none)"
        ),
        _c("vault_value", "number", Q, "the vault's cash and positions at the mark at the end"),
        _c("fees", "number", Q, "liquidation fees paid into the insurance fund"),
        _c(
            "open_interest_start",
            "number",
            Q,
            "open interest at the initial prices: one side of every position, the market "
            "agent's included",
        ),
        _c(
            "liquidated_share",
            "number",
            "fraction",
            "liquidated notional (adl and collateral sales not included) over open_interest_start",
        ),
        _c(
            "long_share_liquidated",
            "number",
            "fraction",
            "the share of the liquidated notional that closed long positions (0: none)",
        ),
        _c("adl_share", "number", "fraction", "adl_notional over the liquidated notional"),
        _c(
            "open_interest_drop",
            "number",
            "fraction",
            "1 - open interest at the end, at the final marks, over open_interest_start",
        ),
        _c(
            "insurance_fund_change",
            "number",
            "fraction",
            "final over initial insurance fund, minus 1 (0 when the fund starts empty)",
        ),
        _c("cascades", "integer", "cascades", "steps with at least one liquidation"),
        _c(
            "largest_cascade",
            "integer",
            "accounts",
            "distinct accounts liquidated in the step with the most",
        ),
        _c(
            "largest_cascade_step",
            "integer",
            "step number",
            "the step of the largest cascade (0: none)",
        ),
        _c("mean_cascade_size", "number", "accounts", "mean distinct accounts per cascade"),
        _c("max_rounds", "integer", "rounds", "most liquidation rounds in one step"),
        _c(
            "mean_branching",
            "number",
            "dimensionless",
            "offspring mean of the cascades: liquidations of rounds >= 2 over all, pooled",
        ),
        _c(
            "branching_by_generation",
            "list",
            "dimensionless",
            "accounts of round r + 1 over those of round r, pooled over cascades, r = 1, 2, ...",
        ),
        _c(
            "max_debtrank",
            "number",
            "fraction",
            "the largest trader's DebtRank: its downstream share of all liquidated notional",
        ),
        _c("most_systemic[].trader_id", "integer|string", "", "one of the five top traders"),
        _c("most_systemic[].debtrank", "number", "fraction", "its DebtRank"),
        _c("final_price.{asset}", "number", PRICE, "mark price at the end"),
        _c(
            "money_error",
            "number",
            "fraction",
            "|money - initial money - deposits| over the money scale (conservation check)",
        ),
        _c("graph_truncated", "boolean", "", "whether the contagion graph was bounded"),
        _c("contagion_graph.nodes", "integer", "nodes", "nodes of the graph"),
        _c("contagion_graph.edges", "integer", "edges", "distinct (source, target) edges"),
        _c(
            "contagion_graph.edges_recorded",
            "integer",
            "edges",
            "attributions recorded before repeats are merged",
        ),
        _c("contagion_graph.truncated", "boolean", "", "as graph_truncated"),
        _c(
            "contagion_graph.truncated_rounds",
            "integer",
            "rounds",
            "rounds that kept only each victim's top contributors",
        ),
        _c(
            "contagion_graph.first_truncated_step",
            "integer",
            "step number",
            "the first such round's step (0: none)",
        ),
        _c("contagion_graph.max_edges", "integer", "edges", "contagion.max_edges"),
        _c("contagion_graph.top_contributors", "integer", "edges", "contagion.top_contributors"),
        _c("warnings", "list", "", "the first 20 warning messages of each kind"),
        _c(
            "warning_counts.{name}",
            "integer",
            "warnings",
            "how many warnings of each kind (round_limit, price_floor, price_ceiling, ...)",
        ),
        _c("collateral_sales", "integer", "fills", "collateral sales by auto-exchange", _HELD),
        _c(
            "collateral_sold_notional",
            "number",
            Q,
            "collateral sold by auto-exchange to cover negative wallets",
            _HELD,
        ),
        _c(
            "accounts_selling_collateral",
            "integer",
            "accounts",
            "distinct accounts whose collateral was sold",
            _HELD,
        ),
        _c(
            "collateral_low.{asset}",
            "number",
            PRICE,
            "a collateral asset's lowest market price in the run (initial price included)",
            _HELD,
        ),
        _c(
            "makers_liquidated",
            "integer",
            "accounts",
            "market makers ever liquidated (they are not among traders)",
            _MAKERS,
        ),
        _c("provenance.version", "string", "", "the project's version", _FILE),
        _c(
            "provenance.git.commit",
            "string|null",
            "",
            "the git commit of the code (null: none)",
            _FILE,
        ),
        _c("provenance.git.dirty", "boolean|null", "", "whether the work tree had changes", _FILE),
        _c("provenance.python", "string", "", "the Python version", _FILE),
        _c(
            "provenance.packages.{name}",
            "string",
            "",
            "version of each package the run used",
            _FILE,
        ),
        _c("provenance.platform", "string", "", "the operating system and machine", _FILE),
        _c("provenance.seed", "integer", "", "the run's seed", _FILE),
        _c(
            "provenance.config_sha256",
            "string",
            "",
            "SHA-256 of the run folder's config.toml",
            _FILE,
        ),
        _c("provenance.started", "string", "", "UTC start time (ISO 8601)", _FILE),
        _c(
            "provenance.elapsed_seconds",
            "number",
            "seconds",
            "from building the model to writing the folder",
            _FILE,
        ),
    ),
)

_GRAPH = "graph attribute"
NODE_ATTRIBUTES = Table(
    "contagion.graphml.gz (nodes)",
    "one node per liquidated trader (its id), per step root step:<t> and per aggregate "
    "others:<t>:<r>",
    (
        _c("kind", "string", "", "trader, step (a step's root) or aggregate"),
        _c("step", "long", "step number", "the root's or aggregate's step (not on traders)"),
        _c("round", "long", "round", "the aggregate's round (aggregates only)"),
        _c("first_step", "long", "step number", "the trader's first liquidation step"),
        _c("first_round", "long", "round", "the round of that first liquidation"),
        _c("events", "long", "rounds", "rounds in which the trader was liquidated"),
        _c("liquidated_notional", "double", Q, "notional the trader's liquidations closed"),
        _c(
            "initial_leverage",
            "double",
            "x (notional / equity)",
            "leverage at the start (absent for an account that started with no equity)",
        ),
    ),
)

EDGE_ATTRIBUTES = Table(
    "contagion.graphml.gz (edges)",
    "one edge per (liquidator, victim) pair; repeats are summed into it",
    (
        _c(
            "weight",
            "double",
            "dimensionless",
            "attribution weights (shares) summed over repeats: a trader's incoming weights sum "
            "to the rounds it was liquidated in",
        ),
        _c("step", "long", "step number", "the first attribution's step"),
        _c("round", "long", "round", "the first attribution's round (the victim's)"),
        _c("last_step", "long", "step number", "the last attribution's step"),
        _c("events", "long", "attributions", "how many attributions were summed"),
    ),
)

GRAPH_ATTRIBUTES = Table(
    "contagion.graphml.gz (graph)",
    "attributes of the whole graph",
    (
        _c("truncated", "boolean", "", "whether some round kept only top contributors"),
        _c("max_edges", "long", "edges", "contagion.max_edges"),
        _c("top_contributors", "long", "edges", "contagion.top_contributors"),
        _c("edges_recorded", "long", "edges", "attributions recorded"),
        _c("truncated_rounds", "long", "rounds", "rounds that were bounded"),
    ),
)

RUN_TABLES = (MARKET, STEPS, LIQUIDATIONS, ACCOUNTS, CONTAGION_EDGES, ACCOUNT_HISTORY)

# --------------------------------------------------------------------------------------------
# Sweep folder
# --------------------------------------------------------------------------------------------

# summary.json keys a sweep's row does not repeat (the row has its own seed, from the sweep)
_NOT_IN_RUNS = ("name", "seed")


def runs_columns() -> tuple[Column, ...]:
    """The columns of runs.parquet: the run's identity, then summary.json flattened.

    Flattening (:func:`experiments.sweep.run_metrics`): ``x.worst`` becomes ``x``,
    ``x.worst_asset`` ``x_asset``, any other ``x.y`` ``x_y``; a list becomes its length
    ``n_x``; ``name``, ``seed`` and the provenance block (sweep.json has the sweep's) are left
    out.
    """
    head = (
        _c("point", "int64", "", "the parameter point (index into sweep.json's points)"),
        _c("replicate", "int64", "", "the replicate (same random stream at every point)"),
        _c("seed", "uint64", "", "the run's seed"),
        _c("{key}", "as the values", "as the key", "the value of each swept dotted key"),
        _c("status", "object", "", "ok, or error for a run that raised"),
        _c("error", "object", "", "the exception of a failed run (empty when ok)"),
    )
    metrics = []
    seen_lists = set()
    for col in SUMMARY.columns:
        if col.name in _NOT_IN_RUNS or col.name.startswith("provenance."):
            continue
        name = _flat_name(col.name)
        if col.name.startswith("most_systemic[]"):
            name = "n_most_systemic"
        if name in seen_lists:
            continue
        if col.dtype == "list" or name.startswith("n_"):
            seen_lists.add(name)
            doc = f"length of summary.json's {col.name.split('[]')[0]}"
            metrics.append(_c(name if name.startswith("n_") else f"n_{name}", "int64", "", doc))
            continue
        dtype = {"integer": "int64", "number": "float64", "boolean": "bool"}.get(
            col.dtype, "object"
        )
        metrics.append(_c(name, dtype, col.unit, f"summary.json {col.name}: {col.doc}", col.when))
    tail = (
        _c(
            "liquidated_notional_{asset}",
            "float64",
            Q,
            "notional closed by liquidations and auto-deleveraging in this asset",
        ),
        _c("elapsed", "float64", "seconds", "wall time of the run (differs between machines)"),
    )
    return head + tuple(metrics) + tail


def _flat_name(dotted: str) -> str:
    if "." not in dotted:
        return dotted
    head, sub = dotted.split(".", 1)
    if sub == "worst":
        return head
    if sub == "worst_asset":
        return f"{head}_asset"
    return f"{head}_{sub}"


RUNS = Table("runs.parquet", "one row per run, sorted by point and replicate", runs_columns())

CASCADES = Table(
    "cascades.parquet",
    "one row per (run, step with liquidations)",
    (
        _c("point", "int64", "", "the run's parameter point"),
        _c("replicate", "int64", "", "the run's replicate"),
        _c("step", "int64", "step number", "the step"),
        _c(
            "size",
            "int64",
            "accounts",
            "distinct accounts liquidated in the step (not auto-deleveraged)",
        ),
    ),
)

SWEEP = Table(
    "sweep.json",
    "the resolved sweep, one JSON object (written when the sweep starts)",
    (
        _c("name", "string", "", "the sweep's name"),
        _c("sweep_file", "string", "path", "the sweep file it was read from"),
        _c("sampler", "string", "", "grid, lhs, sobol, random or saltelli"),
        _c("samples", "integer", "points", "points drawn by a non-grid sampler"),
        _c("replicates", "integer", "runs per point", "replicates of every point"),
        _c("seed", "integer", "", "the base seed"),
        _c("common_random_numbers", "boolean", "", "replicate k: one stream at every point"),
        _c("keys", "list", "", "the swept dotted keys, in column order"),
        _c("grid", "object", "", "[sweep.grid]: key -> values"),
        _c("ranges", "object", "", "[sweep.ranges]: key -> {low, high, log}"),
        _c("base", "object", "", "the base config with [sweep.set] applied (TOML-shaped)"),
        _c("base_dir", "string", "path", "the folder relative paths of the base resolve from"),
        _c("points", "list", "", "every parameter point: key -> value"),
        _c("fingerprint", "string", "", "SHA-256 of what identifies the results (for --resume)"),
        _c(
            "provenance",
            "object",
            "",
            "as summary.json's, for the sweep's session (the base config's hash; earlier "
            "sessions of a resumed sweep under provenance.earlier)",
        ),
    ),
)

SWEEP_TABLES = (RUNS, CASCADES)

# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(asset|key|name)\}")


def expand(
    table: Table, symbols: Sequence[str] = (), keys: Sequence[str] = (), names: Sequence[str] = ()
) -> list[str]:
    """The column names of ``table`` for these assets, swept keys and other names, in order.

    A name with ``{asset}`` gives one name per symbol; ``{key}`` one per swept key; ``{name}``
    one per name of ``names`` (runs.parquet's ``warning_counts_{name}``). Per-asset
    columns next to each other and written under the same condition (``quantity_{asset}``,
    ``entry_price_{asset}``) are grouped by asset, as the tables write them: every column of
    BTC, then every column of ETH.
    """
    out: list[str] = []
    cols = list(table.columns)
    i = 0
    while i < len(cols):
        if "{asset}" in cols[i].name:
            j = i
            while j < len(cols) and "{asset}" in cols[j].name and cols[j].when == cols[i].when:
                j += 1
            out += [c.name.replace("{asset}", s) for s in symbols for c in cols[i:j]]
            i = j
        elif cols[i].name == "{key}":
            out += list(keys)
            i += 1
        elif "{name}" in cols[i].name:
            out += [cols[i].name.replace("{name}", n) for n in names]
            i += 1
        else:
            out.append(cols[i].name)
            i += 1
    return out


def _dtype_ok(declared: str, actual: str) -> bool:
    names = {"string": ("object", "string", "str"), "object": ("object", "string", "str")}
    for alt in declared.split("|"):
        if actual == alt or actual in names.get(alt, ()):
            return True
    return declared == "as the values"


def check_table(
    table: Table,
    df,
    symbols: Sequence[str] = (),
    keys: Sequence[str] = (),
    names: Sequence[str] = (),
) -> list[str]:
    """What differs between a DataFrame and its declaration (empty when nothing does).

    Compares the column names in order, then each column's dtype.
    """
    have = [str(c) for c in df.columns]
    some = Table(table.file, table.rows, tuple(c for c in table.columns if c.when))
    optional = set(expand(some, symbols, keys, names))
    want = [n for n in expand(table, symbols, keys, names) if n not in optional or n in have]
    if have != want:
        missing = [c for c in want if c not in have]
        extra = [c for c in have if c not in want]
        return [f"{table.file}: columns differ (missing {missing}, undeclared {extra})"]
    problems = []
    by_name = _declared_by_name(table, symbols, keys, names)
    for name in have:
        actual = str(df[name].dtype)
        if not _dtype_ok(by_name[name].dtype, actual):
            problems.append(f"{table.file}: {name} is {actual}, declared {by_name[name].dtype}")
    return problems


def _declared_by_name(table: Table, symbols, keys, names) -> dict[str, Column]:
    out = {}
    for col in table.columns:
        if "{asset}" in col.name:
            out.update({col.name.replace("{asset}", s): col for s in symbols})
        elif "{name}" in col.name:
            out.update({col.name.replace("{name}", n): col for n in names})
        elif col.name == "{key}":
            out.update({k: col for k in keys})
        else:
            out[col.name] = col
    return out


def flatten_json(data, prefix: str = "", whole: frozenset[str] = frozenset()) -> dict:
    """A JSON object as dotted keys: nested objects joined by dots, items of lists of objects
    under ``[]``; lists of scalars, and the keys named in ``whole``, stay whole."""
    out: dict[str, object] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if key in whole:
            out[key] = v
        elif isinstance(v, dict):
            out.update(flatten_json(v, key, whole))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                out.update(flatten_json(item, key + "[]", whole))
        else:
            out[key] = v
    return out


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    return "object"


def _pattern(name: str, symbols: Iterable[str]) -> re.Pattern:
    alternatives = "|".join(re.escape(s) for s in symbols) or "(?!)"
    parts = _PLACEHOLDER.split(name)
    regex = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"(?:{alternatives})" if part == "asset" else r"[^.]+"
    return re.compile(regex + r"\Z")


def check_json(table: Table, data: dict, symbols: Sequence[str] = ()) -> list[str]:
    """What differs between a JSON object and its declaration: undeclared keys, declared keys
    absent (placeholders may match nothing), and values of another type (an integer passes
    where a number is declared)."""
    whole = frozenset(c.name for c in table.columns if c.dtype in ("object", "list"))
    flat = flatten_json(data, whole=whole)
    problems = []
    patterns = [(c, _pattern(c.name, symbols)) for c in table.columns]
    for key, value in flat.items():
        if value == [] and any(c.name.startswith(key + "[].") for c in table.columns):
            continue  # an empty list of objects (no top traders)
        match = next((c for c, p in patterns if p.match(key)), None)
        if match is None:
            problems.append(f"{table.file}: {key} is not declared")
            continue
        kind = _json_type(value)
        allowed = match.dtype.split("|")
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            if not (isinstance(value, dict) and not value and "object" in allowed):
                problems.append(f"{table.file}: {key} is {kind}, declared {match.dtype}")
    for col, pattern in patterns:
        if "{" in col.name or "[]" in col.name or col.when:
            continue
        if not any(pattern.match(k) for k in flat) and not _empty_object(data, col.name):
            problems.append(f"{table.file}: {col.name} is declared but absent")
    return problems


def _empty_object(data: dict, dotted: str) -> bool:
    """Whether ``dotted`` names an object that is present but empty (no keys to flatten)."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node == {} or node == []
