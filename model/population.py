"""Initial accounts: generated from the config, or read from a population file.

Both paths return a :class:`Population`: plain arrays, one row per trader, one column per asset,
ready to become the account book. Generated populations draw from ``rng`` only.

Population file (CSV or parquet), one row per position: ``trader_id, collateral, asset,
quantity, entry_price``; optional ``strategy`` (default ``hold``), ``margin`` (isolated
position margin) and ``margin_mode`` (``cross`` or ``isolated``; default ``margin.mode``).
``collateral`` is the trader's whole collateral, isolated margins included, and repeats on each
of the trader's rows. The columns, their types, bounds and defaults are declared once, in
:class:`PopulationRow` (``describe(PopulationRow)`` lists them), and checked column by column.
``trader_id`` is any string or integer, kept exactly as written (:mod:`model.ids`).

Values that are legal but almost surely a slip (a generated leverage above an asset's maximum, a
file account that starts above it) do not stop a run: they are kept in
:attr:`Population.warnings`, which the model reports (``ContagionModel.warn``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from model.config import BOUNDS, Config, bound_violation, did_you_mean, spec
from model.errors import ConfigError
from model.ids import bad_ids, id_problem, ids_from_text, show_id

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "Population",
    "PopulationRow",
    "generate_population",
    "read_population",
]

# Largest amount (collateral, margin, notional, in quote currency) and entry price a file may
# hold: far beyond any real account, small enough that sums over millions of rows stay finite.
MAX_AMOUNT = 1e15
MAX_PRICE = 1e12


@dataclass
class PopulationRow:
    """One row of a population file: one position of one trader (the file's schema).

    Columns without a default are required; an empty cell of an optional column takes its
    default. Declared with :func:`model.config.spec` like the run config, and checked column by
    column (vectorised) by :func:`read_population`, whose messages use the config's phrasing of
    bounds and its did-you-mean.
    """

    trader_id: str | int = spec(
        doc="the trader's id, any string or integer, kept exactly as written (007 stays 007); "
        "a trader's rows share it, and two accounts cannot"
    )
    collateral: float = spec(
        doc="the trader's whole collateral, isolated margins included, repeated on each of its "
        "rows",
        ge=0,
        le=MAX_AMOUNT,
    )
    asset: str = spec(doc="symbol of one of the config's assets")
    quantity: float = spec(doc="signed position: positive long, negative short")
    entry_price: float = spec(
        doc="price the position was opened at (> 0 for an open position)", le=MAX_PRICE
    )
    strategy: str | None = spec(None, doc="the trader's trading rule (default hold)")
    margin: float | None = spec(
        None,
        doc="isolated position margin (default: the collateral split in proportion to notional)",
        ge=0,
        le=MAX_AMOUNT,
    )
    margin_mode: Literal["cross", "isolated"] | None = spec(
        None, doc="the position's margin mode (default: margin.mode)"
    )


REQUIRED_COLUMNS = [
    f.name for f in dataclasses.fields(PopulationRow) if f.default is dataclasses.MISSING
]
OPTIONAL_COLUMNS = [
    f.name for f in dataclasses.fields(PopulationRow) if f.default is not dataclasses.MISSING
]
_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@dataclass
class Population:
    """Initial state of every account.

    Attributes:
        ids: (n,) trader ids: ``int64``, or an object array of ``str`` (:mod:`model.ids`).
        wallet: (n,) cross wallet (collateral not committed to isolated positions).
        qty, entry: (n, A) signed quantities and entry prices.
        isolated: (n, A) isolated flag per position.
        margin: (n, A) isolated position margins.
        strategy: (n,) name of each trader's trading rule.
        warnings: ``(kind, message)`` of values that are legal but almost surely a slip; the
            model reports them when it is built.
    """

    ids: np.ndarray
    wallet: np.ndarray
    qty: np.ndarray
    entry: np.ndarray
    isolated: np.ndarray
    margin: np.ndarray
    strategy: np.ndarray
    warnings: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def collateral(self) -> np.ndarray:
        return self.wallet + self.margin.sum(axis=1)


def generate_population(cfg: Config, rng: np.random.Generator) -> Population:
    """Draw ``traders.count`` accounts.

    * collateral: Pareto with tail index ``collateral_tail`` and median ``collateral``, capped
      at ``MAX_AMOUNT`` (1e15);
    * initial leverage: ``1 + (L - 1) X`` with ``X`` lognormal of mean 1 and log-sd
      ``leverage_dispersion``, so the mean is ``traders.leverage`` and no account is below 1x;
      capped at the smallest max leverage of the assets it holds;
    * 1 to ``assets_per_trader`` assets per account, chosen uniformly, notional split equally,
      each long with probability ``long_fraction``; entry at the initial price;
    * isolated accounts put each position's share of the collateral into its margin.
    """
    t = cfg.traders
    n, a = t.count, len(cfg.assets)
    prices = np.array([x.price for x in cfg.assets])
    max_lev = np.array([x.max_leverage for x in cfg.assets])

    collateral = (
        t.collateral * (rng.pareto(t.collateral_tail, n) + 1.0) / 2.0 ** (1.0 / t.collateral_tail)
    )
    # a tail index near its lower bound draws collateral beyond any float sum: cap the tail
    collateral = np.minimum(collateral, MAX_AMOUNT)
    sigma = t.leverage_dispersion
    leverage = 1.0 + (t.leverage - 1.0) * np.exp(sigma * rng.standard_normal(n) - 0.5 * sigma**2)

    k = rng.integers(1, t.assets_per_trader + 1, n)
    order = np.argsort(rng.random((n, a)), axis=1)  # a random permutation of assets per trader
    held = np.zeros((n, a), dtype=bool)
    np.put_along_axis(held, order, np.arange(a)[None, :] < k[:, None], axis=1)
    cap = np.where(held, max_lev[None, :], np.inf).min(axis=1)
    capped = int(np.count_nonzero(leverage > cap))
    leverage = np.minimum(leverage, cap)

    side = np.where(rng.random((n, a)) < t.long_fraction, 1.0, -1.0)
    notional = (leverage * collateral / k)[:, None] * held
    qty = side * notional / prices[None, :]
    entry = np.where(held, prices[None, :], 0.0)

    isolated = np.full((n, a), cfg.margin.mode == "isolated") & held
    margin = np.where(isolated, (collateral / k)[:, None], 0.0)
    wallet = collateral - margin.sum(axis=1)

    names = list(t.strategies)
    shares = np.array([t.strategies[s] for s in names], dtype=float)
    codes = rng.choice(len(names), size=n, p=shares / shares.sum()) if n else np.zeros(0, int)
    strategy = np.array(names, dtype=object)[codes]
    return Population(
        np.arange(n, dtype=np.int64),
        wallet,
        qty,
        entry,
        isolated,
        margin,
        strategy,
        warnings=_leverage_cap_warnings(cfg, capped),
    )


def _leverage_cap_warnings(cfg: Config, capped: int) -> list[tuple[str, str]]:
    """A warning when ``traders.leverage`` (the mean) is above an asset's maximum leverage:
    almost surely a slip, since every account holding that asset is then capped."""
    t = cfg.traders
    over = [a for a in cfg.assets if t.leverage > a.max_leverage]
    if not over:
        return []
    limits = ", ".join(f"assets.{a.symbol}.max_leverage = {a.max_leverage:g}" for a in over)
    return [
        (
            "leverage_cap",
            f"traders.leverage = {t.leverage:g} is above {limits}: {capped:,} of {t.count:,} "
            "generated accounts were capped at the maximum leverage of the assets they hold",
        )
    ]


# pandas' default missing-value texts (read_csv's ``na_values``): they mean an empty cell in
# every column but ``trader_id``, whose text is an id as written ("NA" is an id like any other).
_NA_TEXTS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            # index_col=False: a row with an extra field is an error, not a shifted row
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(
                    path,
                    index_col=False,
                    dtype={"trader_id": str},
                    keep_default_na=False,
                    na_values={c: _NA_TEXTS for c in _COLUMNS if c != "trader_id"},
                )
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (
        OSError,
        ValueError,
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        UnicodeDecodeError,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: cannot read population file: {first}") from None
    raise ConfigError(f"{path}: population file must be .csv or .parquet")


# --------------------------------------------------------------------------------------------
# Reading a population file
# --------------------------------------------------------------------------------------------


def read_population(path: str | Path, cfg: Config) -> Population:
    """Read a population file and check every row against :class:`PopulationRow` and the
    config's assets; every problem is a one-line :class:`ConfigError` naming the file and the
    row (or trader) and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    df = _read_table(path)
    rows = _Rows(path, 1 if path.suffix.lower() == ".parquet" else 2)
    _check_columns(df, path)
    df["trader_id"] = _trader_ids(df["trader_id"], rows, path.suffix.lower() != ".parquet")
    for name, (tp, checks) in _schema().items():
        if name in df.columns and tp in (int, float):
            df[name] = _numbers(df[name], name, tp, checks, rows)
    asset = _names(df["asset"], cfg.symbols, "asset", "declared", rows)
    mode = _margin_modes(df, cfg.margin.mode, rows)
    strategy = _strategies(df, rows)
    _check_positions(df, asset, mode, rows)
    pop = _book_arrays(df, asset, mode, strategy, len(cfg.symbols), path)
    pop.warnings += _above_max_leverage(pop, cfg, path)
    return pop


@dataclass
class _Rows:
    """Where rows are in the file, for messages: CSV lines as a spreadsheet shows them (the
    header is line 1), parquet rows counting from 1."""

    path: Path
    first: int

    def error(self, i, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: row {int(i) + self.first}: {message}")

    def first_bad(self, bad, message) -> None:
        """Raise for the first row where ``bad`` holds; ``message(i)`` says what is wrong."""
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.error(i, message(i))


def _schema() -> dict[str, tuple[Any, dict]]:
    """Column -> (type without None, spec checks), in the order of :class:`PopulationRow`."""
    hints = typing.get_type_hints(PopulationRow)
    out = {}
    for f in dataclasses.fields(PopulationRow):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        tp = (
            args[0] if typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType) else None
        )
        out[f.name] = (tp or hints[f.name], f.metadata.get("checks", {}))
    return out


def _check_columns(df: pd.DataFrame, path: Path) -> None:
    """The header: no stray spaces, every required column, no unknown one; then some rows."""
    names = [str(c) for c in df.columns]
    if any(c != c.strip() for c in names):
        found = ", ".join(repr(c) for c in names)
        raise ConfigError(f"{path}: stray spaces in the column names (found {found})")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    unknown = [str(c) for c in df.columns if c not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise ConfigError(f"{path}: unknown column(s) {', '.join(unknown)}{hint}")
    if len(df) == 0:
        raise ConfigError(f"{path}: no rows (a header only): a population needs an account")


def _trader_ids(col: pd.Series, rows: _Rows, text_file: bool) -> np.ndarray:
    """The ``trader_id`` column as ids (:mod:`model.ids`): a CSV column is text, integers
    when every value is a canonical integer; a parquet column must hold integers or strings.
    Each string id is checked: not empty, no control character, no graph node's name."""
    if col.dtype.kind in "iu":
        if col.dtype.kind == "u" and len(col) and col.max() > np.iinfo(np.int64).max:
            raise ConfigError(f"{rows.path}: column trader_id holds integers beyond 64 bits")
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
        raise ConfigError(
            f"{rows.path}: column trader_id must hold integers or strings, not {col.dtype}"
        )
    text = col.astype(object).where(col.notna(), "")  # a missing id is an empty one
    rows.first_bad(bad_ids(text), lambda i: id_problem(text.iloc[i]))
    if text_file:  # integers when every id is one, written as Python writes it
        return ids_from_text(text)
    return text.to_numpy(dtype=object)


def _numbers(col: pd.Series, name: str, tp, checks: dict, rows: _Rows) -> pd.Series:
    """A numeric column as floats (whole numbers for ``int``), checked: numbers, finite, within
    the bounds of its spec. Optional columns may leave cells empty (NaN)."""
    if col.dtype.kind in "bMmc":  # booleans, dates, durations, complex numbers
        raise ConfigError(f"{rows.path}: column {name} must hold real numbers, not {col.dtype}")
    num = pd.to_numeric(col, errors="coerce")
    empty_ok = name in OPTIONAL_COLUMNS
    rows.first_bad(
        num.isna() & ~(col.isna() & empty_ok),
        lambda i: f"{name} is not a number: {_cell(col.iloc[i])}",
    )
    v = num.to_numpy(dtype=float)
    present = ~np.isnan(v)
    rows.first_bad(present & ~np.isfinite(v), lambda i: f"{name} must be finite, got {v[i]:g}")
    if tp is int:
        rows.first_bad(
            v != np.round(v), lambda i: f"{name} must be a whole number, got {_cell(col.iloc[i])}"
        )
        # beyond 2**53 floats no longer hold every whole number exactly
        rows.first_bad(
            np.abs(v) >= 2.0**53, lambda i: f"{name} must be below 2**53 in size, got {v[i]:g}"
        )
    for bound, (test, _) in BOUNDS.items():
        if bound in checks:
            with np.errstate(invalid="ignore"):
                out = present & ~test(v, checks[bound])
            rows.first_bad(out, lambda i: f"{name} {bound_violation(float(v[i]), checks)}")
    return num.astype(np.int64) if tp is int else num


def _cell(value) -> str:
    """A cell's value for a message (numpy scalars as Python shows them)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _names(col: pd.Series, known, what: str, listed: str, rows: _Rows) -> np.ndarray:
    """Row -> index into ``known`` of a column of names, checked (with a did-you-mean)."""
    names = col.astype(str)
    codes = pd.Index(list(known)).get_indexer(names)  # -1: not among them
    rows.first_bad(
        codes < 0,
        lambda i: (
            f"unknown {what} {names.iloc[i]!r} ({listed}: {', '.join(known)})"
            + did_you_mean(names.iloc[i], known)
        ),
    )
    return codes.astype(np.intp)


def _margin_modes(df: pd.DataFrame, default: str, rows: _Rows) -> np.ndarray:
    """Row -> margin mode (an empty cell: the config's ``margin.mode``), checked."""
    if "margin_mode" not in df.columns:
        return np.full(len(df), default, dtype=object)
    mode = df["margin_mode"].fillna(default).astype(str)
    allowed = typing.get_args(_schema()["margin_mode"][0])
    rows.first_bad(
        ~mode.isin(allowed),
        lambda i: (
            f"margin_mode must be {' or '.join(map(repr, allowed))}, got {mode.iloc[i]!r}"
            + did_you_mean(mode.iloc[i], allowed)
        ),
    )
    return mode.to_numpy(dtype=object)


def _strategies(df: pd.DataFrame, rows: _Rows) -> np.ndarray:
    """Row -> trading rule (an empty cell or no column: ``hold``), checked; one per trader."""
    if "strategy" not in df.columns:
        return np.full(len(df), "hold", dtype=object)
    from agents.strategies import STRATEGIES  # late import: agents depend on model

    names = df["strategy"].fillna("hold").astype(str)
    _names(names, list(STRATEGIES), "strategy", "known", rows)
    per_trader = names.groupby(df["trader_id"]).nunique()
    if (per_trader > 1).any():
        raise ConfigError(
            f"{rows.path}: trader {show_id(per_trader[per_trader > 1].index[0])}: strategy "
            "differs between its rows"
        )
    return names.to_numpy(dtype=object)


def _check_positions(df: pd.DataFrame, asset, mode, rows: _Rows) -> None:
    """Constraints across a row's cells or a trader's rows."""
    notional = (df["quantity"] * df["entry_price"]).abs().to_numpy()
    rows.first_bad(
        notional > MAX_AMOUNT,
        lambda i: "quantity x entry_price " + bound_violation(notional[i], {"le": MAX_AMOUNT}),
    )
    entry = df["entry_price"].to_numpy()
    rows.first_bad(
        (entry <= 0) & (df["quantity"].to_numpy() != 0),
        lambda i: f"entry_price must be > 0 for an open position, got {entry[i]:g}",
    )
    ids = df["trader_id"].to_numpy()
    dup = pd.DataFrame({"trader": ids, "asset": asset}).duplicated().to_numpy()
    rows.first_bad(
        dup, lambda i: f"duplicate position: trader {show_id(ids[i])} already has a row for "
        f"{df['asset'].iloc[i]}"
    )  # fmt: skip
    by_trader = df.groupby("trader_id")["collateral"]
    spread = by_trader.max() - by_trader.min()
    differs = spread > 1e-9 * by_trader.max().abs().clip(lower=1.0)
    if differs.any():
        bad_id = differs[differs].index[0]
        values = df.loc[df["trader_id"] == bad_id, "collateral"].unique()[:2]
        raise ConfigError(
            f"{rows.path}: trader {show_id(bad_id)}: collateral differs between its rows "
            f"({values[0]:g} and {values[1]:g}); the rows of one account share its id and "
            "collateral, and two accounts cannot share an id"
        )
    if "margin" in df.columns:
        given = df["margin"].to_numpy(dtype=float)
        rows.first_bad(
            ~np.isnan(given) & (given != 0) & (mode != "isolated"),
            lambda i: (
                "margin is for isolated positions; this row's margin_mode is cross "
                "(set it to isolated)"
            ),
        )


def _book_arrays(df, asset, mode, strategy, n_assets: int, path: Path) -> Population:
    """The checked rows as the account book's arrays: one row per trader, one column per
    asset; isolated positions without a margin get the collateral split by notional."""
    ids, row = np.unique(df["trader_id"].to_numpy(), return_inverse=True)
    row, col = row.ravel(), asset
    n = len(ids)
    q = df["quantity"].to_numpy(dtype=float)
    qty, entry = np.zeros((n, n_assets)), np.zeros((n, n_assets))
    isolated = np.zeros((n, n_assets), dtype=bool)
    qty[row, col] = q
    entry[row, col] = np.where(q != 0, df["entry_price"].to_numpy(dtype=float), 0.0)
    isolated[row, col] = (mode == "isolated") & (q != 0)
    collateral = np.zeros(n)
    collateral[row] = df["collateral"].to_numpy(dtype=float)
    notional = np.abs(qty) * entry
    total = notional.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, notional / np.where(total > 0, total, 1.0), 0.0)
    explicit = np.full((n, n_assets), np.nan)
    if "margin" in df.columns:
        explicit[row, col] = df["margin"].to_numpy(dtype=float)
    margin = np.where(
        isolated, np.where(np.isnan(explicit), share * collateral[:, None], explicit), 0.0
    )
    over = margin.sum(axis=1) > collateral * (1 + 1e-12) + 1e-9
    if over.any():
        raise ConfigError(
            f"{path}: trader {show_id(ids[np.flatnonzero(over)[0]])}: isolated margins exceed "
            "its collateral"
        )
    strategies = np.empty(n, dtype=object)
    strategies[row] = strategy
    wallet = collateral - margin.sum(axis=1)
    return Population(ids, wallet, qty, entry, isolated, margin, strategies)


def _above_max_leverage(pop: Population, cfg: Config, path: Path) -> list[tuple[str, str]]:
    """A warning for file accounts that start above the maximum leverage of an asset they
    hold (gross notional over equity, at the config's initial prices), as generated accounts
    never do: legal (the initial-margin cap applies to positions opened during the run), but
    more often a slip in the file or in ``assets.<SYM>.max_leverage``."""
    prices = np.array([a.price for a in cfg.assets])
    max_lev = np.array([a.max_leverage for a in cfg.assets])
    held = pop.qty != 0
    gross = (np.abs(pop.qty) * prices).sum(axis=1)
    equity = pop.collateral + (pop.qty * (prices - pop.entry)).sum(axis=1)
    cap = np.where(held, max_lev, np.inf).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        leverage = np.where(equity > 0, gross / np.where(equity > 0, equity, 1.0), np.inf)
    above = held.any(axis=1) & (leverage > cap * (1 + 1e-9))
    if not above.any():
        return []
    i = int(np.flatnonzero(above)[0])
    j = int(np.flatnonzero(held[i] & (max_lev == cap[i]))[0])
    shown = "no equity" if not np.isfinite(leverage[i]) else f"{leverage[i]:.3g}x"
    return [
        (
            "population_leverage",
            f"{path}: {int(above.sum()):,} of {len(above):,} accounts start above the maximum "
            f"leverage of an asset they hold (e.g. trader {show_id(pop.ids[i])}: {shown}, "
            f"assets.{cfg.assets[j].symbol}.max_leverage = {cap[i]:g})",
        )
    ]
