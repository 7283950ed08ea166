"""Rows of the account book gathered once and shared between reads (AccountBook.read).

Traders who trade every step are scattered through the book, and reading their rows is a
gather (``np.take``) from arrays of a million rows: about a millisecond per array for a
hundred thousand rows, where arithmetic on the gathered rows costs a tenth of that. A trading
rule's equity, the batch's margin cap, the fill, the margin screen and the finiteness check
read the same rows of the same arrays within a step, and the next step's rule reads them
again; so the book keeps what it gathered and hands it out until the rows are written.

Two sets of rows are kept: the rows read last and, when those were narrowed from a larger
set (the rule's rows that send orders, out of all its rows: :meth:`SharedGathers.narrow`),
that larger set, which the fill of the narrower one updates in place of a new gather. When
other rows are read (a liquidation round's candidates), the two largest sets held before
stay held besides them (:data:`KEPT_BESIDES`). A
write of a few rows (a liquidation round's) does not drop them: the rows written are re-read
into copies of the gathers on their next read (arrays already handed out keep what they
held). A write of many rows drops them, except for what a fill keeps of the rows it wrote.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KEPT_BESIDES", "Gathers", "SharedGathers", "put_rows", "take_rows"]

# Sets of rows whose gathers stay held when other rows are read: a rule's rows, and the rows
# of its last fill when those were narrowed from them.
KEPT_BESIDES = 2

# Traders who trade every step are scattered through the book, so their reads and writes are
# gathers and scatters of rows. numpy's fancy indexing moves the rows of a (n, A) array one
# element at a time: for 10^5 rows scattered through 10^6, ``np.take`` gathers them three to
# four times faster, and writing each row as one item (a one-dimensional view of whole rows)
# scatters them four times faster.


def take_rows(a: np.ndarray, rows) -> np.ndarray:
    """``a[rows]`` for a (n,) or (n, A) array; ``rows`` an index array, a mask, a slice, or
    None for every row (then ``a`` itself, not a copy)."""
    if rows is None:
        return a
    if isinstance(rows, np.ndarray) and rows.dtype.kind in "iu":
        return a.take(rows, axis=0)  # (the method: np.take's dispatch costs a microsecond)
    return a[rows]


def put_rows(a: np.ndarray, rows, values) -> None:
    """``a[rows] = values``; for an index array into a (n, A) array, whole rows at a time."""
    whole_rows = (
        a.ndim == 2
        and a.shape[1] > 0
        and a.flags.c_contiguous
        and isinstance(rows, np.ndarray)
        and rows.ndim == 1
        and rows.dtype.kind in "iu"
    )
    if not whole_rows:
        a[rows] = values
        return
    row = np.dtype((np.void, a.itemsize * a.shape[1]))
    shape = (rows.size, a.shape[1])
    if not (
        isinstance(values, np.ndarray)
        and values.shape == shape
        and values.dtype == a.dtype
        and values.flags.c_contiguous
    ):  # (np.broadcast_to costs more than the write of a few rows)
        values = np.ascontiguousarray(np.broadcast_to(values, shape), a.dtype)
    a.view(row)[:, 0][rows] = values.view(row)[:, 0]


class Gathers:
    """The gathered rows of some of the book's arrays, for one set of rows.

    Attributes:
        rows: the book rows (a private copy).
        values: array name -> its gathered rows (read only).
        stale: rows written since (index arrays), to re-read before the next use.
        parent: ``(gathers, at)`` when these rows are ``gathers.rows[at]``.
    """

    __slots__ = ("parent", "rows", "sorted", "source", "stale", "stale_count", "values")

    def __init__(self, rows: np.ndarray, values: dict | None = None, parent=None):
        self.rows = rows
        self.values = {} if values is None else values
        for v in self.values.values():
            v.flags.writeable = False
        self.stale: list[np.ndarray] = []
        self.stale_count = 0
        self.sorted: bool | None = None  # whether ``rows`` is sorted (None: not known yet)
        self.parent = parent
        self.source = None  # an unchangeable array known to equal ``rows``

    def holds(self, rows) -> bool:
        """Whether these are the gathers of ``rows``. An array found equal that cannot change
        (read only, owning its memory: a rule's rows) is recognised after that by identity,
        without comparing a hundred thousand rows again."""
        if rows is self.source:
            return True
        same = (
            isinstance(rows, np.ndarray)
            and self.rows.shape == rows.shape
            and (rows.size == 0 or (rows[0] == self.rows[0] and rows[-1] == self.rows[-1]))
            and np.array_equal(self.rows, rows)  # (after the ends: it reads every row)
        )
        if same and rows.base is None and not rows.flags.writeable:
            self.source = rows
        return same

    def outdate(self, rows) -> bool:
        """Note a write of ``rows``; False when the gathers must be dropped instead: the rows
        are not an index array, or with the rows noted before more than an eighth of these,
        or these rows are not sorted (re-reading looks the written rows up in them)."""
        small = (
            isinstance(rows, np.ndarray)
            and rows.ndim == 1
            and rows.dtype.kind in "iu"
            and 8 * (self.stale_count + rows.size) <= self.rows.size
        )
        if small and self.sorted is None:
            self.sorted = bool((self.rows[1:] > self.rows[:-1]).all())
        if not (small and self.sorted):
            return False
        self.stale.append(rows.copy())
        self.stale_count += rows.size
        return True

    def refresh(self, book) -> None:
        """Re-read from ``book`` the rows written since the gathers were made (into copies)."""
        if not self.stale:
            return
        written = np.concatenate(self.stale)
        self.stale, self.stale_count = [], 0
        at = np.minimum(np.searchsorted(self.rows, written), self.rows.size - 1)
        hit = self.rows[at] == written
        if hit.any():
            at, written = at[hit], written[hit]
            self.values = {
                name: _put(values, at, getattr(book, name)[written])
                for name, values in self.values.items()
            }

    def updated(self, at, written: dict) -> Gathers:
        """These gathers with the rows at positions ``at`` replaced by ``written`` (name ->
        the new values of those rows; names not given keep theirs)."""
        values = {
            name: _put(v, at, written[name]) if name in written else v
            for name, v in self.values.items()
        }
        return Gathers(self.rows, values)


def _put(values: np.ndarray, at, new) -> np.ndarray:
    """A read-only copy of ``values`` with ``new`` at positions ``at``."""
    out = values.copy()
    put_rows(out, at, new)
    out.flags.writeable = False
    return out


class SharedGathers:
    """The gathers an AccountBook shares: the rows read last, and the rows they were narrowed
    from (most recent first)."""

    __slots__ = ("book", "held")

    def __init__(self, book):
        self.book = book
        self.held: list[Gathers] = []

    def find(self, rows) -> Gathers | None:
        """The gathers of ``rows`` (brought up to date), or None."""
        for g in self.held:
            if g.holds(rows):
                g.refresh(self.book)
                return g
        return None

    def read(self, rows: np.ndarray, names) -> list[np.ndarray]:
        """The named arrays' rows ``rows``: shared when held, gathered (and then held)
        otherwise. Of the gathers of other rows the two largest sets stay held: a rule's rows
        and those of its last fill, read again by the finiteness check and the next step and
        the dearest to gather again, outlive the candidates of the liquidation rounds read in
        between."""
        g = self.find(rows)
        if g is None:
            g = Gathers(rows.copy())
            largest = sorted(self.held, key=lambda h: h.rows.size, reverse=True)
            self.held = [g, *largest[:KEPT_BESIDES]]
        out = []
        for name in names:
            values = g.values.get(name)
            if values is None:
                values = getattr(self.book, name).take(rows, axis=0)
                values.flags.writeable = False
                g.values[name] = values
            out.append(values)
        return out

    def narrow(self, rows, at: np.ndarray) -> None:
        """``rows[at]`` will be read next: their gathers taken from those of ``rows`` (when
        held), which stay held as their parent."""
        parent = self.find(rows)
        if parent is None:
            return
        values = {name: v.take(at, axis=0) for name, v in parent.values.items()}
        child = Gathers(rows.take(at), values, parent=(parent, at))
        child.sorted = parent.sorted  # (a subset of sorted rows is sorted)
        self.held = [child, parent]

    def written(self, rows) -> None:
        """After a write of ``rows`` (None or a slice: every row): note them in the gathers
        that can re-read them, drop the others."""
        self.held = [g for g in self.held if rows is not None and g.outdate(rows)]

    def filled(self, rows: np.ndarray, values: dict) -> None:
        """After a fill of ``rows`` (at least as many as are worth sharing) that wrote
        ``values`` (name -> its rows' new values; other arrays of the rows unchanged): hold
        them, and when ``rows`` were narrowed from held gathers, those updated too."""
        g = self.find(rows)
        kept = {**g.values, **values} if g is not None else dict(values)
        parent = g.parent if g is not None else None
        self.held = [Gathers(rows.copy(), kept)]
        if parent is not None:
            outer, at = parent
            if outer.stale:
                outer.refresh(self.book)
            self.held.append(outer.updated(at, values))
