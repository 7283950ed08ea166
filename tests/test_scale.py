"""Large books: Trader agents by default only for small books, on demand for big ones."""

from __future__ import annotations

import numpy as np
import pytest

import model.model as model_module
from agents.trader import Trader
from model import ContagionModel
from model.config import build_config
from tests.helpers import small_config


def test_agents_by_default_only_up_to_the_limit(monkeypatch):
    cfg = build_config(small_config())  # 500 traders
    assert len(ContagionModel(cfg).agents_by_type[Trader]) == 500
    monkeypatch.setattr(model_module, "AGENT_LIMIT", 499)
    m = ContagionModel(cfg)
    assert not m.agents_created
    assert Trader not in m.agents_by_type
    # an explicit request still wins
    assert len(ContagionModel(cfg, create_agents=True).agents_by_type[Trader]) == 500


def test_trader_on_demand_is_a_view_onto_its_row():
    m = ContagionModel(build_config(small_config()), create_agents=False).run(12)
    t = m.trader(123)
    assert t is m.trader(123)  # created once
    assert list(m.agents_by_type[Trader]) == [t]
    row = 123
    assert t.wallet == m.book.wallet[row]
    assert t.equity == pytest.approx(
        m.book.wallet[row]
        + m.book.margin[row].sum()
        + (m.book.qty[row] * (m.mark - m.book.entry[row])).sum()
    )
    assert t.liquidated == (m.liquidation_count[row] > 0)
    with pytest.raises(KeyError):
        m.trader(10_000)


def test_trader_finds_agents_built_up_front():
    m = ContagionModel(build_config(small_config()), create_agents=True)
    t = m.trader(42)
    assert t.row == 42 and t.trader_id == 42
    assert len(m.agents_by_type[Trader]) == 500


def test_trader_by_id_from_a_population_with_unsorted_ids():
    from model.population import Population

    ids = np.array([30, 10, 20])
    pop = Population(
        ids,
        np.full(3, 1000.0),
        np.array([[0.1, 0.0], [0.0, 1.0], [0.05, 0.5]]),
        np.array([[60000.0, 0.0], [0.0, 3000.0], [60000.0, 3000.0]]),
        np.zeros((3, 2), bool),
        np.zeros((3, 2)),
        np.full(3, "hold", dtype=object),
    )
    m = ContagionModel(build_config(small_config()), population=pop, create_agents=False)
    assert m.trader(20).row == 2
    assert m.trader(10).positions == {"ETH": 1.0}


def test_account_history_is_opt_in_sampled_and_leaves_results_unchanged(tmp_path):
    from model.history import sample_rows

    cfg = build_config(small_config(steps=30))
    plain = ContagionModel(cfg, create_agents=False).run()
    assert plain.history is None
    m = ContagionModel(cfg, create_agents=False, account_history=10, history_sample=7).run()
    # the history draws no randomness: the run is the same
    np.testing.assert_array_equal(plain.mark, m.mark)
    assert plain.summary()["liquidations"] == m.summary()["liquidations"]
    df = m.history.table()
    rows = sample_rows(500, 7)
    assert rows.tolist() == [0, 83, 166, 250, 333, 416, 499]
    assert len(df) == 3 * 7 and sorted(set(df["step"])) == [10, 20, 30]
    last = df[df["step"] == 30].set_index("trader_id")
    for r in rows:
        assert last.loc[r, "wallet"] == m.book.wallet[r]
        assert last.loc[r, "quantity_BTC"] == m.book.qty[r, 0]
        assert last.loc[r, "liquidations"] == m.liquidation_count[r]
    m.write_results(tmp_path / "run")
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "run" / "account_history.parquet")) == 21
    plain.write_results(tmp_path / "plain")
    assert not (tmp_path / "plain" / "account_history.parquet").exists()


def test_account_history_of_chosen_traders():
    m = ContagionModel(
        build_config(small_config(steps=4, shocks=[])),
        create_agents=False,
        account_history=2,
        history_sample=[3, 9],
    ).run()
    df = m.history.table()
    assert df["trader_id"].tolist() == [3, 9, 3, 9] and df["step"].tolist() == [2, 2, 4, 4]


