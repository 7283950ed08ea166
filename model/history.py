"""Histories of a run: the market's per-step state, and account-level snapshots.

:class:`MarketHistory` keeps each step's market state (prices, impact, flows, the market
agent's inventory and cash) per asset, with named columns; it is ``market.parquet``.

Account-level history is opt-in and sampled. Model-level series (one row per step) are always collected. A row per trader per step would
make a million-trader run write a billion rows, most of them repeating the last one, so
account-level history is off by default; when asked for, it follows a fixed sample of
accounts every ``every`` steps, at a cost proportional to the sample, not to the book.

The sample is evenly spaced over the book's rows (or given explicitly): it draws nothing from
the model's random stream, so switching the history on never changes a run's results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from model.ids import id_column

if TYPE_CHECKING:
    from agents.market import Market
    from model.accounts import AccountBook

__all__ = ["AccountHistory", "MarketHistory", "sample_rows"]


class MarketHistory:
    """The market's state at the end of every step, per asset.

    Each column is a read-only (steps, A) array: row ``t - 1`` is step ``t``.

    Args:
        symbols: asset names (the categories of the table's ``asset`` column).
    """

    # Column name -> the market agent's attribute it records.
    COLUMNS = {
        "price": "price",
        "fundamental": "fundamental",
        "impact": "impact",
        "flow": "flow",
        "forced_flow": "forced_flow",
        "inventory": "inventory",
        "cash": "cash",
        "depth": "depth_now",
    }
    # Columns named differently in market.parquet.
    TABLE_NAMES = {"inventory": "market_inventory", "cash": "market_cash"}

    def __init__(self, symbols):
        self.symbols = list(symbols)
        self._data = np.zeros((0, len(self.COLUMNS), len(self.symbols)))
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, market: Market) -> None:
        """Record the market's state now (at the end of a step)."""
        if self._size == self._data.shape[0]:  # grow by doubling: appends cost O(1) on average
            grown = np.zeros((max(16, 2 * self._size), *self._data.shape[1:]))
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        row = self._data[self._size]
        for i, attr in enumerate(self.COLUMNS.values()):
            row[i] = getattr(market, attr)
        self._size += 1

    def _column(self, i: int) -> np.ndarray:
        view = self._data[: self._size, i, :]
        view.flags.writeable = False
        return view

    @property
    def price(self) -> np.ndarray:
        """(steps, A) market price at the end of each step."""
        return self._column(0)

    @property
    def fundamental(self) -> np.ndarray:
        """(steps, A) fundamental price."""
        return self._column(1)

    @property
    def impact(self) -> np.ndarray:
        """(steps, A) impact state (log price offset from the fundamental)."""
        return self._column(2)

    @property
    def flow(self) -> np.ndarray:
        """(steps, A) the step's net flow (quantity, sells positive)."""
        return self._column(3)

    @property
    def forced_flow(self) -> np.ndarray:
        """(steps, A) the part of the flow that came from liquidations."""
        return self._column(4)

    @property
    def inventory(self) -> np.ndarray:
        """(steps, A) the market agent's position."""
        return self._column(5)

    @property
    def cash(self) -> np.ndarray:
        """(steps, A) the market agent's cash, per asset it traded."""
        return self._column(6)

    @property
    def depth(self) -> np.ndarray:
        """(steps, A) the book's 1% depth at the end of each step (quote notional at the
        initial price; :attr:`agents.market.Market.depth_now`)."""
        return self._column(7)

    def table(self) -> pd.DataFrame:
        """``market.parquet``: one row per (step, asset), steps counted from 1."""
        steps, a = self._size, len(self.symbols)
        data = {
            "step": np.repeat(np.arange(1, steps + 1, dtype=np.int64), a),
            "asset": pd.Categorical.from_codes(
                np.tile(np.arange(a), steps).astype(np.int64), self.symbols
            ),
        }
        for i, name in enumerate(self.COLUMNS):
            data[self.TABLE_NAMES.get(name, name)] = self._column(i).ravel()
        return pd.DataFrame(data)


def sample_rows(n: int, size: int) -> np.ndarray:
    """``min(size, n)`` book rows spread evenly from the first to the last (sorted, unique)."""
    if n <= 0 or size <= 0:
        return np.zeros(0, dtype=np.int64)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, size).round().astype(np.int64))


class AccountHistory:
    """Snapshots of a sample of accounts every ``every`` steps.

    Args:
        book: the account book.
        every: steps between snapshots (a snapshot is taken when ``step % every == 0``).
        rows: book rows to follow.
        symbols: asset names, for the quantity columns.
    """

    FIELDS = ("wallet", "equity", "leverage", "margin_ratio", "liquidations")

    def __init__(self, book: AccountBook, every: int, rows, symbols, liquidation_count):
        self.book = book
        self.every = int(every)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.symbols = list(symbols)
        self._count = liquidation_count
        self._steps: list[int] = []
        self._values: list[np.ndarray] = []  # (k, fields + A) per snapshot

    def record(self, step: int, mark) -> None:
        """Take a snapshot if ``step`` is due."""
        if self.every <= 0 or step % self.every or self.rows.size == 0:
            return
        book, r = self.book, self.rows
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = [
                book.wallet[r],
                book.equity(mark, r),
                book.leverage(mark, r),
                book.margin_ratio(mark, r),
                self._count[r].astype(float),
            ]
        self._steps.append(int(step))
        self._values.append(np.column_stack([*cols, book.qty[r]]))

    def table(self) -> pd.DataFrame:
        """One row per (snapshot step, sampled trader); infinite ratios as NaN."""
        names = list(self.FIELDS) + [f"quantity_{s}" for s in self.symbols]
        k = self.rows.size
        if not self._values:
            data = {"step": np.zeros(0, np.int64), "trader_id": id_column(self.book.ids[:0])}
            data.update({c: np.zeros(0) for c in names})
            return pd.DataFrame(data)
        values = np.concatenate(self._values)
        values = np.where(np.isfinite(values), values, np.nan)
        data = {
            "step": np.repeat(np.asarray(self._steps, dtype=np.int64), k),
            "trader_id": id_column(np.tile(self.book.ids[self.rows], len(self._steps))),
        }
        for j, c in enumerate(names):
            data[c] = values[:, j]
        df = pd.DataFrame(data)
        df["liquidations"] = df["liquidations"].astype(np.int64)
        return df
