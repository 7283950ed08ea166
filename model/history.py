"""Agent-level history, opt-in and sampled.

Model-level series (one row per step) are always collected. A row per trader per step would
make a million-trader run write a billion rows, most of them repeating the last one, so
account-level history is off by default; when asked for, it follows a fixed sample of
accounts every ``every`` steps, at a cost proportional to the sample, not to the book.

The sample is evenly spaced over the book's rows (or given explicitly): it draws nothing from
the model's random stream, so switching the history on never changes a run's results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["AccountHistory", "sample_rows"]


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

    def __init__(self, book, every: int, rows, symbols, liquidation_count):
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
            data = {"step": np.zeros(0, np.int64), "trader_id": np.zeros(0, np.int64)}
            data.update({c: np.zeros(0) for c in names})
            return pd.DataFrame(data)
        values = np.concatenate(self._values)
        values = np.where(np.isfinite(values), values, np.nan)
        data = {
            "step": np.repeat(np.asarray(self._steps, dtype=np.int64), k),
            "trader_id": np.tile(self.book.ids[self.rows], len(self._steps)),
        }
        for j, c in enumerate(names):
            data[c] = values[:, j]
        df = pd.DataFrame(data)
        df["liquidations"] = df["liquidations"].astype(np.int64)
        return df
