"""The column log: batches of every size read back as the columns they make, in order."""

import numpy as np
import pytest

from model.column_log import BLOCK, ColumnLog

DTYPES = {"step": np.int64, "id": object, "x": np.float64, "kind": np.int8}


def _batches(rng, sizes):
    for step, k in enumerate(sizes):
        yield (
            k,
            {
                "step": step,  # one value for every row
                "id": np.array([f"t{i}" for i in rng.integers(0, 99, k)], dtype=object),
                "x": rng.random(k),
                "kind": rng.integers(0, 5, k),
            },
        )


@pytest.mark.parametrize("seed", range(3))
def test_batches_of_every_size_read_back_in_order(seed):
    """Small batches (into blocks), batches beyond an eighth of a block (pieces of their
    own), empty ones, and reads in between: the columns are the batches joined by hand."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 7, BLOCK // 8, BLOCK // 8 + 1, BLOCK - 3, 3 * BLOCK], 40)
    log, expected = ColumnLog(DTYPES), {name: [] for name in DTYPES}
    for i, (k, values) in enumerate(_batches(rng, sizes)):
        log.append(int(k), values)
        for name in DTYPES:
            expected[name].append(np.broadcast_to(values[name], (k,)).astype(DTYPES[name]))
        if i % 7 == 3:  # a read midway: later rows still join it
            assert len(log.columns()["x"]) == len(log)
    cols = log.columns()
    assert len(log) == sum(int(k) for k in sizes) and list(cols) == list(DTYPES)
    for name, dtype in DTYPES.items():
        assert cols[name].dtype == dtype and not cols[name].flags.writeable
        assert cols[name].tolist() == np.concatenate(expected[name]).tolist(), name


def test_rows_are_copies_and_an_almost_empty_block_holds_no_buffer():
    log = ColumnLog({"x": np.float64})
    x = np.array([1.0, 2.0])
    log.append(2, {"x": x})
    x[0] = 99.0  # the caller's array is not the log's
    log.append(BLOCK, {"x": np.zeros(BLOCK)})  # a large batch closes the open block
    first = log._pieces[0]["x"]
    assert first.tolist() == [1.0, 2.0] and (first.base is None or first.base.size == 2)
    assert log.columns()["x"][:3].tolist() == [1.0, 2.0, 0.0]
    empty = ColumnLog({"x": np.float64}).columns()
    assert empty["x"].shape == (0,) and empty["x"].dtype == np.float64


def test_a_large_batch_made_for_the_log_is_kept_without_a_copy():
    """``copy=False``: a large batch's arrays of the column's dtype become the log's (the
    recorder's edges, made for it); small ones and other dtypes are still copied in."""
    log = ColumnLog({"x": np.float64, "n": np.int64})
    big = np.arange(BLOCK, dtype=np.float64)
    ints = np.arange(BLOCK, dtype=np.int32)  # not the column's dtype: cast, so copied
    log.append(BLOCK, {"x": big, "n": ints}, copy=False)
    assert log._pieces[0]["x"] is big and log._pieces[0]["n"] is not ints
    small = np.array([5.0])
    log.append(1, {"x": small, "n": 7}, copy=False)
    small[0] = -1.0
    cols = log.columns()
    assert cols["x"][-1] == 5.0 and cols["n"].tolist() == [*range(BLOCK), 7]


