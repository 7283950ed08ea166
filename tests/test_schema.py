"""Every file a run and a sweep write has exactly the columns model/schema.py declares (names,
order, types), so docs/outputs.md, which is rendered from the declarations, tells the truth."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
import tomli_w

from experiments.sweep import SerialExecutor, load_sweep, run_sweep
from model import ContagionModel, schema
from model.config import build_config
from tests.helpers import small_config

SYMBOLS = ["BTC", "ETH"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A small two-asset run with a cascade, a bounded contagion graph (so aggregate nodes
    exist), every graph format and sampled account history."""
    data = small_config(
        steps=20,
        traders={"count": 300, "leverage": 20.0},
        contagion={"max_edges": 200, "top_contributors": 2},
        output={"graph": ["graphml.gz", "graphml", "json"]},
    )
    model = ContagionModel(build_config(data), account_history=5, history_sample=40)
    model.run()
    out = tmp_path_factory.mktemp("run") / "folder"
    model.write_results(out)
    assert model.summary()["liquidations"] > 0, "the run should liquidate someone"
    assert model.summary()["graph_truncated"], "the graph should be bounded"
    return model, out


@pytest.mark.parametrize(
    "table",
    [
        schema.MARKET,
        schema.STEPS,
        schema.LIQUIDATIONS,
        schema.ACCOUNTS,
        schema.CONTAGION_EDGES,
        schema.ACCOUNT_HISTORY,
    ],
    ids=lambda t: t.file,
)
def test_each_run_table_as_written_matches_its_declaration(run_folder, table):
    _, out = run_folder
    df = pd.read_parquet(out / table.file)
    assert len(df) > 0
    assert schema.check_table(table, df, SYMBOLS) == []


def test_tables_in_memory_match_the_declarations(run_folder):
    model, _ = run_folder
    tables = model.tables()
    for name, table in (
        ("market", schema.MARKET),
        ("steps", schema.STEPS),
        ("liquidations", schema.LIQUIDATIONS),
        ("accounts", schema.ACCOUNTS),
    ):
        assert schema.check_table(table, tables[name], SYMBOLS) == [], name
    assert schema.check_table(schema.CONTAGION_EDGES, model.recorder.edges_table()) == []


def test_summary_json_matches_its_declaration(run_folder):
    _, out = run_folder
    summary = json.loads((out / "summary.json").read_text())
    assert schema.check_json(schema.SUMMARY, summary, SYMBOLS) == []


@pytest.mark.parametrize("name", ["contagion.graphml", "contagion.graphml.gz"])
def test_graphml_attributes_match_their_declarations(run_folder, name):
    import gzip

    _, out = run_folder
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    opener = gzip.open if name.endswith(".gz") else open
    with opener(out / name, "rb") as fh:
        keys = ET.parse(fh).getroot().findall("g:key", ns)
    written = {(k.get("for"), k.get("attr.name"), k.get("attr.type")) for k in keys}
    declared = {
        (domain, c.name, c.dtype)
        for domain, table in (
            ("node", schema.NODE_ATTRIBUTES),
            ("edge", schema.EDGE_ATTRIBUTES),
            ("graph", schema.GRAPH_ATTRIBUTES),
        )
        for c in table.columns
    }
    assert written == declared


def test_node_link_json_carries_the_same_attributes(run_folder):
    _, out = run_folder
    data = json.loads((out / "contagion.json").read_text())
    node_keys = set().union(*(set(n) for n in data["nodes"])) - {"id"}
    edge_keys = set().union(*(set(e) for e in data["edges"])) - {"source", "target"}
    assert node_keys == {c.name for c in schema.NODE_ATTRIBUTES.columns}
    assert edge_keys == {c.name for c in schema.EDGE_ATTRIBUTES.columns}
    assert set(data["graph"]) == {c.name for c in schema.GRAPH_ATTRIBUTES.columns}


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    base = small_config(steps=15, traders={"count": 150})
    (tmp / "base.toml").write_text(tomli_w.dumps(base))
    sweep = {
        "sweep": {
            "base": "base.toml",
            "grid": {"traders.leverage": [5.0, 25.0], "margin.mode": ["cross", "isolated"]},
        }
    }
    (tmp / "s.toml").write_text(tomli_w.dumps(sweep))
    out = tmp / "out"
    run_sweep(load_sweep(tmp / "s.toml"), out, SerialExecutor(), progress=False)
    return out


