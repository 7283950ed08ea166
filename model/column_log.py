"""Append-only typed columns: the storage of the logs a run adds to every round.

The fill log (:mod:`model.fills`) and the contagion recorder's edges (:mod:`model.contagion`:
source, target and weight per edge; step and round once per batch) grow by a batch per
liquidation round and are read whole at the end
of a run. Keeping each batch as its own arrays made that read a concatenation of hundreds of
small pieces per column, which in a sweep of small runs cost as much as a cascade measure;
doubling one buffer per column would make it free but hold up to twice the log (three times
while it grows), which large runs cannot spare. So small batches are written into an open
block of :data:`BLOCK` rows and a block is closed only when the next batch does not fit, so
closed blocks are nearly full; large batches are kept as they come. The memory held beyond
the rows themselves is one open block; a run of a few thousand rows is read as one block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.allocation import release_free_memory

__all__ = ["BLOCK", "ColumnLog"]

# A join of at least this many bytes gives the freed blocks' memory back to the system
# (model.allocation.release_free_memory): a long run's log, not a sweep's small runs.
RELEASE_BYTES = 64 << 20

# Rows of a block; a batch of more than an eighth of it is kept as a piece of its own, so a
# block is closed (when the next batch does not fit) at least seven eighths full.
BLOCK = 4096


class ColumnLog:
    """Named typed columns that only grow, read as whole read-only arrays.

    Args:
        dtypes: column name -> dtype, in the order :meth:`columns` gives them.
    """

    def __init__(self, dtypes: dict[str, Any]):
        self.dtypes = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
        self._pieces: list[dict[str, np.ndarray]] = []  # closed blocks and large batches
        self._open: dict[str, np.ndarray] | None = None
        self._used = 0  # rows written into the open block
        self._size = 0
        self._reserved: dict[str, np.ndarray] | None = None  # room handed out (reserve)

    def __len__(self) -> int:
        return self._size

    def append(self, k: int, values: dict[str, Any], *, copy: bool = True) -> None:
        """Add ``k`` rows: for each column a (k,) array or one value for every row, copied and
        cast to the column's dtype, so the caller's arrays are not the log's; with ``copy``
        False a large batch's arrays are kept as they are when they have the column's dtype
        (for a caller that made them for the log and gives them up)."""
        if k == 0:
            return
        if k > BLOCK // 8:
            self._close()
            piece = {}
            for name, dtype in self.dtypes.items():
                value = values[name]
                adopt = isinstance(value, np.ndarray) and value.dtype == dtype
                if not copy and adopt and value.shape == (k,):
                    piece[name] = value
                else:
                    piece[name] = np.empty(k, dtype=dtype)
                    piece[name][:] = value
            self._pieces.append(piece)
        else:
            if self._open is None or self._used + k > BLOCK:
                self._close()
                self._open = self._new_columns(BLOCK)
            for name, column in self._open.items():
                column[self._used : self._used + k] = values[name]
            self._used += k
        self._size += k

    def reserve(self, k: int) -> tuple[dict[str, np.ndarray], int]:
        """Room for up to ``k`` rows written in place (by a compiled call that makes a batch
        and writes it at once): the columns to write and the first row to write at. Rows up
        to :meth:`commit` are the log's; nothing else may be appended in between. A batch
        of more than an eighth of a block gets columns of its own, as :meth:`append` keeps
        it."""
        if k > BLOCK // 8:
            self._close()
            self._reserved = self._new_columns(k)
            return self._reserved, 0
        if self._open is None or self._used + k > BLOCK:
            self._close()
            self._open = self._new_columns(BLOCK)
        self._reserved = self._open
        return self._open, self._used

    def commit(self, k: int) -> None:
        """Keep the first ``k`` rows written into the room of the last :meth:`reserve`, as
        :meth:`append` would have kept them: rows in the open block stay there; columns of
        their own are kept as one piece (copied when the rows fill less than half of them),
        or, when the rows are few enough for a block, copied into the open block."""
        room, self._reserved = self._reserved, None
        if k == 0:
            return
        if room is self._open:
            self._used += k
            self._size += k
            return
        size = len(next(iter(room.values())))
        if k > BLOCK // 8:
            self._pieces.append(
                {n: c[:k] if 2 * k >= size else c[:k].copy() for n, c in room.items()}
            )
            self._size += k
        else:
            self.append(k, {n: c[:k] for n, c in room.items()})

    def _new_columns(self, n: int) -> dict[str, np.ndarray]:
        return {name: np.empty(n, dtype=dtype) for name, dtype in self.dtypes.items()}

    def _close(self) -> None:
        """Keep the open block's rows as a piece (copied when it is less than half full, so
        an almost empty block does not hold its whole buffer)."""
        if self._open is not None and self._used:
            full = 2 * self._used >= BLOCK
            self._pieces.append(
                {
                    n: c[: self._used] if full else c[: self._used].copy()
                    for n, c in self._open.items()
                }
            )
        self._open, self._used = None, 0

    def parts(self, rows: int):
        """Every row so far, ``rows`` at a time (the last part shorter; one empty part for an
        empty log): for writing a large log without joining it whole. Each part is a dict of
        read-only columns, views of the log's pieces where one piece holds the part."""
        if rows < 1:
            raise ValueError(f"parts of {rows} rows: at least one row a part")
        self._close()
        held, size = [], 0
        for piece in self._pieces:
            n = len(next(iter(piece.values())))
            lo = 0
            while lo < n:
                take = min(rows - size, n - lo)
                held.append({name: piece[name][lo : lo + take] for name in self.dtypes})
                size, lo = size + take, lo + take
                if size == rows:
                    yield _joined(held, self.dtypes)
                    held, size = [], 0
        if held or not self._size:
            yield _joined(held, self.dtypes)

    def columns(self) -> dict[str, np.ndarray]:
        """Every row so far, one read-only array per column (the pieces joined once; later
        reads reuse the join until rows are added)."""
        self._close()
        if not self._pieces:
            return _joined([], self.dtypes)
        if len(self._pieces) > 1:
            self._join()
        out = {}
        for name in self.dtypes:
            out[name] = self._pieces[0][name]
            out[name].flags.writeable = False
        return out

    def _join(self) -> None:
        """Join the pieces into one, a column at a time, each column's pieces let go as soon
        as it is joined: the memory the join adds is one column of the log, not all of them.
        If a join fails (out of memory), the pieces are put back as they were."""
        lengths = [len(next(iter(p.values()))) for p in self._pieces]
        joined: dict[str, np.ndarray] = {}
        try:
            for name in self.dtypes:
                joined[name] = np.concatenate([p[name] for p in self._pieces])
                for p in self._pieces:
                    del p[name]
        except BaseException:
            ends = np.cumsum(lengths)
            for name, column in joined.items():  # (views of the joined column)
                for p, lo, hi in zip(self._pieces, ends - lengths, ends, strict=True):
                    p[name] = column[lo:hi]
            raise
        self._pieces = [joined]
        if sum(c.nbytes for c in joined.values()) >= RELEASE_BYTES:
            release_free_memory()  # (the blocks' pages, kept by the heap otherwise)


def _joined(pieces: list[dict[str, np.ndarray]], dtypes: dict) -> dict[str, np.ndarray]:
    """Consecutive slices of the log's columns as one read-only dict of columns (the slice
    itself when there is one; empty columns when there is none)."""
    if len(pieces) == 1:
        out = dict(pieces[0])
    elif pieces:
        out = {name: np.concatenate([p[name] for p in pieces]) for name in dtypes}
    else:
        out = {name: np.zeros(0, dtype=dtype) for name, dtype in dtypes.items()}
    for column in out.values():
        column.flags.writeable = False
    return out