@pytest.mark.parametrize("rows", [1, 5, BLOCK // 8, BLOCK, 3 * BLOCK + 1, 10**6])
def test_parts_are_the_columns_cut_in_order(rows):
    """Parts of ``rows`` rows (the last shorter), read-only, that join to the columns; read
    before and after the log was joined whole."""
    rng = np.random.default_rng(4)
    sizes = rng.choice([0, 1, 7, BLOCK // 8 + 1, BLOCK - 3, 3 * BLOCK], 30)
    log = ColumnLog(DTYPES)
    for k, values in _batches(rng, sizes):
        log.append(int(k), values)
    for _ in range(2):  # pieces as appended, then one joined piece
        parts = list(log.parts(rows))
        assert [len(p["x"]) for p in parts[:-1]] == [rows] * (len(parts) - 1)
        assert 0 < len(parts[-1]["x"]) <= rows
        cols = log.columns()
        for name, dtype in DTYPES.items():
            assert all(p[name].dtype == dtype and not p[name].flags.writeable for p in parts)
            joined = np.concatenate([p[name] for p in parts])
            assert joined.tolist() == cols[name].tolist(), name


def test_an_empty_log_is_one_empty_part():
    with pytest.raises(ValueError, match="at least one row"):
        next(ColumnLog(DTYPES).parts(0))
    (part,) = ColumnLog(DTYPES).parts(8)
    assert list(part) == list(DTYPES)
    assert all(part[n].shape == (0,) and part[n].dtype == d for n, d in DTYPES.items())


def test_a_join_lets_each_columns_pieces_go_before_the_next_and_survives_a_failure(monkeypatch):
    """Joining the pieces holds one column twice at most: when a column is joined, the pieces
    of the columns before it are gone. A join that fails leaves the log readable as before."""
    import weakref

    log = ColumnLog({"a": np.float64, "b": np.int64, "c": np.float64})
    for i in range(3):
        log.append(BLOCK, {"a": np.full(BLOCK, i), "b": i, "c": np.ones(BLOCK)})
    concatenate, seen, calls = np.concatenate, [], []

    def failing(arrays):
        calls.append(1)
        if len(calls) == 2:  # the second column: out of memory
            raise MemoryError
        return concatenate(arrays)

    monkeypatch.setattr(np, "concatenate", failing)
    with pytest.raises(MemoryError):
        log.columns()
    monkeypatch.setattr(np, "concatenate", concatenate)
    assert [len(p) for p in log._pieces] == [3, 3, 3]
    assert log.columns()["a"].tolist() == [0.0] * BLOCK + [1.0] * BLOCK + [2.0] * BLOCK
    assert list(log.columns()) == ["a", "b", "c"]

    log = ColumnLog({"a": np.float64, "b": np.int64, "c": np.float64})
    for i in range(3):
        log.append(BLOCK, {"a": np.full(BLOCK, i), "b": i, "c": np.ones(BLOCK)})
    pieces_of = {name: [weakref.ref(p[name]) for p in log._pieces] for name in "abc"}

    def watching(arrays):
        seen.append({name: sum(r() is not None for r in refs) for name, refs in pieces_of.items()})
        return concatenate(arrays)

    monkeypatch.setattr(np, "concatenate", watching)
    log.columns()
    assert seen == [{"a": 3, "b": 3, "c": 3}, {"a": 0, "b": 3, "c": 3}, {"a": 0, "b": 0, "c": 3}]


def test_a_large_log_gives_its_blocks_back_when_joined(monkeypatch):
    """A join of at least RELEASE_BYTES calls release_free_memory once; a smaller one not."""
    import model.column_log as column_log

    calls = []
    monkeypatch.setattr(column_log, "release_free_memory", lambda: calls.append(1))
    monkeypatch.setattr(column_log, "RELEASE_BYTES", 8 * 5000)
    for rows, expected in ((4999, []), (5000, [1])):
        log = column_log.ColumnLog({"x": np.float64})
        for lo in range(0, rows, 100):
            log.append(min(100, rows - lo), {"x": 1.0})
        calls.clear()
        assert len(log.columns()["x"]) == rows
        assert calls == expected
        log.columns()  # (joined already: nothing more)
        assert calls == expected


@pytest.mark.parametrize("seed", range(3))
def test_rows_written_in_place_join_the_appended_ones_in_order(seed):
    """Room reserved and partly written (as a compiled call writes a round's batch), between
    appends of every size: the columns are the written rows and the appended ones in the
    order they came, and rows written past the commit are not the log's."""
    rng = np.random.default_rng(seed)
    dtypes = {"step": np.int64, "x": np.float64}
    log, expected = ColumnLog(dtypes), {"step": [], "x": []}
    for step in range(60):
        k = int(rng.choice([0, 1, 9, BLOCK // 8, BLOCK // 8 + 1, BLOCK - 1, 2 * BLOCK]))
        x = rng.random(k)
        if rng.random() < 0.5:
            log.append(k, {"step": step, "x": x})
            kept = k
        else:
            room, at = log.reserve(k)
            kept = int(rng.integers(0, k + 1))
            room["step"][at : at + k] = step  # written beyond what is kept, too
            room["x"][at : at + k] = x
            log.commit(kept)
        expected["step"].append(np.full(kept, step))
        expected["x"].append(x[:kept])
    cols = log.columns()
    assert len(log) == sum(map(len, expected["x"]))
    for name in dtypes:
        np.testing.assert_array_equal(cols[name], np.concatenate(expected[name]))


def test_a_large_room_mostly_unwritten_is_not_held_whole():
    """A room of its own columns of which less than half was written is kept as a copy of
    the written rows (a piece of its own, or in the open block when the rows are few enough
    for one, as an append keeps them), not as views that hold the whole room."""
    log = ColumnLog({"x": np.float64})
    for k, value in ((10, 1.0), (BLOCK // 8 + 1, 3.0)):
        room, at = log.reserve(4 * BLOCK)
        room["x"][:k] = value
        log.commit(k)
        assert at == 0 and all(p["x"].base is None for p in log._pieces)
    log.append(1, {"x": 2.0})
    # the 10 rows went to the open block, copied out when the next large room closed it
    assert [len(p["x"]) for p in log._pieces] == [10, BLOCK // 8 + 1]
    assert all(p["x"].base is None for p in log._pieces)
    want = [1.0] * 10 + [3.0] * (BLOCK // 8 + 1) + [2.0]
    np.testing.assert_array_equal(log.columns()["x"], want)
