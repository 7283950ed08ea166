"""Account ids: integers or strings, kept exactly as given, mapped only at the edges.

The engine works on book rows (0..n-1); an account's id is what the outputs call it. Generated
populations number their accounts 0..n-1 (an ``int64`` array: a million ids cost 8 MB, not a
million Python objects). A population file may name its accounts with any strings (on-chain
venues name them by address, ``0x3f5c...``) or integers; they are kept exactly as written:

* a CSV column is read as text; when every value is a canonical integer (``0``, ``42``,
  ``-7``: no sign ``+``, no leading zero, no ``-0``) within 64 bits, the ids are integers,
  otherwise every id is the text as written (``007`` stays ``007``, and ``42`` next to it stays
  the string ``42``);
* a parquet column of integers or strings is kept as it is.

Integer ids are an ``int64`` array; string ids an object array of ``str``. Tables carry them as
``int64`` or as a pandas string column (:func:`id_column`). An id must not be empty, must not
hold control characters (GraphML cannot carry them), and must not look like one of the contagion
graph's own nodes (``step:<t>``, ``others:<t>:<r>``), whose names share the graph with trader
ids (:func:`id_problem`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = [
    "CANONICAL_INT",
    "RESERVED",
    "as_ids",
    "bad_ids",
    "duplicate_id",
    "find_row",
    "id_column",
    "id_problem",
    "ids_from_text",
    "is_integer_ids",
    "plain_id",
    "show_id",
]

# Text of an integer written the one way Python writes it back: what "kept exactly" allows.
CANONICAL_INT = r"0|-?[1-9][0-9]*"
# Names of the contagion graph's own nodes (model.contagion): a trader may not take them.
RESERVED = re.compile(r"(step:[0-9]+|others:[0-9]+:[0-9]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_integer_ids(ids: np.ndarray) -> bool:
    """Whether ``ids`` are integer ids (else strings)."""
    return np.asarray(ids).dtype.kind in "iu"


def as_ids(ids) -> np.ndarray:
    """``ids`` as the book keeps them: ``int64`` for integers, an object array of ``str`` for
    strings (numpy's fixed-width unicode arrays become Python strings).

    Raises:
        TypeError: ids of another type (floats, a mix of integers and strings).
    """
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu" or arr.size == 0:
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.tolist()):
        return arr
    raise TypeError(f"trader ids must be integers or strings, not {arr.dtype}")


def ids_from_text(text: pd.Series) -> np.ndarray:
    """Ids of a column read as text: ``int64`` when every value is a canonical integer within
    64 bits (so the text is exactly how the integer prints), else the strings as written."""
    values = text.to_numpy(dtype=object)
    if len(text) and text.str.fullmatch(CANONICAL_INT).all():
        numbers = pd.to_numeric(text, errors="coerce")
        if numbers.dtype == np.int64:  # beyond int64, pandas gives uint64 or floats
            return numbers.to_numpy()
    return values


def id_problem(value) -> str | None:
    """What is wrong with one string id, or None (integers are always fine)."""
    if not isinstance(value, str):
        return None
    if not value.strip():
        return "trader_id is empty"
    if _CONTROL.search(value):
        return f"trader_id {value!r} holds a control character"
    if RESERVED.fullmatch(value):
        return (
            f"trader_id {value!r} would collide with the contagion graph's node names "
            "(step:<t>, others:<t>:<r>)"
        )
    return None


def bad_ids(text: pd.Series) -> np.ndarray:
    """(k,) which of a column of string ids :func:`id_problem` refuses (vectorised)."""
    return (
        (text.str.strip() == "")
        | text.str.contains(_CONTROL.pattern, regex=True)
        | text.str.fullmatch(RESERVED.pattern)
    ).to_numpy(dtype=bool)


def id_column(ids: np.ndarray):
    """Ids as a table column: ``int64``, or a pandas string array."""
    if is_integer_ids(ids):
        return np.asarray(ids, dtype=np.int64)
    return pd.array(np.asarray(ids, dtype=object), dtype=pd.StringDtype())


def plain_id(value):
    """An id as a plain Python value (``int`` or ``str``), for JSON and networkx nodes."""
    return value.item() if isinstance(value, np.generic) else value


def show_id(value) -> str:
    """An id as messages show it: integers bare, strings quoted."""
    value = plain_id(value)
    return repr(value) if isinstance(value, str) else str(value)


def duplicate_id(ids: np.ndarray):
    """An id that names two accounts (None when every id is unique)."""
    ids = as_ids(ids)
    if ids.size < 2:
        return None
    ordered = np.sort(ids)
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    return plain_id(ordered[same[0]]) if same.size else None


def find_row(ids: np.ndarray, trader_id) -> int | None:
    """The book row of the account ``trader_id`` (None when no account has it).

    Integer ids match integers only and string ids strings only: ``42`` is not ``"42"``.
    """
    trader_id = plain_id(trader_id)
    if is_integer_ids(ids):
        if isinstance(trader_id, bool) or not isinstance(trader_id, int):
            return None
        row = int(np.searchsorted(ids, trader_id))
        if row < ids.size and ids[row] == trader_id:  # sorted ids (files, generated)
            return row
    elif not isinstance(trader_id, str):
        return None
    hits = np.flatnonzero(ids == trader_id)  # ids given in another order
    return int(hits[0]) if hits.size else None
