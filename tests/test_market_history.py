"""The market history: named (steps, A) columns and the market.parquet table."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.config import build_config
from model.history import MarketHistory


def state(k):
    """A market-like object whose every attribute is distinct and known: column c, step k."""
    names = ["price", "fundamental", "impact", "flow", "forced_flow", "inventory", "cash"]
    names.append("depth_now")
    return SimpleNamespace(
        **{n: np.array([100.0 * k + 10 * c, 100.0 * k + 10 * c + 1]) for c, n in enumerate(names)}
    )


def test_columns_by_name_and_table_rows_by_step_and_asset():
    h = MarketHistory(["BTC", "ETH"])
    assert len(h) == 0 and h.price.shape == (0, 2)
    for k in range(1, 21):  # past the first growth of the buffer
        h.append(state(k))
    assert len(h) == 20
    np.testing.assert_array_equal(h.price[4], [500.0, 501.0])
    np.testing.assert_array_equal(h.fundamental[0], [110.0, 111.0])
    np.testing.assert_array_equal(h.flow[:, 1], 100.0 * np.arange(1, 21) + 31)
    np.testing.assert_array_equal(h.cash[-1], [2060.0, 2061.0])
    with pytest.raises(ValueError):
        h.price[0, 0] = 1.0  # the history is read-only to its readers
    df = h.table()
    assert list(df.columns) == [
        "step",
        "asset",
        "price",
        "fundamental",
        "impact",
        "flow",
        "forced_flow",
        "market_inventory",
        "market_cash",
        "depth",
    ]
    assert df["step"].dtype == np.int64 and isinstance(df["asset"].dtype, pd.CategoricalDtype)
    assert df["step"].tolist()[:4] == [1, 1, 2, 2]
    assert df["asset"].astype(str).tolist()[:4] == ["BTC", "ETH", "BTC", "ETH"]
    row = df[(df["step"] == 3) & (df["asset"] == "ETH")].iloc[0]
    assert row["market_inventory"] == 351.0 and row["impact"] == 321.0
    assert row["depth"] == 371.0
    np.testing.assert_array_equal(h.depth[0], [170.0, 171.0])


def test_an_empty_history_gives_the_typed_empty_table():
    df = MarketHistory(["X"]).table()
    assert len(df) == 0 and df["step"].dtype == np.int64
    assert list(df["asset"].cat.categories) == ["X"]
    assert df["price"].dtype == float


def test_the_model_records_the_market_at_the_end_of_every_step():
    cfg = build_config(
        {
            "steps": 3,
            "assets": [{"symbol": "X", "price": 100.0, "depth": 1e6}],
            "traders": {"count": 50},
        }
    )
    m = ContagionModel(cfg).run()
    h = m.market_history
    assert len(h) == 3
    np.testing.assert_array_equal(h.price[-1], m.market.price)
    np.testing.assert_array_equal(h.inventory[-1], m.market.inventory)
    np.testing.assert_array_equal(h.cash[-1], m.market.cash)
