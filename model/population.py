"""Initial accounts: generated from the config, or read from a population file.

Both paths return a :class:`Population`: plain arrays, one row per trader, one column per asset,
ready to become the account book. Generated populations draw from ``rng`` only.

Population file (CSV or parquet), one row per position: ``trader_id, collateral, asset,
quantity, entry_price``; optional ``strategy`` (default ``hold``), ``margin`` (isolated
position margin) and ``margin_mode`` (``cross`` or ``isolated``; default ``margin.mode``).
``collateral`` is the trader's whole collateral, isolated margins included, and repeats on each
of the trader's rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.config import Config, ConfigError

__all__ = ["Population", "generate_population", "read_population"]

REQUIRED_COLUMNS = ["trader_id", "collateral", "asset", "quantity", "entry_price"]
OPTIONAL_COLUMNS = ["strategy", "margin", "margin_mode"]

# Largest amount (collateral, margin, notional, in quote currency) and entry price a file may
# hold: far beyond any real account, small enough that sums over millions of rows stay finite.
MAX_AMOUNT = 1e15
MAX_PRICE = 1e12


@dataclass
class Population:
    """Initial state of every account.

    Attributes:
        ids: (n,) trader ids.
        wallet: (n,) cross wallet (collateral not committed to isolated positions).
        qty, entry: (n, A) signed quantities and entry prices.
        isolated: (n, A) isolated flag per position.
        margin: (n, A) isolated position margins.
        strategy: (n,) name of each trader's trading rule.
    """

    ids: np.ndarray
    wallet: np.ndarray
    qty: np.ndarray
    entry: np.ndarray
    isolated: np.ndarray
    margin: np.ndarray
    strategy: np.ndarray

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
    return Population(np.arange(n, dtype=np.int64), wallet, qty, entry, isolated, margin, strategy)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            # index_col=False: a row with an extra field is an error, not a shifted row
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, index_col=False)
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


def read_population(path: str | Path, cfg: Config) -> Population:
    """Read and check a population file against the config's assets."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    df = _read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in df.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {', '.join(map(str, unknown))}")
    symbols = cfg.symbols
    first_row = 2 if path.suffix.lower() != ".parquet" else 1

    def row_error(i, msg):
        # CSV: the line as a spreadsheet shows it (header is line 1); parquet: counting from 1
        return ConfigError(f"{path}: row {int(i) + first_row}: {msg}")

    for col in ("trader_id", "collateral", "quantity", "entry_price") + (
        ("margin",) if "margin" in df.columns else ()
    ):
        kind = df[col].dtype.kind
        if kind in "bMmc":  # booleans, dates, durations, complex numbers
            raise ConfigError(f"{path}: column {col} must hold real numbers, not {df[col].dtype}")
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & ~(df[col].isna() & (col == "margin"))
        if col != "margin":
            bad = num.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise row_error(i, f"{col} is not a number: {df[col].iloc[i]!r}")
        finite = np.isfinite(num.fillna(0.0).to_numpy(dtype=float))
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise row_error(i, f"{col} must be finite, got {df[col].iloc[i]!r}")
        df[col] = num
    tid = df["trader_id"].to_numpy(dtype=float)
    if (tid != np.round(tid)).any():
        i = int(np.flatnonzero(tid != np.round(tid))[0])
        raise row_error(i, f"trader_id must be a whole number, got {df['trader_id'].iloc[i]!r}")
    if (np.abs(tid) >= 2.0**53).any():  # beyond 2**53 floats no longer tell ids apart
        i = int(np.flatnonzero(np.abs(tid) >= 2.0**53)[0])
        raise row_error(i, f"trader_id must be below 2**53 in size, got {tid[i]:g}")
    amounts = {
        "collateral": df["collateral"].abs(),
        "quantity x entry_price": (df["quantity"] * df["entry_price"]).abs(),
    }
    if "margin" in df.columns:
        amounts["margin"] = df["margin"].abs().fillna(0.0)
    for what, amount in amounts.items():
        big = (amount > MAX_AMOUNT).to_numpy()
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise row_error(i, f"{what} must be at most {MAX_AMOUNT:g}, got {amount.iloc[i]:g}")
    big = (df["entry_price"] > MAX_PRICE).to_numpy()
    if big.any():
        i = int(np.flatnonzero(big)[0])
        raise row_error(
            i, f"entry_price must be at most {MAX_PRICE:g}, got {df['entry_price'].iloc[i]:g}"
        )
    df["trader_id"] = tid.astype(np.int64)
    df["asset"] = df["asset"].astype(str)
    bad_asset = ~df["asset"].isin(symbols)
    if bad_asset.any():
        i = int(np.flatnonzero(bad_asset.to_numpy())[0])
        raise row_error(
            i, f"unknown asset {df['asset'].iloc[i]!r} (declared: {', '.join(symbols)})"
        )
    if (df["collateral"] < 0).any():
        i = int(np.flatnonzero((df["collateral"] < 0).to_numpy())[0])
        raise row_error(i, f"collateral must be >= 0, got {df['collateral'].iloc[i]}")
    bad_entry = (df["entry_price"] <= 0) & (df["quantity"] != 0)
    if bad_entry.any():
        i = int(np.flatnonzero(bad_entry.to_numpy())[0])
        raise row_error(
            i, f"entry_price must be > 0 for an open position, got {df['entry_price'].iloc[i]}"
        )
    dup = df.duplicated(["trader_id", "asset"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise row_error(
            i,
            f"duplicate position: trader {df['trader_id'].iloc[i]} already has a row for {df['asset'].iloc[i]}",
        )
    by_trader = df.groupby("trader_id")["collateral"]
    spread = by_trader.max() - by_trader.min()
    differs = spread > 1e-9 * by_trader.max().abs().clip(lower=1.0)
    if differs.any():
        bad_id = differs[differs].index[0]
        values = df.loc[df["trader_id"] == bad_id, "collateral"].unique()[:2]
        raise ConfigError(
            f"{path}: trader {bad_id}: collateral differs between its rows "
            f"({values[0]:g} and {values[1]:g})"
        )

    mode = (
        df["margin_mode"].fillna(cfg.margin.mode).astype(str)
        if "margin_mode" in df.columns
        else pd.Series(cfg.margin.mode, index=df.index)
    )
    bad_mode = ~mode.isin(["cross", "isolated"])
    if bad_mode.any():
        i = int(np.flatnonzero(bad_mode.to_numpy())[0])
        raise row_error(i, f"margin_mode must be 'cross' or 'isolated', got {mode.iloc[i]!r}")
    if "strategy" in df.columns:
        from agents.strategies import STRATEGIES

        strat = df["strategy"].fillna("hold").astype(str)
        bad = ~strat.isin(list(STRATEGIES))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise row_error(
                i, f"unknown strategy {strat.iloc[i]!r} (known: {', '.join(STRATEGIES)})"
            )
        per_trader = strat.groupby(df["trader_id"]).nunique()
        if (per_trader > 1).any():
            raise ConfigError(
                f"{path}: trader {per_trader[per_trader > 1].index[0]}: strategy differs between its rows"
            )
    else:
        strat = pd.Series("hold", index=df.index)

    ids, row = np.unique(df["trader_id"].to_numpy(), return_inverse=True)
    col = (
        np.array([symbols.index(s) for s in df["asset"]], dtype=np.intp)
        if len(df)
        else np.zeros(0, np.intp)
    )
    n, a = len(ids), len(symbols)
    qty = np.zeros((n, a))
    entry = np.zeros((n, a))
    isolated = np.zeros((n, a), dtype=bool)
    margin = np.zeros((n, a))
    q = df["quantity"].to_numpy(dtype=float)
    qty[row, col] = q
    entry[row, col] = np.where(q != 0, df["entry_price"].to_numpy(dtype=float), 0.0)
    isolated[row, col] = (mode.to_numpy() == "isolated") & (q != 0)
    collateral = np.zeros(n)
    collateral[row] = df["collateral"].to_numpy(dtype=float)

    given = (
        df["margin"].to_numpy(dtype=float) if "margin" in df.columns else np.full(len(df), np.nan)
    )
    if (given[~np.isnan(given)] < 0).any():
        i = int(np.flatnonzero(given < 0)[0])
        raise row_error(i, f"margin must be >= 0, got {given[i]}")
    cross_margin = ~np.isnan(given) & (given != 0) & (mode.to_numpy() != "isolated")
    if cross_margin.any():
        i = int(np.flatnonzero(cross_margin)[0])
        raise row_error(
            i,
            "margin is for isolated positions; this row's margin_mode is cross (set it to isolated)",
        )
    # Default isolated margin: the collateral split in proportion to initial notional.
    notional = np.abs(qty) * entry
    total = notional.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, notional / np.where(total > 0, total, 1.0), 0.0)
    default_margin = share * collateral[:, None]
    explicit = np.full((n, a), np.nan)
    explicit[row, col] = given
    margin = np.where(isolated, np.where(np.isnan(explicit), default_margin, explicit), 0.0)
    over = margin.sum(axis=1) > collateral * (1 + 1e-12) + 1e-9
    if over.any():
        raise ConfigError(
            f"{path}: trader {ids[np.flatnonzero(over)[0]]}: isolated margins exceed its collateral"
        )
    wallet = collateral - margin.sum(axis=1)

    strategy = np.empty(n, dtype=object)
    strategy[row] = strat.to_numpy()
    return Population(ids.astype(np.int64), wallet, qty, entry, isolated, margin, strategy)
