"""The run folder: tables (parquet), the contagion graph (GraphML), headline metrics (JSON).

The contagion graph is written in the formats ``[output] graph`` names (:data:`GRAPH_FILES`):
gzip-compressed GraphML ``contagion.graphml.gz`` by default, a tenth of the plain text's size;
:func:`read_contagion_graph` reads whichever a folder holds. ``summary.json`` ends with a
``provenance`` block (:mod:`model.provenance`): versions, commit, config hash, start time.

Every file is written to a temporary name in the folder and renamed into place, and the
folder carries a ``.incomplete`` marker until its last file is in: a run folder is either
complete or clearly marked incomplete, never silently half-written (:mod:`model.storage`).

The drawing of the largest cascade (``cascade.png``) is not written here: drawing belongs to
the experiments layer, which adds it to the folder (``contagion run``,
:func:`experiments.run.write_run_folder`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from model import metrics, storage
from model.allocation import release_free_memory
from model.config import to_dict
from model.fills import Kind, liquidation_fills
from model.ids import id_column
from model.metrics import cascade_metrics

__all__ = [
    "GRAPH_FILES",
    "INCOMPLETE_MARKER",
    "RUN_FILES",
    "build_tables",
    "check_run_folder",
    "config_text",
    "event_metrics",
    "graph_file",
    "open_interest",
    "read_contagion_graph",
    "run_status",
    "summarize",
    "write_run",
]

INCOMPLETE_MARKER = ".incomplete"
# Every file of a complete run folder, besides its contagion graph file(s); summary.json is
# written last.
RUN_FILES = (
    "config.toml",
    "market.parquet",
    "steps.parquet",
    "liquidations.parquet",
    "accounts.parquet",
    "contagion_edges.parquet",
    "summary.json",
)
# ``[output] graph`` format -> file name, in the order readers look for them.
GRAPH_FILES = {
    "graphml.gz": "contagion.graphml.gz",
    "graphml": "contagion.graphml",
    "json": "contagion.json",
}


def check_run_folder(out) -> Path:
    """Make sure ``out`` can become a run folder, before a long run rather than after it.

    Creates the folder (and its parents). Raises :class:`model.config.ConfigError` (one line
    naming the path) when it exists as a file, lies under a file, or cannot be written.
    """
    from model.config import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{out}: cannot create the run folder (a parent is a file)") from None
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the run folder: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: the run folder is not writable")
    return out


def run_status(folder) -> str:
    """``"complete"``, ``"incomplete"`` (marker present or a file missing) or ``"missing"``.

    Complete: every file of :data:`RUN_FILES` and a contagion graph file in one of the formats
    of :data:`GRAPH_FILES`, and no ``.incomplete`` marker.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    if (folder / INCOMPLETE_MARKER).exists():
        return "incomplete"
    if not all((folder / name).is_file() for name in RUN_FILES):
        return "incomplete"
    if graph_file(folder) is None:
        return "incomplete"
    return "complete"


def graph_file(folder) -> Path | None:
    """The run folder's contagion graph file (the first of :data:`GRAPH_FILES` present)."""
    for name in GRAPH_FILES.values():
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_contagion_graph(folder):
    """The contagion graph of a run folder as a ``networkx.DiGraph``, from whichever graph file
    it holds (``contagion.graphml.gz``, ``contagion.graphml`` or ``contagion.json``).

    GraphML keeps node ids as text; node-link JSON keeps them as written (numbers for traders).

    Raises:
        FileNotFoundError: the folder holds no contagion graph file.
    """
    import json

    import networkx as nx

    path = graph_file(folder)
    if path is None:
        names = ", ".join(GRAPH_FILES.values())
        raise FileNotFoundError(2, f"no contagion graph file ({names})", str(folder))
    if path.name.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            return nx.node_link_graph(json.load(fh), edges="edges")
    return nx.read_graphml(path)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def market_table(model) -> pd.DataFrame:
    return model.market_history.table()


def steps_table(model) -> pd.DataFrame:
    df = model.datacollector.get_model_vars_dataframe().reset_index(drop=True)
    df.insert(0, "step", np.arange(1, len(df) + 1))
    if model.desk is not None:  # the market makers' columns (liquidity.model = market_makers)
        df = pd.concat([df, model.liquidity.steps_columns(model.symbols)], axis=1)
    return df


def liquidations_table(model) -> pd.DataFrame:
    return model.engine.fills.table(model.symbols)


