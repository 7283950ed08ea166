"""The fill log: typed columns, one append for every kind, the liquidations table."""

import numpy as np
import pandas as pd

from model.fills import COLUMNS, FillLog, Kind, liquidation_fills


def test_kind_codes_and_labels_are_the_table_categories():
    assert [int(k) for k in Kind] == [0, 1, 2, 3, 4]
    assert Kind.labels() == ["full", "partial", "adl", "vault", "collateral"]


def test_adl_fills_and_collateral_sales_are_not_liquidations():
    codes = np.array([0, 1, 2, 3, 4], dtype=np.int8)
    expected = [True, True, False, True, False]
    assert liquidation_fills(codes).tolist() == expected
    labels = pd.Categorical.from_codes(codes, Kind.labels())
    assert liquidation_fills(pd.Series(labels)).tolist() == expected


def test_an_empty_log_has_typed_empty_columns_and_table():
    log = FillLog(np.array([7, 8], dtype=np.int64))
    cols = log.columns()
    assert list(cols) == list(COLUMNS)
    for name, dtype in COLUMNS.items():
        assert cols[name].shape == (0,) and cols[name].dtype == dtype, name
    df = log.table(["X"])
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
    assert list(df["kind"].cat.categories) == ["full", "partial", "adl", "vault", "collateral"]
    assert len(log) == 0


def test_appends_keep_order_map_rows_to_ids_and_broadcast_scalars():
    log = FillLog(np.array([10, 20, 30], dtype=np.int64))
    # a liquidation round: two fills with their own kinds, fees and bad debt
    log.append(
        4,
        2,
        [2, 0],
        [1, 0],
        [1.5, -2.0],
        [9.0, 90.0],
        [13.5, 180.0],
        [0.1, 0.2],
        [0.0, 5.0],
        np.array([Kind.FULL, Kind.PARTIAL]),
    )
    # an ADL batch: one asset for every fill, no fee, no bad debt
    log.append(4, 2, np.array([1]), 0, [-3.0], [95.0], [285.0], 0.0, 0.0, Kind.ADL)
    log.append(5, 1, np.zeros(0, np.int64), 0, [], [], [], 0.0, 0.0, Kind.FULL)  # nothing
    cols = log.columns()
    assert len(log) == 3
    assert cols["trader_id"].tolist() == [30, 10, 20]
    assert cols["step"].tolist() == [4, 4, 4] and cols["round"].tolist() == [2, 2, 2]
    assert cols["asset"].tolist() == [1, 0, 0]
    assert cols["fee"].tolist() == [0.1, 0.2, 0.0]
    assert cols["bad_debt"].tolist() == [0.0, 5.0, 0.0]
    assert cols["kind"].tolist() == [0, 1, 2]
    for name, dtype in COLUMNS.items():
        assert cols[name].dtype == dtype, name
    df = log.table(["BTC", "ETH"])
    assert df["asset"].astype(str).tolist() == ["ETH", "BTC", "BTC"]
    assert df["kind"].astype(str).tolist() == ["full", "partial", "adl"]
    assert isinstance(df["kind"].dtype, pd.CategoricalDtype)


def test_columns_are_the_log_not_a_copy_to_scribble_on():
    log = FillLog(np.array([1], dtype=np.int64))
    quantity = np.array([2.0])
    log.append(1, 1, [0], 0, quantity, [1.0], [2.0], 0.0, 0.0, Kind.FULL)
    quantity[0] = 99.0  # the caller's array is not the log's
    assert log.columns()["quantity"].tolist() == [2.0]
    assert not log.columns()["quantity"].flags.writeable


def test_the_table_in_parts_joins_to_the_table():
    """Parts of two fills: the same rows, categories (every asset and kind, used or not)
    and id columns as the whole table; an empty log is one empty part."""
    ids = np.array(["a", "b&c", "d"], dtype=object)
    log = FillLog(ids)
    (empty,) = log.tables(["BTC", "ETH"], 2)
    pd.testing.assert_frame_equal(empty, log.table(["BTC", "ETH"]))
    for step in range(1, 4):
        log.append(step, 1, [2, 0], [1, 0], [1.5, -2.0], 9.0, 13.5, 0.1, 0.0, Kind.FULL)
    log.append(4, 1, [1], 0, [-3.0], [95.0], [285.0], 0.0, 0.0, Kind.ADL)
    parts = list(log.tables(["BTC", "ETH"], 2))
    assert [len(p) for p in parts] == [2, 2, 2, 1]
    assert all(list(p["kind"].cat.categories) == Kind.labels() for p in parts)
    joined = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(joined, log.table(["BTC", "ETH"]), check_exact=True)
    assert joined["trader_id"].tolist() == ["d", "a"] * 3 + ["b&c"]


def test_fills_written_in_place_are_read_with_their_ids():
    """Fills written into the reserved room (book rows in the trader column, as a compiled
    round writes them) read back as an append of the same fills does: ids, not rows."""
    ids = np.array(["a", "b", "c"], dtype=object)
    by_append, in_place = FillLog(ids), FillLog(ids)
    by_append.append(3, 1, [2, 0], 0, [1.5, -2.0], 9.0, [13.5, 18.0], 0.1, 0.0, Kind.FULL)
    columns, at = in_place.reserve(4)
    values = (3, 1, [2, 0], 0, [1.5, -2.0], 9.0, [13.5, 18.0], 0.1, 0.0, int(Kind.FULL))
    for column, value in zip(columns, values, strict=True):
        column[at : at + 2] = value
    in_place.commit(2)
    assert list(in_place.columns()["trader_id"]) == ["c", "a"]
    pd.testing.assert_frame_equal(in_place.table(["BTC"]), by_append.table(["BTC"]))


def test_ids_that_are_the_rows_are_read_without_a_copy_and_others_mapped():
    """A generated population's ids 0 to n - 1 are the rows: the column is the log's own;
    any other ids (permuted, offset) are mapped row by row."""
    for ids, want in (([0, 1, 2], [2, 0]), ([2, 0, 1], [1, 2]), ([10, 11, 12], [12, 10])):
        log = FillLog(np.array(ids, dtype=np.int64))
        log.append(1, 1, [2, 0], 0, [1.0, 2.0], 9.0, [9.0, 18.0], 0.0, 0.0, Kind.FULL)
        assert log.columns()["trader_id"].tolist() == want
        assert not log.columns()["trader_id"].flags.writeable