def test_finiteness_check_reads_written_rows_and_the_whole_book_as_a_safety_net(monkeypatch):
    from model.model import DivergenceError

    cfg = build_config(small_config(steps=8, shocks=[]))
    m = ContagionModel(cfg, create_agents=False)
    m.run(2)
    m.book.credit([3], wallet=[np.inf])  # a write through the book is caught at the next step
    with pytest.raises(DivergenceError, match="step 3"):
        m.step()
    # an unreported write is caught by the next whole-book check
    monkeypatch.setattr(model_module, "FULL_CHECK_EVERY", 4)
    m = ContagionModel(cfg, create_agents=False)
    m.run(2)
    m.book.margin[5, 1] = np.nan
    m.step()  # step 3: only written rows are checked
    with pytest.raises(DivergenceError, match="step 4"):
        m.step()
    # and run() ends with one
    m = ContagionModel(cfg, create_agents=False)
    m.run(2)
    m.book.qty[7, 0] = np.inf
    with pytest.raises(DivergenceError):
        m.run(1)


def test_finiteness_check_reads_a_large_fill_from_what_the_book_kept(monkeypatch):
    import model.accounts as accounts
    from model.model import DivergenceError

    monkeypatch.setattr(accounts, "GATHER_SHARED", 8)  # this small book's fills are "large"
    cfg = build_config(small_config(steps=8, shocks=[]))
    m = ContagionModel(cfg, create_agents=False)
    m.run(2)
    m.check_finite(2)
    rows = np.arange(0, m.book.n_traders, 2)
    dq = np.zeros((rows.size, m.book.n_assets))
    dq[-1, 0] = 1e300
    m.book.fill(rows, dq, m.market.price)
    m.check_finite(3)  # a huge position is still a number
    dq[-1, 0] = np.nan
    m.book.fill(rows, dq, m.market.price)  # one that is not
    assert m.book.holds_gathers(rows)  # the check reads the rows from what the fill kept
    with pytest.raises(DivergenceError, match="step 4"):
        m.check_finite(4)


def test_accounts_written_in_row_groups_equal_the_whole_table(tmp_path, monkeypatch):
    import pandas as pd

    import model.results as results

    cfg = build_config(
        small_config(steps=20, traders={"count": 500, "strategies": {"hold": 0.7, "noise": 0.3}})
    )
    m = ContagionModel(cfg, create_agents=False).run()
    whole = results.accounts_table(m)
    monkeypatch.setattr(results, "ACCOUNT_ROWS_PER_GROUP", 64)  # 8 row groups
    m.write_results(tmp_path / "run")
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "run" / "accounts.parquet").num_row_groups == 8
    back = pd.read_parquet(tmp_path / "run" / "accounts.parquet")
    pd.testing.assert_frame_equal(back, whole, check_exact=True)
    assert list(back["strategy"].cat.categories) == ["hold", "noise"]


def test_fills_and_edge_events_written_in_row_groups_equal_the_whole_tables(tmp_path, monkeypatch):
    """liquidations.parquet and contagion_edges.parquet are written a row group at a time
    (a long run's logs are never held whole as tables) and read back as the whole tables."""
    import pandas as pd
    import pyarrow.parquet as pq

    import model.results as results

    cfg = build_config(small_config(steps=40, contagion={"max_edges": 300}))
    m = ContagionModel(cfg, create_agents=False).run()
    whole = {
        "liquidations": results.liquidations_table(m),
        "contagion_edges": m.recorder.edges_table(),
    }
    assert len(whole["liquidations"]) > 500 and m.recorder.truncated
    monkeypatch.setattr(results, "LOG_ROWS_PER_GROUP", 100)
    m.write_results(tmp_path / "run")
    for name, table in whole.items():
        path = tmp_path / "run" / f"{name}.parquet"
        assert pq.ParquetFile(path).num_row_groups == -(-len(table) // 100)
        pd.testing.assert_frame_equal(pd.read_parquet(path), table, check_exact=True)


def test_accounts_of_an_empty_book_still_form_a_table(tmp_path):
    import pandas as pd

    m = ContagionModel(
        build_config(small_config(steps=2, shocks=[], traders={"count": 0})), create_agents=False
    )
    m.run().write_results(tmp_path / "run")
    back = pd.read_parquet(tmp_path / "run" / "accounts.parquet")
    assert len(back) == 0 and "quantity_BTC" in back.columns