def accounts_table(model, rows: slice | None = None) -> pd.DataFrame:
    """One row per trader at the end (``rows``: a slice of the book, for writing in parts)."""
    book = model.book
    mark = model.mark
    pop = model.population
    r = slice(None) if rows is None else rows
    names = np.asarray(pop.strategy[r], dtype=str)
    # the same categories in every part: every rule any trader follows, sorted
    strategy_rows = model.strategy_rows
    if sum(len(v) for v in strategy_rows.values()) == len(pop.strategy):
        categories = sorted(strategy_rows)  # the rules' rows cover every trader
    else:
        categories = np.unique(np.asarray(pop.strategy, dtype=str))
    leverage = book.leverage(mark, r)
    ratio = book.margin_ratio(mark, r)
    data = {
        "trader_id": id_column(book.ids[r]),
        "strategy": pd.Categorical(names, categories=categories),
        "initial_collateral": pop.collateral[r],
        "initial_leverage": model.recorder.initial_leverage[r],
        "wallet": book.wallet[r],
        "equity": book.equity(mark, r),
        "leverage": np.where(np.isfinite(leverage), leverage, np.nan),
        "margin_ratio": np.where(np.isfinite(ratio), ratio, np.nan),
        "liquidations": model.engine.liquidation_count[r],
        "first_liquidation_step": np.where(
            model.recorder.events[r] > 0, model.recorder.first_step[r], 0
        ),
    }
    liq = book.liquidation_price(mark, r)
    held = () if book.collateral is None else book.collateral.cols.tolist()
    for j, s in enumerate(model.symbols):
        if j in held:  # a collateral asset: holdings, not a position
            continue
        data[f"initial_quantity_{s}"] = pop.qty[r, j]
        data[f"quantity_{s}"] = book.qty[r, j]
        data[f"entry_price_{s}"] = book.entry[r, j]
        data[f"isolated_margin_{s}"] = book.margin[r, j]
        data[f"liquidation_price_{s}"] = liq[:, j]
    for i, s in enumerate(() if book.collateral is None else book.collateral.symbols):
        initial = pop.holdings[r, i] if pop.holdings is not None else np.zeros(len(book.ids[r]))
        data[f"initial_holding_{s}"] = initial
        data[f"holding_{s}"] = book.holdings[r, i]
    return pd.DataFrame(data)


# Rows of a large table built and written at a time (a row group of its parquet file): bounds
# the memory of writing a big book's accounts, or a long run's fills and edge events.
ACCOUNT_ROWS_PER_GROUP = 1 << 16
LOG_ROWS_PER_GROUP = 1 << 20


def _write_accounts(path: Path, model) -> None:
    """accounts.parquet in row groups of ``ACCOUNT_ROWS_PER_GROUP`` traders.

    Building the whole table at once holds about twenty columns for every trader in pandas and
    again in Arrow: more than the account book itself for a million traders.
    """
    n = model.book.n_traders
    step = ACCOUNT_ROWS_PER_GROUP
    parts = (
        accounts_table(model, slice(lo, min(lo + step, n))) for lo in range(0, max(n, 1), step)
    )
    write_row_groups(path, parts)


def write_row_groups(path: Path, frames) -> None:
    """Write DataFrames (at least one, with the same columns and types) as one parquet
    file, a row group each, atomically: the table is never held whole (in pandas and again
    in Arrow, as ``DataFrame.to_parquet`` holds it). Reads back as their concatenation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(p):
        writer = None
        try:
            for part in frames:
                schema = None if writer is None else writer.schema
                table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(p, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()

    storage.atomic_write(path, write)
    release_free_memory()  # (the parts' tables: heap pages, kept otherwise)


def build_tables(model) -> dict[str, pd.DataFrame]:
    return {
        "market": market_table(model),
        "steps": steps_table(model),
        "liquidations": liquidations_table(model),
        "accounts": accounts_table(model),
    }


# --------------------------------------------------------------------------------------------
# Headline metrics
# --------------------------------------------------------------------------------------------


def _max_drawdown(path: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of the peak."""
    if path.size == 0:
        return 0.0
    peak = np.maximum.accumulate(path)
    return float(np.max(1.0 - path / peak))


