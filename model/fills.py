"""The fill log: every forced fill of a run, one home for the liquidation engine and ADL.

A fill is one position closed (wholly or in part) by the venue: by a liquidation round
(``full`` or ``partial``), by the liquidator vault taking it over (``vault``) or by
auto-deleveraging (``adl``); or collateral sold to cover a negative wallet after a liquidation
(``collateral``: quantity is the units sold, positive, with no fee and no bad debt). Only
``full``, ``partial`` and ``vault`` fills are liquidations (:data:`NOT_LIQUIDATIONS`). Each is recorded with when it happened (step, round), whose
position it was, the closed quantity (signed as the position was), the fill price, the closed
notional, the fee charged (with ``margin.takeover``, the equity the fund took over) and the bad
debt it left. The log keeps the fills as column arrays in the order they were made;
``liquidations.parquet`` is :meth:`FillLog.table`.
"""

from __future__ import annotations

import enum

import numpy as np
import pandas as pd

from model.column_log import ColumnLog
from model.ids import id_column

__all__ = ["COLUMNS", "NOT_LIQUIDATIONS", "FillLog", "Kind", "liquidation_fills"]


class Kind(enum.IntEnum):
    """What closed a position; the integer is the code stored in the log."""

    FULL = 0  # a liquidation that closed the whole unit
    PARTIAL = 1  # a liquidation that closed the smallest fraction restoring the margin
    ADL = 2  # auto-deleveraging: an opposite position closed at a bankruptcy price
    VAULT = 3  # a unit taken over by the liquidator vault at the mark (model/vault.py)
    COLLATERAL = 4  # collateral sold to cover a negative wallet (model/collateral.py)

    @classmethod
    def labels(cls) -> list[str]:
        """Names of the kinds in code order: the categories of the ``kind`` column."""
        return [k.name.lower() for k in cls]


# Labels of the kinds of fill that are not liquidations: ADL closes a counterparty, not the
# liquidated account, and a collateral sale closes no position. Liquidation counts and
# notionals leave them out.
NOT_LIQUIDATIONS = ("adl", "collateral")


def liquidation_fills(kind) -> np.ndarray:
    """Which fills are liquidations, from the ``kind`` column (integer codes of :class:`Kind`,
    or labels as liquidations.parquet holds them)."""
    kind = np.asarray(kind)
    if kind.dtype.kind in "iu":
        return (kind != Kind.ADL) & (kind != Kind.COLLATERAL)
    return ~np.isin(kind.astype(str), NOT_LIQUIDATIONS)


# Column -> dtype, in the order of liquidations.parquet (trader_id: int64 for integer ids, a
# string column for string ids, see model.ids).
COLUMNS: dict[str, type] = {
    "step": np.int64,
    "round": np.int64,
    "trader_id": np.int64,
    "asset": np.int64,
    "quantity": np.float64,
    "price": np.float64,
    "notional": np.float64,
    "fee": np.float64,
    "bad_debt": np.float64,
    "kind": np.int8,
}


class FillLog:
    """Every forced fill so far, as columns.

    Args:
        ids: (n,) trader ids of the book's rows (``int64``, or ``str`` in an object array):
            fills are appended and kept by book row, and read with the row's id.
    """

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids)
        # the log holds book rows where the table has ids (mapped when read): a row is what
        # the engine and a compiled round have at hand, and an int64 whatever the ids are
        self._log = ColumnLog({**COLUMNS, "trader_id": np.int64})
        # ids 0 to n - 1 (a generated population) are the rows themselves: read as they are
        self._ids_are_rows = self.ids.dtype == np.int64 and bool(
            (self.ids == np.arange(self.ids.size)).all()
        )

    def __len__(self) -> int:
        return len(self._log)

    def append(
        self, step, rnd, rows, asset, quantity, price, notional, fee, bad_debt, kind
    ) -> None:
        """Record a batch of fills of one round.

        Args:
            step, rnd: when (the round of the step).
            rows: (k,) book rows of the positions closed.
            asset: (k,) asset index of each fill, or one index for all.
            quantity: (k,) closed quantity, signed as the position was.
            price, notional, fee, bad_debt: (k,) or scalars broadcast to every fill.
            kind: a :class:`Kind`, or (k,) kinds.
        """
        rows = np.asarray(rows)
        k = rows.size
        if k == 0:
            return
        values = {
            "step": step,
            "round": rnd,
            "trader_id": rows,
            "asset": asset,
            "quantity": quantity,
            "price": price,
            "notional": notional,
            "fee": fee,
            "bad_debt": bad_debt,
            "kind": kind,
        }
        self._log.append(k, values)

    def reserve(self, k: int) -> tuple[tuple[np.ndarray, ...], int]:
        """Room for up to ``k`` fills written in place by a compiled round
        (:func:`model.kernels.log_closed_books`): the log's columns in the order of
        :data:`COLUMNS` (book rows in the ``trader_id`` column) and the first row to write
        at; :meth:`commit` keeps what was written (:meth:`model.column_log.ColumnLog.reserve`)."""
        room, at = self._log.reserve(k)
        return tuple(room.values()), at

    def commit(self, k: int) -> None:
        """Keep the first ``k`` fills written into the room of :meth:`reserve`."""
        self._log.commit(k)

    def columns(self) -> dict[str, np.ndarray]:
        """Every fill so far as typed columns (asset and kind as integer codes; read-only)."""
        return self._with_ids(self._log.columns())

    def _with_ids(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The log's columns with the book rows of ``trader_id`` read as the accounts' ids."""
        if self._ids_are_rows:
            return cols
        ids = self.ids.take(cols["trader_id"])
        ids.flags.writeable = False
        return {**cols, "trader_id": ids}

    def table(self, symbols: list[str]) -> pd.DataFrame:
        """The fills as liquidations.parquet holds them: asset and kind as categoricals,
        string ids as a string column."""
        return _frame(self.columns(), symbols)

    def tables(self, symbols: list[str], rows: int):
        """:meth:`table` in parts of ``rows`` fills, in order (one empty part for an empty
        log): a large run's table written without holding it whole, twice (pandas, then
        Arrow)."""
        for cols in self._log.parts(rows):
            yield _frame(self._with_ids(cols), symbols)


def _frame(cols: dict[str, np.ndarray], symbols: list[str]) -> pd.DataFrame:
    """Fill log columns as liquidations.parquet holds them (:meth:`FillLog.table`)."""
    df = pd.DataFrame(cols)
    df["trader_id"] = id_column(cols["trader_id"])
    df["asset"] = pd.Categorical.from_codes(cols["asset"], symbols)
    df["kind"] = pd.Categorical.from_codes(cols["kind"].astype(np.int64), Kind.labels())
    return df