def test_sweep_tables_match_their_declarations(sweep_folder):
    keys = ["traders.leverage", "margin.mode"]
    runs = pd.read_parquet(sweep_folder / "runs.parquet")
    assert (runs["status"] == "ok").all()
    assert schema.check_table(schema.RUNS, runs, SYMBOLS, keys) == []
    cascades = pd.read_parquet(sweep_folder / "cascades.parquet")
    assert len(cascades) > 0
    assert schema.check_table(schema.CASCADES, cascades) == []
    meta = json.loads((sweep_folder / "sweep.json").read_text())
    assert schema.check_json(schema.SWEEP, meta) == []


# --------------------------------------------------------------------------------------------
# The checks themselves
# --------------------------------------------------------------------------------------------


def test_per_asset_columns_expand_asset_by_asset():
    names = schema.expand(schema.ACCOUNTS, ["BTC", "ETH"])
    assert names[10:] == [
        "initial_quantity_BTC",
        "quantity_BTC",
        "entry_price_BTC",
        "isolated_margin_BTC",
        "liquidation_price_BTC",
        "initial_quantity_ETH",
        "quantity_ETH",
        "entry_price_ETH",
        "isolated_margin_ETH",
        "liquidation_price_ETH",
        # a collateral asset's holdings come after every traded asset's position
        "initial_holding_BTC",
        "holding_BTC",
        "initial_holding_ETH",
        "holding_ETH",
    ]


def test_a_renamed_column_or_a_changed_type_is_reported(run_folder):
    _, out = run_folder
    market = pd.read_parquet(out / "market.parquet")
    renamed = market.rename(columns={"flow": "net_flow"})
    assert schema.check_table(schema.MARKET, renamed, SYMBOLS) == [
        "market.parquet: columns differ (missing ['flow'], undeclared ['net_flow'])"
    ]
    retyped = market.assign(step=market["step"].astype("float64"))
    assert schema.check_table(schema.MARKET, retyped, SYMBOLS) == [
        "market.parquet: step is float64, declared int64"
    ]


def test_an_undeclared_or_missing_json_key_is_reported():
    summary = {
        c.name: 0 for c in schema.SUMMARY.columns if "{" not in c.name and "[]" not in c.name
    }
    problems = schema.check_json(schema.SUMMARY, {**summary, "extra": 1}, SYMBOLS)
    assert "summary.json: extra is not declared" in problems
    del summary["fees"]
    assert "summary.json: fees is declared but absent" in schema.check_json(
        schema.SUMMARY, summary, SYMBOLS
    )


def test_columns_of_a_run_with_a_liquidator_vault_are_declared():
    """steps.parquet's vault columns are written only with margin.vault on: declared as such."""
    data = small_config(steps=15, traders={"count": 300, "leverage": 25.0}, margin={"vault": True})
    model = ContagionModel(build_config(data)).run()
    tables = model.tables()
    assert "vault_value" in tables["steps"].columns
    assert schema.check_table(schema.STEPS, tables["steps"], SYMBOLS) == []
    assert schema.check_table(schema.LIQUIDATIONS, tables["liquidations"], SYMBOLS) == []
    assert schema.check_json(schema.SUMMARY, json.loads(json.dumps(model.summary())), SYMBOLS) == []


def test_columns_of_a_run_with_market_makers_are_declared():
    """The makers' columns of steps.parquet and summary.json are written only with
    liquidity.model = "market_makers": declared as such, asset by asset."""
    data = small_config(steps=15, traders={"count": 300})
    data["liquidity"] = {"model": "market_makers"}
    model = ContagionModel(build_config(data)).run()
    tables = model.tables()
    assert "maker_inventory_BTC" in tables["steps"].columns
    for table in (schema.STEPS, schema.MARKET, schema.LIQUIDATIONS, schema.ACCOUNTS):
        name = table.file.removesuffix(".parquet")
        assert schema.check_table(table, tables[name], SYMBOLS) == [], name
    assert schema.check_json(schema.SUMMARY, json.loads(json.dumps(model.summary())), SYMBOLS) == []