def money_scale(model) -> float:
    """The size of the amounts whose sum is the money total: the scale of its rounding error.

    Money is conserved exactly in arithmetic and to rounding in floating point; after prices
    run far from where they started (a price held at its ceiling, say) the balances are large
    and so is the rounding of their sum, so the error is measured against this scale rather
    than against the initial money alone.
    """
    book, market, mark = model.book, model.market, model.mark
    traders = (
        np.abs(book.wallet).sum()
        + np.abs(book.margin).sum()
        + (np.abs(book.qty) * (mark + np.abs(book.entry))).sum()
    )
    if book.collateral is not None:
        traders += book.collateral.market_value(np.abs(book.holdings), mark).sum()
    other = (
        abs(model.engine.insurance_fund)
        + abs(model.engine.unfunded_bad_debt)
        + np.abs(market.cash).sum()
        + (np.abs(market.inventory) * mark).sum()
    )
    vault = model.engine.vault
    if vault is not None:
        other += abs(vault.cash) + vault.notional(mark)
    # Rounding made while balances were large stays in the sum after they shrink: the market
    # agent, counterparty of everything, had gross balances as large as the traders' together.
    # Quantities are summed in different orders on the two sides of every fill, so they agree
    # to rounding of the quantity traded, which is then worth that quantity at today's price.
    history = 0.0
    gross_qty = np.abs(model.population.qty).sum(axis=0)
    if book.collateral is not None and model.population.holdings is not None:
        gross_qty[book.collateral.cols] += np.abs(model.population.holdings).sum(axis=0)
    past = model.market_history
    if len(past):
        history = 2.0 * float(
            (np.abs(past.cash) + np.abs(past.inventory) * past.price).sum(axis=1).max()
        )
        gross_qty = gross_qty + np.abs(past.flow).sum(axis=0)
    fills = model.engine.fills.columns()
    gross_qty = gross_qty + np.bincount(
        fills["asset"], weights=np.abs(fills["quantity"]), minlength=len(mark)
    )
    traded = float((gross_qty * mark).sum())
    if model.desk is not None:  # the makers' hedges and the market agent's outside book
        desk, f = model.desk, model.market.fundamental
        other += float(
            np.abs(desk.hedge_cash).sum()
            + (np.abs(desk.hedge) * f).sum()
            + abs(desk.outside_cash)
            + (np.abs(desk.outside_inventory) * f).sum()
        )
    return float(max(abs(model.initial_money), traders + other, history, traded, 1.0))


def open_interest(qty: np.ndarray, prices: np.ndarray) -> float:
    """Open interest in quote currency: one side of every position, the market agent's
    (the opposite of the traders' net, ``-qty.sum(axis=0)``) included, at ``prices``, as data
    vendors count it: ``sum_a (sum_i |q_ia| + |sum_i q_ia|) P_a / 2``."""
    qty = np.asarray(qty, dtype=float)
    gross = np.abs(qty).sum(axis=0) + np.abs(qty.sum(axis=0))
    return float((gross * np.asarray(prices, dtype=float)).sum() / 2.0)


def _ratio(num: float, den: float) -> float:
    """``num / den``, 0 when the denominator is 0 (nothing to divide: nothing happened)."""
    return float(num / den) if den > 0 else 0.0


def event_metrics(model) -> dict[str, float]:
    """The figures reported for real liquidation events, as run metrics (summary.json and
    runs.parquet; docs/reference/events.md says what each reported figure is):

    * ``open_interest_start``: open interest at the initial prices (:func:`open_interest`);
    * ``liquidated_share``: liquidated notional (ADL fills excluded) over it;
    * ``long_share_liquidated``: the share of that notional that closed long positions;
    * ``adl_share``: ADL notional over liquidated notional (Hyperliquid, 10 Oct 2025: 38%);
    * ``open_interest_drop``: 1 - open interest at the end at the final marks over open
      interest at the start (vendors' dollar figures move with prices, so this does too);
    * ``insurance_fund_change``: final over initial insurance fund, minus 1 (above 0: the
      fund grew, as BitMEX's did in March 2020; 0 when the venue starts with no fund).

    Shares are 0 when their denominator is (no liquidation, no open interest).
    """
    fills = model.engine.fills.columns()
    forced = liquidation_fills(fills["kind"])
    notional = fills["notional"][forced]
    liquidated = float(notional.sum())
    oi0 = open_interest(model.population.qty, model.market.initial_price)
    held = model.book.qty
    if model.engine.vault is not None:  # the liquidator vault holds positions like an account
        held = np.vstack([held, model.engine.vault.inventory])
    oi1 = open_interest(held, model.mark)
    fund0 = float(model.config.margin.insurance_fund)
    adl = float(fills["notional"][~forced].sum())
    return {
        "open_interest_start": oi0,
        "liquidated_share": _ratio(liquidated, oi0),
        "long_share_liquidated": _ratio(
            float(notional[fills["quantity"][forced] > 0].sum()), liquidated
        ),
        "adl_share": _ratio(adl, liquidated),
        "open_interest_drop": 1.0 - _ratio(oi1, oi0) if oi0 > 0 else 0.0,
        "insurance_fund_change": _ratio(model.engine.insurance_fund, fund0) - 1.0
        if fund0 > 0
        else 0.0,
    }


def _finite(x: float, default: float = 0.0) -> float:
    return float(x) if math.isfinite(float(x)) else default


def summarize(model) -> dict:
    """Headline metrics of a run (summary.json and one row of a sweep's runs.parquet),
    from the model's arrays (the figures :mod:`model.metrics` gives from the tables)."""
    series = model.datacollector.model_vars  # the steps table's columns, as lists
    history = model.market_history
    prices, funds = history.price, history.fundamental
    p0 = model.market.initial_price
    drawdown, amplification = {}, {}
    for j, s in enumerate(model.symbols):
        drawdown[s] = _max_drawdown(np.concatenate([[p0[j]], prices[:, j]]))
        # endogenous over exogenous move, in log terms; 1 where nothing moved
        amplification[s] = metrics.path_amplification(prices[:, j], funds[:, j], float(p0[j]))
    worst = max(drawdown, key=drawdown.get) if drawdown else None

    total_rounds = np.asarray(series["rounds"], dtype=np.int64)
    fills = model.engine.fills.columns()
    cascade = cascade_metrics(fills, model.recorder.edge_batches())
    most_systemic = cascade.pop("most_systemic")
    n = model.n_traders  # market makers' accounts (after the traders' rows) count apart
    accounts = int((model.engine.liquidation_count[:n] > 0).sum())
    # ADL fills are counted in adl_notional, collateral sales in collateral_sold_notional
    forced = liquidation_fills(fills["kind"])
    money = model.money()
    vault = model.engine.vault
    out = {
        "name": model.config.name,
        "seed": int(model.config.seed),
        "steps": int(model.steps),
        "traders": int(n),
        "liquidations": int(forced.sum()),
        "accounts_liquidated": accounts,
        "fraction_liquidated": accounts / n if n else 0.0,
        "liquidated_notional": float(fills["notional"][forced].sum()),
        "max_drawdown": {
            "worst": drawdown[worst] if worst else 0.0,
            "worst_asset": worst,
            **drawdown,
        },
        "amplification": {"worst": amplification[worst] if worst else 1.0, **amplification},
        "bad_debt": float(fills["bad_debt"].sum()),
        "insurance_fund_used": float(model.engine.fund_paid),
        "insurance_fund_final": float(model.engine.insurance_fund),
        "unfunded_bad_debt": float(model.engine.unfunded_bad_debt),
        "adl_notional": float(np.sum(series["adl_notional"], dtype=float)),
        "vault_taken_notional": 0.0 if vault is None else float(vault.taken_notional),
        "vault_value": 0.0 if vault is None else float(vault.value(model.mark)),
        "fees": float(fills["fee"].sum()),
        **event_metrics(model),
        "cascades": cascade["cascades"],
        "largest_cascade": cascade["largest_cascade"],
        "largest_cascade_step": cascade["largest_cascade_step"],
        "mean_cascade_size": cascade["mean_cascade_size"],
        "max_rounds": int(total_rounds.max()) if total_rounds.size else 0,
        "mean_branching": cascade["mean_branching"],
        "branching_by_generation": cascade["branching_by_generation"],
        "max_debtrank": most_systemic[0]["debtrank"] if most_systemic else 0.0,
        "most_systemic": most_systemic,
        "final_price": {s: float(p) for s, p in zip(model.symbols, model.mark, strict=True)},
        "money_error": _finite(
            abs(money["total"] - model.initial_money - model.deposits) / money_scale(model)
        ),
        "graph_truncated": bool(model.recorder.truncated),
        "contagion_graph": model.recorder.info(),
        "warnings": list(dict.fromkeys(model.warnings)),
        "warning_counts": dict(model.warning_counts),
    }
    if model.book.collateral is not None:
        out.update(_collateral_summary(model, fills))
    if model.desk is not None:
        out["makers_liquidated"] = int((model.engine.liquidation_count[n:] > 0).sum())
    return out


def _collateral_summary(model, fills) -> dict:
    """Headline numbers of the collateral assets (summary.json, only when there are some):
    what their auto-exchange sold, and each one's lowest price of the run."""
    sales = fills["kind"] == Kind.COLLATERAL
    coll = model.book.collateral
    prices = model.market_history.price
    p0 = model.market.initial_price
    low = {
        s: float(np.min(prices[:, j], initial=p0[j]))
        for s, j in zip(coll.symbols, coll.cols, strict=True)
    }
    return {
        "collateral_sales": int(sales.sum()),
        "collateral_sold_notional": float(fills["notional"][sales].sum()),
        "accounts_selling_collateral": int(np.unique(fills["trader_id"][sales]).size),
        "collateral_low": low,
    }


# --------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------


def resolved_config(model) -> dict:
    """The config as run: seed and absolute population path, enough to rerun it exactly."""
    return _resolved(model.config)


def _resolved(cfg) -> dict:
    data = to_dict(cfg)
    pop = cfg.traders.population
    if pop:
        data["traders"]["population"] = str(cfg.resolve_path(pop).resolve())
    return data


def config_text(cfg) -> str:
    """The canonical text of a resolved config: a run folder's ``config.toml``, byte for byte
    (what the provenance's ``config_sha256`` hashes)."""
    import tomli_w

    return tomli_w.dumps(_resolved(cfg))


def _write_contagion(recorder, out: Path, formats) -> None:
    """The contagion graph in each of ``formats`` (``[output] graph``) and its edge events.

    ``contagion_edges.parquet`` keeps one row per attribution (step, round, source,
    source_kind, target, weight): the per-step structure the merged graph sums over, and what
    the experiments layer draws ``cascade.png`` from. Graph files of the formats not asked
    for are removed, so a folder written again never keeps an older run's graph.
    """
    for fmt, name in GRAPH_FILES.items():
        if fmt in formats:
            write = recorder.write_node_link if fmt == "json" else recorder.write_graphml
            compress = name.endswith(".gz")  # the temporary file's name does not end so
            storage.atomic_write(out / name, lambda p, w=write, c=compress: w(p, compress=c))
        else:
            (out / name).unlink(missing_ok=True)
    write_row_groups(out / "contagion_edges.parquet", recorder.edges_tables(LOG_ROWS_PER_GROUP))


def run_provenance(model, text: str) -> dict:
    """summary.json's ``provenance`` block: the run started when the model was built, and
    ``elapsed_seconds`` runs until now (set-up, steps, and the folder's files written before
    summary.json)."""
    from model.provenance import provenance

    return provenance(
        seed=model.seed,
        config_text=text,
        started=model.started_at,
        elapsed=model.elapsed(),
    )


def write_run(model, out_dir) -> Path:
    """Write the run folder; returns its path."""
    out = check_run_folder(out_dir)
    marker = out / INCOMPLETE_MARKER
    storage.write_text(marker, "this run folder is being written or its writer was interrupted\n")
    storage.fsync_dir(out)
    # A previous writer killed mid-file leaves hidden temporary files: they are not results.
    storage.clear_temporaries(out)
    # The summary is the last file written: remove an old one first, so that a folder with a
    # summary.json and no marker always holds the files of the same run.
    (out / "summary.json").unlink(missing_ok=True)
    text = config_text(model.config)
    storage.write_text(out / "config.toml", text)
    for name, df in {"market": market_table(model), "steps": steps_table(model)}.items():
        storage.write_parquet(out / f"{name}.parquet", df)
    fills = model.engine.fills.tables(model.symbols, LOG_ROWS_PER_GROUP)
    write_row_groups(out / "liquidations.parquet", fills)
    _write_accounts(out / "accounts.parquet", model)
    if model.history is not None:  # opt-in sampled account snapshots
        storage.write_parquet(out / "account_history.parquet", model.history.table())
    _write_contagion(model.recorder, out, model.config.output.graph)
    summary = {**summarize(model), "provenance": run_provenance(model, text)}
    storage.write_json(out / "summary.json", summary, indent=2)
    marker.unlink()
    storage.fsync_dir(out)
    return out
